"""Every preset's parameter count, computed twice: by twotower (`twotower nets`, `twotower
summary --net NAME`) and by PyTorch, from tools/reference/twotower_torch.py's own
description of the preset and, for `torchvision`, from Debian's
torchvision.models.alexnet() itself; then every preset's export loads into its PyTorch
model (strict) and maps back bit for bit; and the command line refuses bad --net use.
usage: test_nets.py TWOTOWER TMPDIR"""
import os
import re
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                "tools", "reference"))
import mapping  # noqa: E402
import safetensors_np  # noqa: E402
import torchvision  # noqa: E402
import twotower_torch  # noqa: E402

PRESETS = ("alexnet2012", "alexnet2012-1gpu", "half", "merged", "alexnet2014", "torchvision",
           "fmnist")


def run(*args, expect=0):
    p = subprocess.run(list(args), capture_output=True, text=True)
    assert p.returncode == expect, (args, p.returncode, p.stdout, p.stderr)
    return p


def main():
    exe, tmp = sys.argv[1], sys.argv[2]
    os.makedirs(tmp, exist_ok=True)
    lines = run(exe, "nets").stdout.strip().splitlines()
    assert len(lines) == len(PRESETS), lines
    counts = {}
    for line, name in zip(lines, PRESETS):
        m = re.match(r"(\S+)\s+(\d) towers?\s+(\d+)x(\d+)x\d+\s+(\d+) classes\s+(\d+) parameters\s+\S",
                     line)
        assert m and m.group(1) == name, line
        counts[name] = int(m.group(6))
        torch_count = twotower_torch.param_count(twotower_torch.PRESETS[name])
        assert counts[name] == torch_count, (name, counts[name], torch_count)
        summary = run(exe, "summary", "--net", name).stdout
        assert f"total parameters: {counts[name]} " in summary, summary
        assert f"twotower net {name} " in summary, summary
    tv = sum(p.numel() for p in torchvision.models.alexnet().parameters())
    assert counts["torchvision"] == tv, (counts["torchvision"], tv)
    # the figures the sources give, held against the PyTorch models (not typed into C)
    assert counts["alexnet2012"] == 60965224 and counts["half"] == 16630440
    assert counts["fmnist"] == 46764746
    print("parameter counts: " + ", ".join(f"{k} {v}" for k, v in counts.items()))

    # every preset's export loads, strict, into its PyTorch model and maps back unchanged
    for name in PRESETS:
        path = os.path.join(tmp, f"{name}.safetensors")
        run(exe, "export", path, "--net", name, "--size", "67", "--width-div", "8",
            "--classes", "10", "--seed", "4")
        w, meta = safetensors_np.load(path)
        assert meta["net"] == name, meta
        net = twotower_torch.load_twotower_weights(path)
        back = mapping.from_torch(net.state_dict(), net.towers)
        assert set(back) == set(w), (name, sorted(set(back) ^ set(w)))
        for k in w:
            assert np.array_equal(back[k], w[k]), (name, k)
        os.remove(path)

    # usage errors: exit 2, naming the flag
    p = run(exe, "summary", "--net", "alexnet", expect=2)
    assert "--net alexnet" in p.stderr and "alexnet2012" in p.stderr, p.stderr
    p = run(exe, "summary", "--net", "fmnist", "--towers", "2", expect=2)
    assert "--towers" in p.stderr, p.stderr
    p = run(exe, "export", os.path.join(tmp, "x.safetensors"), "--net", "nope", expect=2)
    assert "--net nope" in p.stderr, p.stderr
    p = run(exe, "dump", "--out", os.path.join(tmp, "x.safetensors"), "--net", expect=2)
    assert "--net" in p.stderr, p.stderr
    run(exe, "nets", "--bogus", expect=2)
    # the switches on the command line: into the net (the summary's stages, the dump's
    # metadata, which compare.py builds its PyTorch net from), refused naming the flag
    sm = run(exe, "summary", "--net", "alexnet2012", "--pool", "2:2", "--act", "tanh",
             "--lrn", "off", "--size", "67", "--width-div", "8").stdout
    assert "switches: lrn off, pool 2:2, act tanh" in sm and "tanh pool2:2" in sm, sm
    dpath = os.path.join(tmp, "switched.safetensors")
    run(exe, "dump", "--out", dpath, "--net", "torchvision", "--act", "tanh", "--dropout",
        "0.3", "--size", "67", "--width-div", "8", "--classes", "10")
    _, dmeta = safetensors_np.load(dpath)
    assert dmeta["switch.act"] == "tanh" and float(dmeta["switch.dropout"]) == 0.3, dmeta
    spec = twotower_torch.spec_from_meta(dmeta)
    assert spec["act"] == "tanh" and spec["dropout"]["p"] == 0.3, spec
    os.remove(dpath)
    for args, flag in ((["--net", "fmnist", "--momentum", "0.5"], "--momentum"),
                       (["--pool", "3:4"], "--pool"), (["--act", "sigmoid"], "--act"),
                       (["--dropout", "1"], "--dropout"), (["--beta1", "0.8"], "--beta1"),
                       (["--size", "31", "--pool", "2:2"], "pool 2:2")):
        p = run(exe, "summary", *args, expect=2)
        assert flag in p.stderr, (args, p.stderr)
    assert "twotower nets" in run(exe, "nets", "--help").stdout
    # --towers 1 is --net half
    a = run(exe, "summary", "--towers", "1").stdout
    b = run(exe, "summary", "--net", "half").stdout
    assert a == b, (a, b)
    print("nets: counts, exports and refusals OK")


if __name__ == "__main__":
    main()
