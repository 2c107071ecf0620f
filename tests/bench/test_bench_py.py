"""tools/bench/bench.py end to end on the CPU at a tiny size: twotower bench, PyTorch eager
(and torch.compile, or the note that it was skipped), and the correctness check. The JSON
must hold every field with numbers that agree with each other; a twotower whose gradients
are 1% off must FAIL the check (exit 1); a twotower bench that fails must give exit 1.
Also `twotower bench --towers 1 --json` directly, and the --python / --batch B,B flags.
usage: test_bench_py.py TWOTOWER TMPDIR"""
import contextlib
import io
import json
import math
import os
import stat
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tools", "bench"))
sys.path.insert(0, os.path.join(ROOT, "tools", "reference"))
import bench  # noqa: E402

TINY = ["--cpu", "--size", "67", "--width-div", "8", "--batch", "4", "--classes", "10",
        "--warmup", "2", "--steps", "3", "--profile-steps", "2", "--check-batch", "2",
        "--threads", "2"]
LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")
EXCHANGE = ("conv3", "fc6", "fc7", "fc8")  # the layers that read both towers


def run_bench(argv):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = bench.main(argv)
    print(out.getvalue())
    return rc, out.getvalue()


def close(a, b, rel=1e-6):
    return abs(a - b) <= rel * max(abs(a), abs(b))


def check_twotower_json(tt, towers, batch, classes, steps, profile_steps):
    assert tt["tool"] == "twotower bench" and tt["backend"] == "cpu", tt
    c = tt["config"]
    assert (c["towers"], c["batch"], c["classes"], c["steps"], c["profile_steps"]) == \
        (towers, batch, classes, steps, profile_steps), c
    assert tt["precision"] == "fp32" and tt["tf32"] is False
    assert "data_augment_cpu" in tt["data_path"]
    layers = tt["plan"]["layers"]
    assert [L["name"] for L in layers] == list(LAYERS)
    assert sum(L["params_per_tower"] for L in layers) == tt["plan"]["params_per_tower"]
    macs = sum(L["macs_per_tower"] for L in layers)
    assert close(tt["flops_per_image"], 6 * towers * macs), (tt["flops_per_image"], macs)
    ips, ms = tt["images_per_s"], tt["ms_per_step"]
    assert math.isfinite(ips) and ips > 0
    assert close(ips * ms, 1000.0 * batch, 1e-6), (ips, ms)
    assert 0 < tt["ms_per_step_min"] <= tt["ms_per_step_median"] <= tt["ms_per_step_max"]
    assert close(tt["gflops_per_s"], tt["flops_per_image"] * ips / 1e9, 1e-6)
    # random labels over `classes`: the loss starts near ln(classes) and stays finite
    assert tt["loss_finite"] is True
    assert 0.5 * math.log(classes) < tt["loss_first"] < 3 * math.log(classes), tt["loss_first"]
    assert math.isfinite(tt["loss_last"])
    mem = tt["memory"]
    assert len(mem["arena_bytes"]) == towers
    # params, grads and momentum at least, in fp32
    assert all(a >= 12 * tt["plan"]["params_per_tower"] for a in mem["arena_bytes"]), mem
    assert mem["rss_peak_bytes"] > sum(mem["arena_bytes"]), mem
    assert mem["batch_pool_host_bytes"] >= c["batches"] * batch * c["size"] ** 2 * 3
    prof = tt["profile"]
    assert prof["steps"] == profile_steps and prof["timer"] == "wall clock"
    parts = prof["logits_xchg_ms"] + sum(prof["data_ms"]) + sum(prof["zero_grads_ms"]) + \
        sum(prof["loss_fwd_ms"]) + sum(prof["loss_bwd_ms"]) + sum(prof["sgd_ms"])
    for L in prof["layers"]:
        assert len(L["fwd_ms"]) == towers and len(L["bwd_ms"]) == towers, L
        assert all(v > 0 for v in L["fwd_ms"] + L["bwd_ms"]), L
        assert close(L["fwd_ms_total"], sum(L["fwd_ms"]), 1e-6)
        assert L["fwd_gflops_per_s"] > 0 and L["bwd_gflops_per_s"] > 0
        exchanged = towers == 2 and L["name"] in EXCHANGE
        assert (L["xchg_fwd_ms"] is not None) == exchanged, L
        assert (L["xchg_bwd_ms"] is not None) == exchanged, L
        parts += L["fwd_ms_total"] + L["bwd_ms_total"] + (L["xchg_fwd_ms"] or 0) + \
            (L["xchg_bwd_ms"] or 0)
    # a tower's regions run one after the other on its thread (the data and the exchanges
    # are booked to tower 0): each tower's parts fit in the step, and all of them do when
    # one thread runs both towers (--serial, or one tower)
    def of(key, t):  # a per-tower list (the CPU's data region has tower 0's entry only)
        return prof[key][t] if t < len(prof[key]) else 0.0
    own = [sum(of(k, t) for k in ("data_ms", "zero_grads_ms", "loss_fwd_ms", "loss_bwd_ms",
                                  "sgd_ms")) +
           sum(L["fwd_ms"][t] + L["bwd_ms"][t] for L in prof["layers"]) for t in range(towers)]
    own[0] += parts - sum(own)  # the exchanges, timed on tower 0
    step = 1.01 * prof["step_ms"] + 0.01
    assert max(own) <= step, (own, prof["step_ms"])
    assert 0.3 * prof["step_ms"] < parts, (parts, prof["step_ms"])
    assert tt["tower_threads"] == (2 if towers == 2 else 0), tt["tower_threads"]
    if tt["tower_threads"] == 0:
        assert parts <= step, (parts, prof["step_ms"])


