"""tools/experiments at --scale tiny: every script runs both arms to the end and leaves
results.json (every arm and seed, with final errors, steps and wall time), results.md (the
table beside the paper's number) and figure.png; run again it skips the finished arms
(their run folders untouched), and an arm stopped by a signal in the middle of its run is
continued from its checkpoint, not started over. relu_tanh's results name its training-error
threshold and the rule it was chosen by, and an arm that never reaches it is reported as a
bound ("> N epochs"), not as NaN; re-summarised with another --threshold, nothing retrains.

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


def experiment_module():
    sys.path.insert(0, EXP)
    import experiment  # noqa: E402
    return experiment


def threshold_units():
    """speed_comparison and threshold_summary on made-up runs: both arms reach it, only the
    fast one does (a lower bound), neither does (no ratio); done_epochs of an old marker."""
    ex = experiment_module()
    run = lambda e, trained=6.0: dict(epochs_to_threshold=e, threshold_reached=e is not None,
                                      epochs_trained=trained)
    a = ex.threshold_summary([run(1.0), run(1.5)])
    b = ex.threshold_summary([run(4.0), run(5.0)])
    sp = ex.speed_comparison("relu", "tanh", a, b, 0.6, 6.0)
    check(a["bound"] is None and abs(a["mean"] - 1.25) < 1e-9 and sp["kind"] == "exact"
          and abs(sp["ratio"] - 3.6) < 1e-9 and "3.60x" in sp["text"],
          "threshold: both arms reach it: the ratio of the mean epochs, " + sp["text"])
    b = ex.threshold_summary([run(4.0), run(None)])
    sp = ex.speed_comparison("relu", "tanh", a, b, 0.6, 6.0)
    check(b["bound"] == "at least" and b["sd"] is None and b["reached"] == 1
          and sp["kind"] == "lower bound" and abs(sp["ratio"] - 4.0) < 1e-9
          and "> 5.00 (1 of 2 seeds reached it)" in sp["text"] and "more than 4.00x" in sp["text"]
          and "nan" not in sp["text"].lower(),
          "threshold: the slow arm short of it in a seed: '> N epochs' and a lower bound, "
          + sp["text"])
    sp = ex.speed_comparison("relu", "tanh", ex.threshold_summary([run(None), run(None)]),
                             ex.threshold_summary([run(None), run(None)]), 0.6)
    check(sp["ratio"] is None and sp["kind"] is None and "> 6.00" in sp["text"]
          and "no ratio" in sp["text"], "threshold: neither arm reaches it: no ratio, "
          + sp["text"])
    tmp = tempfile.mkdtemp(prefix="tt-exp-unit-")
    try:
        r = os.path.join(tmp, "a-s1")
        os.makedirs(r)
        with open(os.path.join(r, "run.json"), "w") as f:
            json.dump({"epochs": 2}, f)
        with open(r + ".done", "w") as f:
            json.dump({"wall_seconds_last_sitting": 1.0}, f)
        old = ex.done_epochs(r, r + ".done")
        with open(r + ".done", "w") as f:
            json.dump({"wall_seconds_last_sitting": 1.0, "epochs": 6}, f)
        check(old == 2 and ex.done_epochs(r, r + ".done") == 6,
              "a finished run's epochs: from its marker, else from run.json")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def relu_tanh_threshold(out, tt):
    """The threshold in the results at tiny's own value, then re-summarised at 0 (never
    reached: bounds) and at 1 (reached at the first log line: a ratio), without retraining."""
    ex = experiment_module()
    own = ex.CLAIMS["relu_tanh"]["per_scale"]["tiny"]["threshold"]
    res = json.load(open(os.path.join(out, "results.json")))
    md = open(os.path.join(out, "results.md")).read()
    check(res["threshold"]["value"] == own and res["settings"]["threshold"] == own
          and len(res["threshold"]["rule"]) > 20 and res["threshold"]["measure"],
          f"relu_tanh: results.json holds the threshold ({own}) and its rule")
    check(f"**Threshold:** {100 * own:g}% training top-1 error" in md
          and res["threshold"]["rule"] in md and f"epochs to {100 * own:g}% training error" in md,
          "relu_tanh: results.md states the threshold, its rule and the epochs to it")
    for thr in ("0", "1"):
        p = subprocess.run(script("relu_tanh", out, tt, "--threshold", thr),
                           capture_output=True, text=True)
        if not check(p.returncode == 0 and p.stdout.count("finished earlier, skipped") == 2,
                     f"relu_tanh --threshold {thr}: re-summarised, both arms skipped"
                     + ("" if p.returncode == 0 else ": " + (p.stdout + p.stderr)[-1500:])):
            continue
        with open(os.path.join(out, "results.json")) as f:
            text = f.read()
        res = json.loads(text)
        md = open(os.path.join(out, "results.md")).read()
        sm = [res["summary"][a]["epochs_to_threshold"] for a in ("relu", "tanh")]
        check(res["threshold"]["value"] == float(thr) and "--threshold" in res["threshold"]["rule"]
              and "given with --threshold" in md, f"relu_tanh --threshold {thr}: the results "
              "say the threshold was given")
        speed = [l for l in md.splitlines() if l.startswith("- epochs to ")]
        if thr == "0":
            check(all(not r["threshold_reached"] and r["epochs_to_threshold"] is None
                      for r in res["runs"]) and all(s["bound"] == "at least" for s in sm)
                  and res["speed"]["ratio"] is None,
                  "relu_tanh: a threshold never reached is a bound in results.json (null "
                  "epochs, bound 'at least', no ratio)")
            check(len(speed) == 1 and "relu > 1.00 (0 of 1 seeds reached it)" in speed[0]
                  and "nan" not in speed[0].lower() and "not reached in 1.00 epochs" in md,
                  "relu_tanh: a threshold never reached reads '> N epochs' in results.md: "
                  + (speed[0] if speed else "no line"))
        else:
            check(all(r["threshold_reached"] for r in res["runs"])
                  and res["speed"]["kind"] == "exact" and res["speed"]["ratio"] > 0
                  and len(speed) == 1 and "x as many epochs" in speed[0],
                  "relu_tanh --threshold 1: reached by both, a ratio: "
                  + (speed[0] if speed else "no line"))
        check("NaN" not in json.dumps(res["threshold"]) + json.dumps(res["speed"]),
              f"relu_tanh --threshold {thr}: no NaN in the threshold's results")


def main():
    tt = os.path.abspath(sys.argv[1])
    names = sys.argv[2:] or ["lrn", "pool", "towers", "relu_tanh", "dropout", "pca", "views"]
    if not os.path.isfile(os.path.join(FMNIST, "train-images-idx3-ubyte.gz")):
        print(f"SKIP: no Fashion-MNIST at {FMNIST}")
        return 77
    threshold_units()
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
            if name == "relu_tanh":
                relu_tanh_threshold(out, tt)

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
        with open(os.path.join(out, "results.json")) as f:
            check(json.load(f).get("trained_this_sitting") == [],
                  f"{name}: results.json says the second run trained nothing")

        # an arm interrupted in its run: SIGINT to the script's process group once the
        # trainer has written a checkpoint; run again, it continues that run. The arm's
        # next checkpoint write comes tens of ms after its first, so each write is held for
        # a second (the trainer's fault-injection hook): the SIGINT lands while the arm is
        # still running on any machine, not after it has finished
        out = os.path.join(tmp, "interrupted")
        cmd = script(name, out, tt, "--ckpt-every", "2")
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             start_new_session=True,
                             env=dict(os.environ, TWOTOWER_DEBUG_CKPT_PAUSE_MS="1000"))
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
