"""compare.py must fail when twotower is wrong: a dump that agrees passes, and the same
dump with one gradient entry off by 1%, with the two towers' dropout masks swapped, or
with logits of one class moved, fails (exit 1) naming the tensor; a dump missing a tensor
is refused (exit 2). usage: test_compare.py TWOTOWER TMPDIR"""
import os
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
COMPARE = os.path.join(HERE, "..", "..", "tools", "reference", "compare.py")
sys.path.insert(0, os.path.dirname(COMPARE))
import safetensors_np  # noqa: E402


def compare(path):
    p = subprocess.run([sys.executable, COMPARE, "--threads", "2", path], capture_output=True,
                       text=True)
    return p.returncode, p.stdout + p.stderr


def main():
    exe, tmp = sys.argv[1], sys.argv[2]
    os.makedirs(tmp, exist_ok=True)
    good = os.path.join(tmp, "good.safetensors")
    subprocess.run([exe, "dump", "--out", good, "--batch", "2", "--size", "67", "--width-div",
                    "16", "--classes", "10", "--seed", "4"], check=True, capture_output=True)
    rc, out = compare(good)
    assert rc == 0, out
    t, meta = safetensors_np.load(good)

    def broken(name, change):
        b = {k: v.copy() for k, v in t.items()}
        change(b)
        path = os.path.join(tmp, f"{name}.safetensors")
        safetensors_np.save(path, b, meta)
        return compare(path)

    def nudge(b):
        g = b["grad.tower1.conv2.weight"].reshape(-1)
        i = int(np.argmax(np.abs(g)))
        g[i] *= 1.01

    rc, out = broken("nudged", nudge)
    assert rc == 1 and "grad.tower1.conv2.weight" in out.split("FAIL:")[-1], out

    def swap_masks(b):
        b["mask.tower0.fc6"], b["mask.tower1.fc6"] = t["mask.tower1.fc6"], t["mask.tower0.fc6"]

    rc, out = broken("swapped", swap_masks)
    assert rc == 1 and "FAIL" in out, out

    def shift_class(b):
        b["logits"][:, 7] += 1e-3 * np.abs(t["logits"]).max()

    rc, out = broken("logits", shift_class)
    assert rc == 1 and "logits" in out.split("FAIL:")[-1], out

    def drop(b):
        del b["grad.tower0.fc7.bias"]

    rc, out = broken("missing", drop)
    assert rc == 2 and "grad.tower0.fc7.bias" in out, out
    print("compare.py passes the good dump and fails each broken one")


if __name__ == "__main__":
    main()
