"""The `torchvision` preset is torchvision.models.alexnet: its export (224, 1000 classes)
loads with load_state_dict(..., strict=True) through mapping.to_torchvision, holds the
bytes twotower initialised, and gives twotower's evaluation logits on twotower's own
batch (a dump's logits.eval) to float32 rounding. usage: test_torchvision.py TWOTOWER TMPDIR"""
import os
import subprocess
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                "tools", "reference"))
import compare  # noqa: E402
import mapping  # noqa: E402
import safetensors_np  # noqa: E402
import torchvision  # noqa: E402


def main():
    exe, tmp = sys.argv[1], sys.argv[2]
    os.makedirs(tmp, exist_ok=True)
    wpath, dpath = os.path.join(tmp, "tv.safetensors"), os.path.join(tmp, "tv-dump.safetensors")
    try:
        for args in (["export", wpath, "--net", "torchvision", "--seed", "5"],
                     ["dump", "--out", dpath, "--net", "torchvision", "--seed", "5",
                      "--batch", "2"]):
            p = subprocess.run([exe] + args, capture_output=True, text=True)
            assert p.returncode == 0, (args, p.stdout, p.stderr)
        w, meta = safetensors_np.load(wpath)
        assert meta["net"] == "torchvision" and meta["size"] == "224", meta
        net = torchvision.models.alexnet()
        state = {k: torch.from_numpy(v) for k, v in mapping.to_torchvision(w).items()}
        net.load_state_dict(state, strict=True)
        # and back: the same bytes
        back = mapping.from_torchvision(net.state_dict())
        assert set(back) == set(w)
        for k in w:
            assert np.array_equal(back[k], w[k]), k
        d, _ = safetensors_np.load(dpath)
        for k in w:  # same seed, same init: the export's weights are the dump's
            assert np.array_equal(w[k], d[k]), k
        torch.set_num_threads(2)
        with torch.no_grad():
            logits = net.eval()(torch.from_numpy(d["x"])).double().numpy()
        _, rel, _ = compare.rel_diff(d["logits.eval"], logits)
        print(f"torchvision.models.alexnet vs twotower, evaluation logits: rel {rel:.3e}")
        assert rel <= compare.TOL["logits"], rel
        print("torchvision preset: strict load and the same logits OK")
    finally:
        for p in (wpath, dpath, dpath + ".tmp", wpath + ".tmp"):
            if os.path.exists(p):
                os.remove(p)


if __name__ == "__main__":
    main()