def main():
    exe, tmp = os.path.abspath(sys.argv[1]), sys.argv[2]
    os.makedirs(tmp, exist_ok=True)

    # ---- the flags that choose the PyTorch and the batches ----
    assert bench.python_flag(["--cpu", "--python", "/x/python", "--batch", "4"]) == \
        ("/x/python", ["--cpu", "--batch", "4"])
    assert bench.python_flag(["--python=/x/python"]) == ("/x/python", [])
    assert bench.python_flag(["--cpu"]) == (None, ["--cpu"])
    a = bench.parse_args(["--cpu", "--batch", "32,128"])
    assert a.batches_list == [32, 128] and a.batch == 32, a
    assert a.precision == "fp32" and not a.tf32, a
    # --precision: --tf32 is tf32; bf16 reaches twotower's flags; both GPU only
    a = bench.parse_args(["--gpus", "0", "--tf32"])
    assert a.precision == "tf32" and a.tf32, a
    a = bench.parse_args(["--gpus", "0", "--precision", "bf16", "--conv", "cudnn"])
    assert a.precision == "bf16" and not a.tf32, a
    assert bench.place_flags(a) == ["--gpus", "0", "--conv", "cudnn", "--precision", "bf16"]
    # no --conv: twotower's own default for the precision
    a = bench.parse_args(["--gpus", "0", "--precision", "bf16"])
    assert a.conv is None and bench.place_flags(a) == ["--gpus", "0", "--precision", "bf16"], a
    for bad in (["--cpu", "--precision", "bf16"], ["--gpus", "0", "--tf32", "--precision", "bf16"]):
        p = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "bench", "bench.py"),
                            *bad], capture_output=True, text=True)
        assert p.returncode == 2 and "--precision" in p.stderr, (bad, p.returncode, p.stderr)
    p = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "bench", "bench.py"),
                        "--python", os.path.join(tmp, "no-such-python"), "--cpu"],
                       capture_output=True, text=True)
    assert p.returncode == 2 and "--python" in p.stderr, (p.returncode, p.stderr)

    # ---- the whole tool ----
    out_json = os.path.join(tmp, "bench.json")
    rc, text = run_bench(["--twotower", exe, *TINY, "--json", out_json])
    assert rc == 0, text
    with open(out_json) as f:
        res = json.load(f)
    check_twotower_json(res["twotower"], 2, 4, 10, 3, 2)
    eager = res["pytorch_eager"]
    assert eager["images_per_s"] > 0 and close(eager["images_per_s"] * eager["ms_per_step"],
                                               4000.0, 1e-6), eager
    assert math.isfinite(eager["loss_first"]) and math.isfinite(eager["loss_last"])
    assert eager["tf32_matmul"] is False and eager["tf32_cudnn"] is False
    assert eager["memory"]["rss_bytes"] > 0
    comp = res["pytorch_compile"]
    import torch
    if hasattr(torch, "compile"):
        assert "images_per_s" in comp or "torch.compile failed" in comp.get("skipped", ""), comp
    else:  # Debian's torch 1.13: skipped, and the table says why
        assert "no torch.compile" in comp["skipped"], comp
        assert "no torch.compile" in text
    assert close(res["ratios"]["twotower_over_eager"],
                 res["twotower"]["images_per_s"] / eager["images_per_s"])
    assert res["tf32"] == {"twotower": False, "pytorch_matmul": False, "pytorch_cudnn": False}
    assert res["precision"] == "fp32" and eager["precision"] == "fp32", res["precision"]
    assert res["full_size"] is False and res["peak_fp32_tflops"] is None
    c = res["correctness"]
    assert c["pass"] is True and c["gradients"] == 32 and not c["failed"], c
    for cls, w in c["worst"].items():
        assert 0 <= w["rel"] <= w["tol"], (cls, w)
    assert "PASS" in text and "images/s" in text and "TF32" in text

    # ---- a twotower whose gradients are off: the check must fail ----
    wrapper = os.path.join(tmp, "broken-twotower")
    with open(wrapper, "w") as f:
        f.write(f"""#!{sys.executable}
import os, subprocess, sys
sys.path.insert(0, {os.path.join(ROOT, "tools", "reference")!r})
import numpy as np, safetensors_np
rc = subprocess.run([{exe!r}] + sys.argv[1:]).returncode
if rc == 0 and sys.argv[1] == "dump":
    path = sys.argv[sys.argv.index("--out") + 1]
    t, meta = safetensors_np.load(path)
    g = t["grad.tower0.conv1.weight"].reshape(-1)
    g[int(np.argmax(np.abs(g)))] *= 1.01
    safetensors_np.save(path, t, meta)
if sys.argv[1] == "bench" and os.environ.get("BENCH_TEST_FAIL_BENCH"):
    rc = 1
sys.exit(rc)
""")
    os.chmod(wrapper, os.stat(wrapper).st_mode | stat.S_IXUSR)
    bad_json = os.path.join(tmp, "bad.json")
    rc, text = run_bench(["--twotower", wrapper, *TINY, "--no-compile", "--json", bad_json])
    assert rc == 1, text
    with open(bad_json) as f:
        bad = json.load(f)
    assert bad["correctness"]["pass"] is False, bad["correctness"]
    assert bad["correctness"]["failed"] == ["grad.tower0.conv1.weight"], bad["correctness"]
    assert "FAIL" in text and "grad.tower0.conv1.weight" in text

    # ---- twotower bench itself fails: exit 1, and the JSON says so ----
    os.environ["BENCH_TEST_FAIL_BENCH"] = "1"
    try:
        rc, text = run_bench(["--twotower", wrapper, *TINY, "--json", bad_json])
    finally:
        del os.environ["BENCH_TEST_FAIL_BENCH"]
    assert rc == 1, text
    with open(bad_json) as f:
        assert "exited with code 1" in json.load(f)["twotower"]["error"]

    # ---- --rounds 2: every run twice in turn, each round's ratios and their medians ----
    rounds_json = os.path.join(tmp, "rounds.json")
    rc, text = run_bench(["--twotower", exe, *TINY, "--rounds", "2", "--no-compile",
                          "--json", rounds_json])
    assert rc == 0, text
    with open(rounds_json) as f:
        two = json.load(f)
    assert len(two["rounds"]) == 2, two.keys()
    for r in two["rounds"]:
        check_twotower_json(r["twotower"], 2, 4, 10, 3, 2)
        assert r["correctness"]["pass"] is True
    m = two["medians"]["4"]
    pairs = [r["ratios"]["twotower_over_eager"] for r in two["rounds"]]
    assert m["rounds"] == 2 and close(m["twotower_over_eager"], sum(pairs) / 2), (m, pairs)
    ips = [r["twotower"]["images_per_s"] for r in two["rounds"]]
    assert close(m["twotower_images_per_s"], sum(ips) / 2), (m, ips)
    assert m["twotower_over_compile"] is None  # --no-compile
    assert "median" in text and text.count("== round ") == 2, text
    p = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "bench", "bench.py"),
                        "--twotower", exe, *TINY, "--rounds", "0"], capture_output=True,
                       text=True)
    assert p.returncode == 2 and "--rounds" in p.stderr, p.stderr

    # ---- one tower, straight from the CLI ----
    one = os.path.join(tmp, "one.json")
    p = subprocess.run([exe, "bench", "--cpu", "--towers", "1", "--size", "67", "--width-div",
                        "8", "--batch", "3", "--classes", "7", "--warmup", "1", "--steps", "2",
                        "--profile-steps", "1", "--json", one],
                       capture_output=True, text=True, env=dict(os.environ,
                                                                OPENBLAS_NUM_THREADS="2"))
    assert p.returncode == 0, p.stdout + p.stderr
    with open(one) as f:
        check_twotower_json(json.load(f), 1, 3, 7, 2, 1)
    # bad flags: exit 2 with the flag named
    p = subprocess.run([exe, "bench", "--cpu", "--size", "400"], capture_output=True, text=True)
    assert p.returncode == 2 and "--size" in p.stderr, p.stderr
    print("test_bench_py: all checks passed")


if __name__ == "__main__":
    main()
