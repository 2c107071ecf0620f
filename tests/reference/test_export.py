"""`twotower export` into PyTorch: the exported weights are the model's (the same seed's
dump has the same bytes), load_twotower_weights builds the right net, and the mapping
goes both ways without changing a bit. usage: test_export.py TWOTOWER TMPDIR"""
import os
import subprocess
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                "tools", "reference"))
import mapping  # noqa: E402
import safetensors_np  # noqa: E402
import twotower_torch  # noqa: E402


def run(*args, expect=0):
    p = subprocess.run(list(args), capture_output=True, text=True)
    assert p.returncode == expect, (args, p.returncode, p.stdout, p.stderr)
    return p


def main():
    exe, tmp = sys.argv[1], sys.argv[2]
    os.makedirs(tmp, exist_ok=True)
    for towers in (2, 1):
        small = ["--size", "67", "--width-div", "16", "--classes", "10", "--seed", "3",
                 "--towers", str(towers)]
        wfile = os.path.join(tmp, f"w{towers}.safetensors")
        dfile = os.path.join(tmp, f"d{towers}.safetensors")
        run(exe, "export", wfile, *small)
        run(exe, "dump", "--out", dfile, "--batch", "1", *small)
        w, meta = safetensors_np.load(wfile)
        d, _ = safetensors_np.load(dfile)
        assert meta["format"] == "twotower-weights" and meta["towers"] == str(towers), meta
        assert mapping.count_towers(w) == towers
        assert len(w) == towers * 16, sorted(w)
        for name, a in w.items():  # same seed, same init, same bytes
            assert a.dtype == np.float32 and np.array_equal(a, d[name]), name
        # conv weights as PyTorch lays them out: (out, in, k, k)
        assert w["tower0.conv1.weight"].shape == (3, 3, 11, 11)
        assert w["tower0.fc8.weight"].shape[0] == 10 // towers

        try:  # the safetensors package itself, where it is installed (not in Debian 12)
            from safetensors.numpy import load_file
        except ImportError:
            load_file = None
        if load_file is not None:
            official = load_file(wfile)
            assert set(official) == set(w)
            for name in w:
                assert np.array_equal(official[name], w[name]), name

        net = twotower_torch.load_twotower_weights(wfile)
        assert not net.training and net.towers == towers and net.classes == 10
        assert net.conv2.groups == towers and net.conv3.groups == 1
        back = mapping.from_torch(net.state_dict(), towers)
        assert set(back) == set(w)
        for name in w:
            assert np.array_equal(back[name], w[name]), name
        # PyTorch rows: tower 1's fc8 rows are classes 5..9
        if towers == 2:
            assert np.array_equal(net.fc8.weight[5:].detach().numpy(), w["tower1.fc8.weight"])
        out = net(torch.from_numpy(d["x"]))
        assert out.shape == (1, 10) and torch.isfinite(out).all()
        again = os.path.join(tmp, f"again{towers}.safetensors")
        twotower_torch.save_twotower_weights(net, again)
        w2, _ = safetensors_np.load(again)
        for name in w:
            assert np.array_equal(w2[name], w[name]), name

    # usage errors are exit code 2 and name the flag
    p = run(exe, "export", os.path.join(tmp, "x.safetensors"), "--towers", "3", expect=2)
    assert "--towers" in p.stderr, p.stderr
    p = run(exe, "dump", "--out", os.path.join(tmp, "x.safetensors"), "--bogus", expect=2)
    assert "--bogus" in p.stderr, p.stderr
    p = run(exe, "export", expect=2)
    # a folder as OUT (e.g. `export RUN` without OUT) is refused before anything is written
    p = run(exe, "export", tmp, expect=2)
    assert "is a folder" in p.stderr, p.stderr
    print("export -> PyTorch round trip OK")


if __name__ == "__main__":
    main()
