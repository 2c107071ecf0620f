#!/usr/bin/python3
"""compare.py DUMP: checks twotower against PyTorch on one training step.

DUMP comes from `twotower dump` (weights, the batch, the dropout masks twotower drew,
and its logits, loss and parameter gradients). This builds the same net in PyTorch
(twotower_torch.py, loaded through mapping.py), runs forward and backward on the same
batch with the same masks, and prints for the loss, the logits and every gradient:
  max_abs = max |twotower - torch|
  rel     = max_abs / max |torch|   (per tensor: a scale-aware measure that does not blow
                                     up on entries near zero, unlike |a-b|/|b| per entry)
Exit status 1 when any rel passes its tolerance, 2 on a bad dump or usage error.

--f64 also runs PyTorch in float64 and prints both float32 results' distance to it: the
float32 rounding noise floor, which is what the tolerances are set against."""
import argparse
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mapping  # noqa: E402
import safetensors_np  # noqa: E402
import twotower_torch  # noqa: E402

# Tolerances on rel. Measured on the full net (224, batch 2, 1000 classes, CPU): loss
# 3e-8, logits 4e-7, gradients at most 1.7e-6, and PyTorch float32 sits as far from
# PyTorch float64 as twotower does (--f64), so this is float32 rounding of sums in
# different orders. 25x-60x headroom; a real mistake (an LRN window crossing the tower
# boundary) showed 2e-2 on logits-side tensors and 0.3 on conv1's gradient.
TOL = {"loss": 1e-6, "logits": 1e-5, "grad": 1e-4}


def torch_step(tensors, device, dtype):
    """Runs the PyTorch net on the dump's batch and masks. Returns (loss, logits,
    twotower-named gradient dict), all numpy float64."""
    T = mapping.count_towers(tensors)
    net = twotower_torch.net_from_tensors(tensors, "", dtype, device).train()
    masks = {}
    for layer in mapping.DROPOUT_LAYERS:
        parts = [tensors[f"mask.tower{t}.{layer}"] for t in range(T)]
        masks[layer] = torch.from_numpy(np.concatenate(parts, axis=1)).to(device, dtype)
    net.set_masks(masks["fc6"], masks["fc7"])
    x = torch.from_numpy(tensors["x"]).to(device, dtype)
    labels = torch.from_numpy(tensors["labels"].astype(np.int64)).to(device)
    logits = net(x)
    loss = F.cross_entropy(logits, labels)
    loss.backward()
    grads = mapping.from_torch({n: p.grad for n, p in net.named_parameters()}, T, "grad.")
    return (float(loss.item()), logits.detach().cpu().double().numpy(),
            {k: v.astype(np.float64) for k, v in grads.items()})


def rel_diff(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shape {a.shape} vs {b.shape}")
    d = float(np.max(np.abs(a - b))) if a.size else 0.0
    scale = float(np.max(np.abs(b))) if b.size else 0.0
    rel = d / scale if scale > 0 else (0.0 if d == 0 else float("inf"))
    return d, rel, scale


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dump", help="file written by `twotower dump`")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (PyTorch's device)")
    ap.add_argument("--f64", action="store_true",
                    help="also compare both float32 results with PyTorch in float64")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    for k, v in TOL.items():
        ap.add_argument(f"--tol-{k}", type=float, default=v, help=f"max rel for {k} ({v})")
    args = ap.parse_args(argv)
    tol = {k: getattr(args, f"tol_{k}") for k in TOL}

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda"):
        if not torch.cuda.is_available():
            print(f"compare.py: --device {args.device} but this PyTorch sees no CUDA device",
                  file=sys.stderr)
            return 2
        # TF32 would round GEMM/conv inputs to 10 mantissa bits: ~1e-3 differences that
        # are PyTorch's choice, not a twotower error
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cudnn.deterministic = True

    try:
        tensors, meta = safetensors_np.load(args.dump)
        T = mapping.count_towers(tensors)
        need = ["x", "labels", "logits", "loss"] + [
            f"mask.tower{t}.{l}" for t in range(T) for l in mapping.DROPOUT_LAYERS] + [
            mapping.tt_name(t, l, w, "grad.") for t in range(T) for l in mapping.LAYER_NAMES
            for w in ("weight", "bias")]
        missing = [n for n in need if n not in tensors]
        if missing:
            raise ValueError(f"missing tensors {missing[:4]}")
    except (OSError, ValueError, KeyError) as e:
        print(f"compare.py: {args.dump}: {e}", file=sys.stderr)
        return 2

    print(f"dump {args.dump}: " + ", ".join(f"{k}={v}" for k, v in sorted(meta.items())))
    loss, logits, grads = torch_step(tensors, args.device, torch.float32)
    ref64 = torch_step(tensors, args.device, torch.float64) if args.f64 else None

    rows = [("loss", "loss", np.asarray(tensors["loss"]).reshape(-1)[:1], np.array([loss]), 0),
            ("logits", "logits", tensors["logits"], logits, 1)]
    rows += [(n, "grad", tensors[n], grads[n], 2) for n in sorted(grads)]
    width = max(len(r[0]) for r in rows)
    head = f"{'tensor':<{width}}  {'max|torch|':>10}  {'max_abs':>10}  {'rel':>10}  {'tol':>7}"
    if ref64:
        head += f"  {'tt-vs-f64':>10}  {'pt-vs-f64':>10}"
    print(head)
    failed = []
    for name, cls, a, b, which in rows:
        d, rel, scale = rel_diff(a, b)
        ok = rel <= tol[cls]
        line = f"{name:<{width}}  {scale:10.3e}  {d:10.3e}  {rel:10.3e}  {tol[cls]:7.0e}"
        if ref64:
            r64 = [np.array([ref64[0]]), ref64[1], ref64[2].get(name)][which]
            line += f"  {rel_diff(a, r64)[1]:10.3e}  {rel_diff(b, r64)[1]:10.3e}"
        print(line + ("" if ok else "  FAIL"))
        if not ok:
            failed.append(name)
    worst = {c: max(rel_diff(a, b)[1] for _, cc, a, b, _ in rows if cc == c) for c in TOL}
    print("worst rel: " + ", ".join(f"{c} {worst[c]:.3e}" for c in TOL))
    if failed:
        print(f"FAIL: {len(failed)} tensor(s) past tolerance: {', '.join(failed[:8])}")
        return 1
    print(f"OK: loss, logits and {len(grads)} gradients agree with PyTorch "
          f"({args.device}, float32)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
