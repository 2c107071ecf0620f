"""tools/experiments at --scale tiny: every script runs both arms to the end and leaves
results.json (every arm and seed, with final errors, steps and wall time), results.md (the
table beside the paper's number) and figure.png; run again it skips the finished arms
(their run folders untouched), and an arm stopped by a signal in the middle of its run is
continued from its checkpoint, not started over.

usage: test_experiments.py TWOTOWER [CLAIM...]   (default: every claim)"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXP = os.path.join(ROOT, "tools", "experiments")
FMNIST = "/usr/share/datasets/fashion-mnist"
failed = []


def check(ok, what):
    print(("ok: " if ok else "FAIL: ") + what, flush=True)
    if not ok:
        failed.append(what)
    return ok


DATA = None  # a 256-image prep of Fashion-MNIST: opened in milliseconds, not seconds


def script(name, out, tt, *extra):
    return [os.path.join(EXP, name + ".sh"), "--scale", "tiny", "--seeds", "1", "--out", out,
            "--twotower", tt, "--data", DATA, *extra]


def arms_of(name):
    sys.path.insert(0, EXP)
    import experiment  # noqa: E402  (the claims' table, as the scripts use it)
    return [a for a, _ in experiment.CLAIMS[name]["arms"]]


def outputs_parse(name, out):
    arms = arms_of(name)
    with open(os.path.join(out, "results.json")) as f:
        res = json.load(f)
    check(res["claim"] == name and res["scale"] == "tiny", f"{name}: results.json names it")
    runs = {r["arm"]: r for r in res["runs"]}
    check(sorted(runs) == sorted(arms), f"{name}: results.json has the arms {arms}")
    for a, r in runs.items():
        check(0 <= r["final_top1"] <= 1 and 0 <= r["final_top5"] <= 1 and r["steps"] > 0
              and r["train_seconds"] > 0, f"{name}/{a}: errors, steps and time are numbers")
        check(os.path.isfile(os.path.join(out, r["run"], "metrics.jsonl")),
              f"{name}/{a}: its run folder holds metrics.jsonl")
    md = open(os.path.join(out, "results.md")).read()
    check("**Paper:**" in md and "| arm |" in md and all(f"| {a} |" in md for a in arms),
          f"{name}: results.md has the table and the paper's claim")
    if shutil.which("gnuplot"):
        with open(os.path.join(out, "figure.png"), "rb") as f:
            check(f.read(8) == b"\x89PNG\r\n\x1a\n", f"{name}: figure.png is a PNG")
    return res


def main():
    tt = os.path.abspath(sys.argv[1])
    names = sys.argv[2:] or ["lrn", "pool", "towers", "relu_tanh", "dropout", "pca", "views"]
    if not os.path.isfile(os.path.join(FMNIST, "train-images-idx3-ubyte.gz")):
        print(f"SKIP: no Fashion-MNIST at {FMNIST}")
        return 77
    tmp = tempfile.mkdtemp(prefix="tt-exp-")
    global DATA
    DATA = os.path.join(tmp, "data")
    try:
        subprocess.run([tt, "prep", FMNIST, DATA, "--limit", "256", "--quiet"], check=True)
        for name in names:
            out = os.path.join(tmp, name)
            t0 = time.monotonic()
            p = subprocess.run(script(name, out, tt), capture_output=True, text=True)
            check(p.returncode == 0, f"{name}.sh --scale tiny exits 0 ({time.monotonic() - t0:.1f} s)"
                  + ("" if p.returncode == 0 else ": " + (p.stdout + p.stderr)[-1500:]))
            if p.returncode != 0:
                continue
            check("scale tiny: size=67" in p.stdout, f"{name}: prints the settings at the start")
            outputs_parse(name, out)

        # run again: every arm finished earlier is skipped, its files untouched
        name = names[0]
        out = os.path.join(tmp, name)
        before = {a: os.stat(os.path.join(out, f"{a}-s1", "metrics.jsonl")).st_mtime_ns
                  for a in arms_of(name)}
        p = subprocess.run(script(name, out, tt), capture_output=True, text=True)
        check(p.returncode == 0 and p.stdout.count("finished earlier, skipped") == len(before),
              f"{name}: a second run skips the {len(before)} finished arms")
        after = {a: os.stat(os.path.join(out, f"{a}-s1", "metrics.jsonl")).st_mtime_ns
                 for a in before}
        check(before == after, f"{name}: the finished arms' metrics are untouched")

        # an arm interrupted in its run: SIGINT to the script's process group once the
        # trainer has written a checkpoint; run again, it continues that run
        out = os.path.join(tmp, "interrupted")
        cmd = script(name, out, tt, "--ckpt-every", "2")
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             start_new_session=True)
        first = os.path.join(out, f"{arms_of(name)[0]}-s1", "ckpt")
        t0 = time.monotonic()
        while time.monotonic() - t0 < 120 and p.poll() is None:
            if os.path.isdir(first) and any(n.endswith(".ttc") for n in os.listdir(first)):
                break
            time.sleep(0.02)
        os.killpg(p.pid, signal.SIGINT)
        log1 = p.communicate(timeout=120)[0]
        check(p.returncode != 0, f"{name}: the interrupted script exits non-zero "
              f"(exit {p.returncode})")
        p = subprocess.run(cmd, capture_output=True, text=True)
        log2 = p.stdout + p.stderr
        check(p.returncode == 0, f"{name}: run again after the interrupt, it finishes"
              + ("" if p.returncode == 0 else ": " + log2[-1500:]))
        check("continuing the interrupted run" in log2,
              f"{name}: the interrupted arm is continued from its checkpoint, not restarted"
              + ("" if "continuing" in log2 else ": " + log1[-800:] + log2[-800:]))
        if p.returncode == 0:
            outputs_parse(name, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{len(failed)} failed" if failed else "all passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
