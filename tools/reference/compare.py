#!/usr/bin/python3
"""compare.py DUMP...: checks twotower against PyTorch on one training step per dump.

DUMP comes from `twotower dump` (weights, the batch, the dropout masks twotower drew,
and its logits, loss and parameter gradients; the net's preset and switches in the
metadata). This builds the same net in PyTorch from its own description of the preset
(twotower_torch.py, loaded through mapping.py), runs forward and backward on the same
batch with the same masks, and prints for the loss, the logits (training, and an
evaluation forward's) and every gradient:
  max_abs = max |twotower - torch|
  rel     = max_abs / max |torch|   (per tensor: a scale-aware measure that does not blow
                                     up on entries near zero, unlike |a-b|/|b| per entry)
When the dump also holds an optimizer update (update.towerT.LAYER.*: the parameters after
two Adam steps, on the dump's own gradients and then on -0.5 times them), torch.optim.Adam
takes the same two steps from the same parameters with the same gradients, and the change
of every parameter tensor is compared the same way.
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
# "update": the change two Adam steps make to each parameter tensor, rel to its largest
# change, after taking off what storing w in float32 costs each side (two ulps of |w|,
# which next to an lr-sized change is up to 2e-4 for the biases of 1); what is left is
# measured below 1e-5; a 1% error in lr is 1e-2, a wrong beta, bias correction or eps
# 3e-4 to 1.
TOL = {"loss": 1e-6, "logits": 1e-5, "grad": 1e-4, "update": 1e-4}


def torch_step(tensors, device, dtype, meta=None, eval_logits=False):
    """Runs the PyTorch net on the dump's batch and masks. Returns (loss, logits,
    twotower-named gradient dict), all numpy float64; with eval_logits also the logits of
    an evaluation forward (else None) as a fourth."""
    T = mapping.count_towers(tensors)
    net = twotower_torch.net_from_tensors(tensors, "", dtype, device, meta)
    x = torch.from_numpy(tensors["x"]).to(device, dtype)
    ev = None
    if eval_logits:
        with torch.no_grad():
            ev = net.eval()(x).double().cpu().numpy()
    net.train()
    want = set(net.drops.keys()) if hasattr(net, "drops") else {"fc6", "fc7"}
    have = set(mapping.mask_layers(tensors))
    if want != have:
        raise ValueError(f"the dump's dropout masks are after {sorted(have)}, the PyTorch "
                         f"net drops after {sorted(want)}")
    masks = {l: torch.from_numpy(mapping.mask_for(tensors, l, T)).to(device, dtype)
             for l in have}
    twotower_torch.AlexNetRef.set_masks(net, masks)
    labels = torch.from_numpy(tensors["labels"].astype(np.int64)).to(device)
    logits = net(x)
    loss = F.cross_entropy(logits, labels)
    loss.backward()
    grads = mapping.from_torch({n: p.grad for n, p in net.named_parameters()}, T, "grad.")
    out = (float(loss.item()), logits.detach().cpu().double().numpy(),
           {k: v.astype(np.float64) for k, v in grads.items()})
    return out + (ev,) if eval_logits else out


def torch_adam_update(tensors, meta):
    """twotower's update tensors against torch.optim.Adam taking the same two steps from
    the dump's parameters with the dump's own gradients g, then -0.5 g (so only the
    optimizer is under test). Returns {update.name: (twotower's change of the parameters,
    torch's)}, float64."""
    T = mapping.count_towers(tensors)
    params = {k: torch.from_numpy(v.astype(np.float32).copy()).requires_grad_()
              for k, v in mapping.to_torch(tensors).items()}
    grads = mapping.to_torch(tensors, "grad.")
    for k, p in params.items():
        p.grad = torch.from_numpy(grads[k].astype(np.float32).copy())
    # twotower decays the weights only (torch's L2 term, g += wd w): two groups
    wd = float(meta.get("update.weight_decay", "0"))
    groups = [{"params": [p for k, p in params.items() if k.endswith(".weight")],
               "weight_decay": wd},
              {"params": [p for k, p in params.items() if k.endswith(".bias")],
               "weight_decay": 0.0}]
    before = {k: p.detach().double().numpy().copy() for k, p in params.items()}
    opt = torch.optim.Adam(groups, lr=float(meta["update.lr"]),
                           betas=(float(meta["update.beta1"]), float(meta["update.beta2"])),
                           eps=float(meta["update.eps"]), foreach=False)
    opt.step()
    with torch.no_grad():
        for p in params.values():
            p.grad.mul_(-0.5)
    opt.step()
    ours = mapping.to_torch(tensors, "update.")
    out = {}
    for k in params:
        mine = ours[k].astype(np.float64) - before[k]
        theirs = params[k].detach().double().numpy() - before[k]
        # the rounding of w itself: two float32 ulps of the larger |w| (before or after)
        big = np.maximum(np.abs(before[k]), np.abs(ours[k].astype(np.float64)))
        floor = 2.0 * np.spacing(big.astype(np.float32)).astype(np.float64)
        d = mine - theirs
        out["update." + k] = (theirs + np.sign(d) * np.maximum(np.abs(d) - floor, 0.0), theirs)
    return out


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
    ap.add_argument("dumps", nargs="+", metavar="dump", help="files written by `twotower dump`")
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

    status = 0
    for path in args.dumps:
        status = max(status, check_dump(path, args, tol))
    return status


def check_dump(path, args, tol):
    try:
        tensors, meta = safetensors_np.load(path)
        T = mapping.count_towers(tensors)
        layers = mapping.layer_names(tensors)
        need = ["x", "labels", "logits", "loss"] + [
            mapping.tt_name(t, l, w, "grad.") for t in range(T) for l in layers
            for w in ("weight", "bias")]
        missing = [n for n in need if n not in tensors]
        if missing:
            raise ValueError(f"missing tensors {missing[:4]}")
        has_eval = "logits.eval" in tensors
        loss, logits, grads, ev = torch_step(tensors, args.device, torch.float32, meta, True)
        ref64 = torch_step(tensors, args.device, torch.float64, meta, True) if args.f64 else None
        updates = torch_adam_update(tensors, meta) if meta.get("update") == "adam" else {}
    except (OSError, ValueError, KeyError) as e:
        print(f"compare.py: {path}: {e}", file=sys.stderr)
        return 2

    print(f"dump {path}: " + ", ".join(f"{k}={v}" for k, v in sorted(meta.items())))
    rows = [("loss", "loss", np.asarray(tensors["loss"]).reshape(-1)[:1], np.array([loss]), 0),
            ("logits", "logits", tensors["logits"], logits, 1)]
    if has_eval:
        rows.append(("logits.eval", "logits", tensors["logits.eval"], ev, 3))
    rows += [(n, "grad", tensors[n], grads[n], 2) for n in sorted(grads)]
    rows += [(n, "update", a, b, -1) for n, (a, b) in sorted(updates.items())]
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
        if ref64 and which >= 0:
            r64 = [np.array([ref64[0]]), ref64[1], ref64[2].get(name), ref64[3]][which]
            line += f"  {rel_diff(a, r64)[1]:10.3e}  {rel_diff(b, r64)[1]:10.3e}"
        print(line + ("" if ok else "  FAIL"))
        if not ok:
            failed.append(name)
    worst = {c: max((rel_diff(a, b)[1] for _, cc, a, b, _ in rows if cc == c), default=0.0)
             for c in TOL}
    print("worst rel: " + ", ".join(f"{c} {worst[c]:.3e}" for c in TOL))
    if failed:
        print(f"FAIL: {len(failed)} tensor(s) past tolerance: {', '.join(failed[:8])}")
        return 1
    print(f"OK: loss, logits and {len(grads)} gradients"
          f"{f' and {len(updates)} Adam updates' if updates else ''} agree with PyTorch "
          f"({args.device}, float32; net {meta.get('net', '?')})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
