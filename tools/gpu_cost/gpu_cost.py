#!/usr/bin/python3
"""gpu_cost: a static cost report of the CUDA backend that needs no GPU (docs/BENCH.md,
"Predicted"). Builds the project's .cu files for sm_90 with the flags meson uses (read from
the build's compile_commands.json), disassembles them (nvdisasm; PTX when it is absent),
counts the instructions per element of every kernel (count.py says how), and turns one
batch-128 training step of the default net, both towers on one GPU (model.py), into a
predicted time on an H100 from stated peaks.

  tools/gpu_cost/gpu_cost.py [--build DIR] [--quick] [--ptx] [--fetch-tools]
                             [--explain KERNEL] [--json FILE] [--measured BENCH.json]
                             [--check-summary TWOTOWER]
                             [--check-ptx] [--check-lineinfo] [--predicted JSON]

--quick: no download (PTX when no disassembler is found), the report only; what CI runs.
--fetch-tools: pip-download nvdisasm and cuobjdump (nvidia-cuda-nvdisasm,
  nvidia-cuda-cuobjdump) into the tool cache ($TWOTOWER_CUDA_TOOLS, default
  ~/.cache/twotower/cuda-tools) when no nvdisasm is found.
--measured: twotower bench --json output: its per-layer times beside the predicted ones;
  with --predicted GPU_COST_JSON (a saved --json), that prediction is compared and nothing
  is compiled (what gpu_check.sh does on a machine without nvcc).
--check-summary: compare the shapes computed here with `TWOTOWER summary`'s table; exit 1
  on a difference. --check-ptx: every CUDA object embeds PTX (meson's flags; cuobjdump
  --list-ptx when found). --check-lineinfo: -lineinfo changes no instruction.
Exit status: 0, 1 when a check failed, 2 for bad arguments, 77 when nvcc or a CUDA build
is missing (the meson test's skip)."""

import argparse
import glob
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import count  # noqa: E402
import model  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(HERE))
TARGET_IMAGES_PER_S = 35000.0
# cuDNN becomes a precision's default where its calls could run at under this fraction of
# their bound and still beat GEMM in every conv layer (conv_paths)
BREAK_EVEN = 0.5
# kernels with one block per tile (no grid-stride loop, loops over the tile's elements):
# their instructions per element are reported from the launch's total
TILED = ("lrn_maxpool_forward_kernel", "lrn_maxpool_backward_kernel", "lrn_maxpool_backward_g_kernel")


def cache_dir():
    return os.environ.get("TWOTOWER_CUDA_TOOLS") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "twotower",
        "cuda-tools")


def find_tool(name):
    env = os.environ.get(name.upper())
    cands = [env] if env else []
    cands += [shutil.which(name), os.path.join("/usr/local/cuda/bin", name)]
    cands += sorted(glob.glob(os.path.join(cache_dir(), "nvidia", "*", "bin", name)))
    cands += sorted(glob.glob(os.path.join(sys.prefix, "lib", "python3*", "site-packages",
                                           "nvidia", "*", "bin", name)))
    for c in cands:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    return None


def fetch_tools():
    """pip download the disassembler wheels and unpack them into the cache (no install)."""
    import zipfile
    dest = cache_dir()
    os.makedirs(dest, exist_ok=True)
    dl = tempfile.mkdtemp()
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-d", dl,
           "nvidia-cuda-nvdisasm", "nvidia-cuda-cuobjdump"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        print(f"gpu_cost: pip download failed: {r.stderr.strip().splitlines()[-1:]}",
              file=sys.stderr)
        return False
    for whl in glob.glob(os.path.join(dl, "*.whl")):
        with zipfile.ZipFile(whl) as z:
            for m in z.namelist():
                if "/bin/" in m:
                    z.extract(m, dest)
                    os.chmod(os.path.join(dest, m), 0o755)
    shutil.rmtree(dl, ignore_errors=True)
    return find_tool("nvdisasm") is not None


def cuda_commands(build):
    """(directory, argv, source) of every .cu file of the build, as meson compiles it."""
    path = os.path.join(build, "compile_commands.json")
    if not os.path.isfile(path):
        return None
    out = []
    for e in json.load(open(path)):
        if not e["file"].endswith(".cu"):
            continue
        argv = e.get("arguments") or shlex.split(e["command"])
        d = e["directory"]
        if not os.path.isdir(d):  # a build made elsewhere (gpu_check's carry): its
            d = os.path.join(ROOT, "build-gpu-cost")  # paths are relative to ROOT/build*
            os.makedirs(d, exist_ok=True)
        out.append((d, argv, e["file"]))
    return out


def device_argv(argv, src, out, ptx):
    """meson's nvcc command for one file, for sm_90 only, to a cubin (or PTX), with line
    information (which changes no instruction: checked by the test)."""
    keep, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in ("-o", "-gencode", "--generate-code", "-arch", "--gpu-architecture", "-MF",
                 "-MQ", "-MT"):
            skip = True
            continue
        if a == "-c" or a == src or a.startswith(("-gencode=", "--generate-code=", "-arch=",
                                                   "--gpu-architecture=", "-MD", "-MMD")):
            continue
        keep.append(a)
    mode = ["-ptx", "-arch=compute_90"] if ptx else ["-cubin", "-arch=sm_90"]
    return keep + mode + ["-lineinfo", "-o", out, src]


def build_and_count(build, use_ptx, nvdisasm, work):
    cmds = cuda_commands(build)
    kernels, files = {}, []
    for d, argv, src in cmds:
        base = os.path.basename(src)
        out = os.path.join(work, base + (".ptx" if use_ptx else ".cubin"))
        r = subprocess.run(device_argv(argv, src, out, use_ptx), cwd=d, capture_output=True,
                           text=True)
        if r.returncode != 0:
            sys.exit(f"gpu_cost: nvcc failed on {base}:\n{r.stderr[-2000:]}")
        if use_ptx:
            text = open(out).read()
        else:
            # -gi: each position with the call sites it was inlined at (count.py's chains)
            r = subprocess.run([nvdisasm, "-c", "-gi", out], capture_output=True, text=True)
            if r.returncode != 0:
                sys.exit(f"gpu_cost: nvdisasm failed on {base}: {r.stderr.strip()}")
            text = r.stdout
        ks = count.count_text(text, sass=not use_ptx)
        for name, k in ks.items():
            k.file = base
            kernels[name] = k
        files.append(base)
    return kernels, files


# ---- the report -----------------------------------------------------------------------

def fmt_ms(s):
    return f"{s * 1e3:8.3f}"


def predict(kernels, ops, dev, precision):
    """Per-op (seconds, bound, parts, cost) and the cost per kernel name."""
    cache = {}

    def kcost(op):
        k = kernels.get(op.name)
        if k is None:
            return None
        key = (op.name, tuple(tuple(t) for t in op.trips))
        if key not in cache:
            c = [count.element_cost(k, op.trips, ROOT, m) for m in (0, 1, 2)]
            cache[key] = c
        (per, pro, unk), (per64, _, _), (xper, xpro, _) = cache[key]
        warps = op.threads // 32
        if k.element_loops(ROOT):
            it = math.ceil(op.n / 32)
            return (it * per + warps * pro, pro + per * math.ceil(op.n / op.threads),
                    it * xper + warps * xpro)
        return warps * pro, pro, warps * xpro

    res = []
    for op in ops:
        t, bound, parts = model.op_time(op, dev, precision, kcost)
        res.append((op, t, bound, parts))
    return res, cache


def report(kernels, files, src_kind, tool, dev, batch, measured, out):
    P, ops = model.step_ops(batch=batch)
    # each precision's own operations (fp32 and tf32 share them; bf16 has its casts and
    # 2-byte operands)
    results = {p: predict(kernels, model.step_ops(batch=batch, precision=p)[1], dev, p)
               for p in model.PRECISIONS}
    res32, cache = results["fp32"]
    # the same step with LRN and max-pool as the two kernels each way they were before
    # (both still in the build: they run where a row has only one of the two)
    unfused = {p: sum(t for _, t, _, _ in predict(
        kernels, model.step_ops(batch=batch, fused=False, precision=p)[1], dev, p)[0])
        for p in model.PRECISIONS}
    # the step with every convolution on cuDNN (--conv cudnn): its calls at their FLOP or
    # memory bound, as cuBLAS's are (the other kernels counted as below)
    cudnn = {p: predict(kernels, model.step_ops(batch=batch, precision=p, conv="cudnn")[1],
                        dev, p)[0] for p in model.PRECISIONS}
    # and bf16 on cuDNN with --bf16-acts (conv1's and conv2's activation kept in bf16)
    kept = predict(kernels, model.step_ops(batch=batch, precision="bf16", conv="cudnn",
                                           bf16_acts=True)[1], dev, "bf16")[0]
    w = out.write
    w("twotower: predicted cost of one training step on one GPU: PREDICTED, not measured\n")
    w(f"net alexnet2012, 2 towers on one GPU, batch {batch}, 224x224, --conv gemm; "
      f"{len(ops)} GPU operations per step "
      f"({sum(o.kind not in ('event', 'sync') for o in ops)} kernels, library calls, "
      f"copies and memsets; {sum(o.kind == 'event' for o in ops)} event records/waits; "
      f"{sum(o.kind == 'sync' for o in ops)} host synchronisations)\n")
    w(f"counted from: {src_kind} of {', '.join(files)} for sm_90"
      f"{' (' + tool + ')' if tool else ''}\n")
    w(f"device: {dev.name}: {dev.sms} SMs x {dev.schedulers} schedulers x 1 warp-instruction "
      f"per cycle at {dev.clock_hz / 1e9:.2f} GHz = {dev.issue_per_s / 1e12:.3f} T "
      f"warp-instructions/s; XU {dev.xu_per_sm_clk} lanes/SM/cycle; FP32 "
      f"{dev.fp32_flops / 1e12:.0f}, TF32 {dev.tf32_flops / 1e12:.0f}, bf16 "
      f"{dev.bf16_flops / 1e12:.0f} TFLOP/s (GEMMs at peak); HBM {dev.hbm_bytes / 1e12:.2f} TB/s; "
      f"host to device {dev.h2d_bytes / 1e9:.0f} GB/s; {dev.launch_s * 1e6:.1f} us per "
      f"operation; {dev.sync_s * 1e6:.0f} us per host synchronisation; the two towers' "
      f"streams summed (no overlap)\n\n")

    # ---- per kernel
    rows = {}
    for op, t, bound, parts in res32:
        if op.kind not in ("kernel", "gemm", "gemv"):
            continue
        name = op.name
        r = rows.setdefault(name, dict(launches=0, n=0, t=0.0, issue=0.0, memory=0.0,
                                       flops=0.0, xu=0.0, bytes=0.0, warp_instrs=0.0))
        r["launches"] += 1
        r["n"] += op.n
        r["t"] += t
        r["bytes"] += op.bytes
        for key in ("issue", "memory", "flops", "xu"):
            r[key] += parts.get(key, 0.0)
        if "issue" in parts:
            r["warp_instrs"] += parts["issue"] * dev.issue_per_s
    w("Per kernel (FP32). instr/elem: one iteration of the grid-stride loop, the inline "
      "32-bit division arms (the arms these sizes take); +thread: the instructions outside "
      "it, once per thread (one element per thread at these sizes); 64-bit: instr/elem with "
      "every division site on the 64-bit subroutine; divs: those sites; * per thread "
      "(no grid-stride loop); t: a block-per-tile kernel, its warps' instructions x 32 over "
      "its elements (idle lanes included)\n")
    w(f"{'kernel':29s} {'instr/elem':>10s} {'+thread':>7s} {'64-bit':>6s} {'divs':>4s} "
      f"{'launch':>6s} {'elements':>9s} {'MB':>7s} {'issue ms':>8s} {'xu ms':>6s} "
      f"{'mem ms':>7s} {'flop ms':>7s} {'pred ms':>8s} {'x bound':>7s}\n")
    worklist = []
    for name, r in sorted(rows.items(), key=lambda kv: -kv[1]["t"]):
        k = kernels.get(name)
        per = pro = per64 = divs = "-"
        if k is not None:
            vals = [v for (nm, _), v in cache.items() if nm == name]
            el = bool(k.element_loops(ROOT))
            if vals and name in TILED:
                # per element: every launch's warp-instructions x 32 over its elements
                per = f"{r['warp_instrs'] * 32 / r['n']:.0f}t"
                per64 = f"{r['warp_instrs'] * 32 / r['n']:.0f}"
            elif vals:
                per = f"{max(v[0][0] if el else v[0][1] for v in vals):.0f}" + ("" if el else "*")
                pro = f"{max(v[0][1] for v in vals):.0f}" if el else "-"
                per64 = f"{max(v[1][0] if el else v[1][1] for v in vals):.0f}"
            divs = str(max((lp.div_sites for lp in k.element_loops(ROOT)), default=0))
        floor = max(r["memory"], r["flops"])
        busy = max(r["issue"], r["xu"], r["memory"], r["flops"])
        ratio = busy / floor if floor > 0 else float("inf")
        w(f"{name:29s} {per:>10s} {pro:>7s} {per64:>6s} {divs:>4s} {r['launches']:6d} "
          f"{r['n']:9.3g} {r['bytes'] / 1e6:7.0f} {fmt_ms(r['issue'])} {r['xu'] * 1e3:6.3f} "
          f"{r['memory'] * 1e3:7.3f} {r['flops'] * 1e3:7.3f} {fmt_ms(r['t'])} {ratio:7.1f}\n")
        if ratio > 2:
            worklist.append((name, r, ratio))
    step_names = set(rows) | {op.name for p in model.PRECISIONS for op, *_ in results[p][0]
                              if op.kind == "kernel"}  # bf16's own kernels too
    missing = sorted(n for n in step_names if n not in kernels and not n.startswith("cublas"))
    for name in missing:
        w(f"WARNING: {name} is in the step model but not in the build: its row is memory "
          f"time only (tools/gpu_cost/model.py must follow the CUDA code)\n")
    others = sorted(set(kernels) - set(rows))
    w(f"kernels of the build not in one default step ({len(others)}):\n")
    for name in others:
        k = kernels[name]
        per, pro, unk = count.element_cost(k, [], ROOT, 0)
        el = bool(k.element_loops(ROOT))
        w(f"  {name:30s} {per if el else pro:6.0f} instructions per "
          f"{'element' if el else 'thread'}{' (inner loops at one iteration)' if unk else ''}"
          f" [{k.file}]\n")

    # ---- per layer
    w("\nPer layer (both towers; elements: kernel work items; FLOPs: the GEMMs')\n")
    order = ["data"] + [L.name for L in P] + ["loss", "update"]
    hdr = (f"{'layer':7s} {'ops':>4s} {'elements':>10s} {'MB':>8s} {'GFLOP':>7s} "
           f"{'fwd ms':>8s} {'bwd ms':>8s} {'xchg ms':>8s} {'of it kernels':>13s} "
           f"{'of it GEMM':>10s} {'launch':>8s} {'TF32 ms':>8s} {'bf16 ms':>8s} "
           f"{'bf16 cuDNN':>10s}")
    meas = measured_layers(measured)
    if meas:
        hdr += f" {'measured fwd':>12s} {'measured bwd':>12s}"
    w(hdr + "\n")
    totals = {p: 0.0 for p in model.PRECISIONS}
    layer_rows = {}
    for layer in order:
        sel = [(o, t, b, parts) for o, t, b, parts in res32 if o.layer == layer]
        if not sel:
            continue
        ph = lambda want: sum(t for o, t, b, _ in sel if o.phase in want)
        ker = sum(t - dev.launch_s for o, t, b, _ in sel if o.kind == "kernel")
        gem = sum(t - dev.launch_s for o, t, b, _ in sel if o.kind in ("gemm", "gemv"))
        nlaunch = sum(1 for o, _, _, _ in sel if o.kind not in ("event", "sync"))
        per_prec = {p: sum(t for o, t, b, _ in results[p][0] if o.layer == layer)
                    for p in model.PRECISIONS}
        for p in model.PRECISIONS:
            totals[p] += per_prec[p]
        cud = sum(t for o, t, *_ in cudnn["bf16"] if o.layer == layer)
        layer_rows[layer] = dict(
            ops=len(sel), elements=sum(o.n for o, *_ in sel),
            bytes=sum(o.bytes for o, *_ in sel), flops=sum(o.flops for o, *_ in sel),
            fwd_ms=ph(('fwd', 'data', 'loss', 'update')) * 1e3, bwd_ms=ph(('bwd',)) * 1e3,
            xchg_ms=ph(('xchg',)) * 1e3, bf16_cudnn_ms=cud * 1e3,
            **{p + "_ms": per_prec[p] * 1e3 for p in model.PRECISIONS})
        for p in model.PRECISIONS:
            pr = [(o, t) for o, t, *_ in results[p][0] if o.layer == layer]
            layer_rows[layer][p + "_fwd_ms"] = 1e3 * sum(
                t for o, t in pr if o.phase in ('fwd', 'data', 'loss', 'update'))
            layer_rows[layer][p + "_bwd_ms"] = 1e3 * sum(t for o, t in pr if o.phase == 'bwd')
        line = (f"{layer:7s} {len(sel):4d} {sum(o.n for o, *_ in sel):10.4g} "
                f"{sum(o.bytes for o, *_ in sel) / 1e6:8.1f} "
                f"{sum(o.flops for o, *_ in sel) / 1e9:7.1f} "
                f"{fmt_ms(ph(('fwd', 'data', 'loss', 'update')))} {fmt_ms(ph(('bwd',)))} "
                f"{fmt_ms(ph(('xchg',)))} {ker * 1e3:13.3f} {gem * 1e3:10.3f} "
                f"{nlaunch * dev.launch_s * 1e3:8.3f} {fmt_ms(per_prec['tf32'])} "
                f"{fmt_ms(per_prec['bf16'])} {cud * 1e3:10.3f}")
        if meas:
            m = meas.get(layer)
            line += (f" {m[0]:12.3f} {m[1]:12.3f}" if m else f" {'-':>12s} {'-':>12s}")
        w(line + "\n")
    w("\nPredicted step at batch %d (PREDICTED; the target is %.0f images/s = %.2f ms per step):\n"
      % (batch, TARGET_IMAGES_PER_S, batch / TARGET_IMAGES_PER_S * 1e3))
    summary = {}
    for p in model.PRECISIONS:
        t = totals[p]
        ips = batch / t
        summary[p] = dict(step_ms=t * 1e3, images_per_s=ips)
        note = " (implemented: bf16 GEMM operands, fp32 activations; --precision bf16)" \
            if p == "bf16" else ""
        w(f"  {p}: {t * 1e3:7.2f} ms/step, {ips:7.0f} images/s, {ips / TARGET_IMAGES_PER_S:5.1%}"
          f" of the target{note}\n")
        summary[p]["unfused_step_ms"] = unfused[p] * 1e3
        summary[p]["unfused_images_per_s"] = batch / unfused[p]
    w("  before, LRN and max-pool unfused (lrn_forward_kernel + maxpool_forward_kernel, "
      "maxpool_backward_kernel + lrn_backward_kernel at conv1 and conv2): " +
      ", ".join(f"{p} {unfused[p] * 1e3:.2f} ms/step ({batch / unfused[p]:.0f} images/s)"
                for p in ("fp32", "tf32")) + "; fused: " +
      ", ".join(f"{p} {totals[p] * 1e3:.2f}" for p in ("fp32", "tf32")) + " ms/step\n")
    w("  --conv cudnn (cuDNN's convolution calls timed at their FLOP or memory bound, like "
      "cuBLAS's; in bf16 bf16 tensors, the fp32 activations cast around each call, but conv3's and "
      "conv4's output and conv1's pooled output written in bf16 as the next conv's input):\n")
    for p in model.PRECISIONS:
        t = sum(r[1] for r in cudnn[p])
        summary[p]["cudnn_step_ms"] = t * 1e3
        summary[p]["cudnn_images_per_s"] = batch / t
        w(f"    {p}: {t * 1e3:7.2f} ms/step, {batch / t:7.0f} images/s, "
          f"{batch / t / TARGET_IMAGES_PER_S:5.1%} of the target\n")
    # how much the cuDNN prediction leans on its calls running at their bound: the same
    # step with every cuDNN convolution call at half, and at a quarter, of it
    conv_s = sum(r[1] - dev.launch_s for r in cudnn["bf16"] if r[0].kind == "conv")
    t16 = summary["bf16"]["cudnn_step_ms"] / 1e3
    for eff in (0.5, 0.25):
        t = t16 + conv_s * (1 / eff - 1)
        summary["bf16"][f"cudnn_at_{int(eff * 100)}pct_images_per_s"] = batch / t
    w(f"    bf16 with cuDNN's calls at 50% of their bound: "
      f"{summary['bf16']['cudnn_at_50pct_images_per_s']:.0f} images/s; at 25%: "
      f"{summary['bf16']['cudnn_at_25pct_images_per_s']:.0f} (its calls take "
      f"{conv_s * 1e3:.2f} ms of the {t16 * 1e3:.2f})\n")
    tk = sum(r[1] for r in kept)
    summary["bf16"]["cudnn_bf16_acts_step_ms"] = tk * 1e3
    summary["bf16"]["cudnn_bf16_acts_images_per_s"] = batch / tk
    lrn = ("lrn_maxpool_forward_h_kernel", "lrn_maxpool_backward_g_h_kernel")
    lrn_ms = {n: sum(r[1] for r in kept if r[0].name == n) * 1e3 for n in lrn}
    bounds = {n: sorted({r[2] for r in kept if r[0].name == n}) for n in lrn}
    w(f"    bf16 with --bf16-acts (conv1's and conv2's ReLU output kept in bf16): "
      f"{tk * 1e3:.2f} ms/step, {batch / tk:.0f} images/s, "
      f"{(tk - t16) * 1e3:+.3f} ms against them in fp32 (the fused LRN + max-pool, "
      + ", ".join(f"{n} {lrn_ms[n]:.3f} ms {'/'.join(bounds[n])}-bound" for n in lrn) + ")\n")
    best = min(model.PRECISIONS, key=lambda p: summary[p]["cudnn_step_ms"])
    bwd = sum(r[1] for r in cudnn[best] if r[0].phase in ("bwd", "update"))
    cs = model.copy_stream_time(cudnn[best])
    w(f"  copy stream, beside the step: the next batch's crops and parameters, "
      f"{cs * 1e3:.3f} ms ({'hidden' if cs < bwd else 'NOT hidden'}: the backward and update "
      f"alone take {bwd * 1e3:.2f} ms in {best} with --conv cudnn)\n")
    for p in model.PRECISIONS:
        summary[p]["copy_stream_ms"] = cs * 1e3
    # every kernel of the bf16 cuDNN step against its bound (the issue's 2x); a kernel that
    # has no work in a step (cast_weights_bf16_kernel, when the update made the copy) is
    # bound by its launch, and left out
    agg, idle = {}, set()
    for op, t, bound, parts in cudnn["bf16"]:
        if op.kind != "kernel":
            continue
        if op.idle:
            idle.add(op.name)
            continue
        r = agg.setdefault(op.name, [0.0, 0.0, 0])
        r[0] += max(parts.get(k, 0.0) for k in ("issue", "xu", "memory", "flops"))
        r[1] += max(parts.get("memory", 0.0), parts.get("flops", 0.0))
        r[2] += 1
    over = sorted(((n, b / f) for n, (b, f, _) in agg.items() if f > 0 and b / f > 2),
                  key=lambda x: -x[1])
    worst = max(agg.items(), key=lambda kv: kv[1][0] / kv[1][1] if kv[1][1] else 0)
    w(f"  bf16 --conv cudnn: {len(agg)} kernels, "
      f"{'none' if not over else ', '.join(f'{n} {x:.2f}x' for n, x in over)} more than 2x "
      f"their memory or FLOP bound (the most: {worst[0]}, "
      f"{worst[1][0] / worst[1][1]:.2f}x)" +
      (f"; idle, launch-bound: {', '.join(sorted(idle))}" if idle else "") + "\n")
    summary["bf16"]["cudnn_over_2x"] = [n for n, _ in over]
    conv_default, conv_table = conv_paths(results, cudnn, dev, P, w)
    if measured and isinstance(measured.get("images_per_s"), (int, float)):
        w(f"  measured (bench.json): {measured['images_per_s']:.0f} images/s, "
          f"{measured.get('ms_per_step', float('nan')):.2f} ms/step\n")
    w("\nWork list: kernels whose predicted time is more than 2x their memory- or FLOP-bound "
      "time (FP32):\n")
    for name, r, ratio in sorted(worklist, key=lambda x: -x[1]["t"]):
        bound = max(("issue", r["issue"]), ("xu", r["xu"]), key=lambda kv: kv[1])[0]
        w(f"  {name:30s} {r['t'] * 1e3:7.3f} ms predicted, {max(r['memory'], r['flops']) * 1e3:7.3f}"
          f" ms at the memory/FLOP bound ({ratio:.1f}x, {bound}-bound)\n")
    counted = {}
    for name, k in kernels.items():
        vals = [v for (nm, _), v in cache.items() if nm == name] or \
            [[count.element_cost(k, [], ROOT, m) for m in (0, 1, 2)]]
        el = bool(k.element_loops(ROOT))
        counted[name] = dict(
            file=k.file, per="element" if el else "thread", in_step=name in rows,
            instructions=max(v[0][0] if el else v[0][1] for v in vals),
            instructions_64bit=max(v[1][0] if el else v[1][1] for v in vals),
            per_thread=max(v[0][1] for v in vals), static=k.static,
            division_sites=sum(lp.div_sites for lp in k.element_loops(ROOT)))
    return dict(summary=summary, kernels=rows, worklist=[n for n, _, _ in worklist],
                others=others, ops=len(ops), layers=layer_rows, counted=counted,
                missing=missing, conv_default=conv_default, conv_paths=conv_table)


def conv_paths(results, cudnn, dev, P, w):
    """The convolution path per layer (docs/BENCH.md, "Convolution path per layer"): each
    conv layer's step time on GEMM and on cuDNN in each precision, and the break-even, the
    fraction of their bound at which cuDNN's calls would make the layer cost what it costs
    on GEMM (cuBLAS's calls are at their bound in both). A precision's conv layers go on
    cuDNN by default when every break-even is below BREAK_EVEN: then GEMM is faster only
    if cuDNN's kernels run at under that fraction of the bound cuBLAS's are timed at.
    Otherwise the prediction cannot tell the paths apart, and GEMM stays (`--conv auto`
    measures). Returns ({precision: "cudnn" or "gemm"}, {layer: {precision: times}}); the
    verdicts reach the JSON as conv_default, which twotower's own default
    (train_placement_conv_default) must follow (tests/tools/test_gpu_cost.py)."""
    w(f"\nConvolution path per layer (PREDICTED; ms per step, both towers, forward + backward; "
      f"cuDNN's calls at their FLOP or memory bound; break-even: the fraction of that bound "
      f"at which cuDNN's calls would tie with GEMM; cuDNN is the default where every layer's "
      f"is below {BREAK_EVEN:.0%}):\n")
    w(f"  {'layer':7s}" + "".join(f" {p + ' gemm':>10s} {p + ' cudnn':>11s} {'break-even':>10s}"
                                  for p in model.PRECISIONS) + "\n")
    convs = [L.name for L in P if L.kind == "conv"]
    table, worst = {}, {p: 0.0 for p in model.PRECISIONS}  # worst: the highest break-even
    for layer in convs:
        line = f"  {layer:7s}"
        for p in model.PRECISIONS:
            g = sum(t for o, t, *_ in results[p][0] if o.layer == layer)
            c = sum(t for o, t, *_ in cudnn[p] if o.layer == layer)
            calls = sum(t - dev.launch_s for o, t, *_ in cudnn[p]
                        if o.layer == layer and o.kind == "conv")
            rest = c - calls  # the casts, ReLU, LRN and pooling around cuDNN's calls
            be = calls / (g - rest) if g > rest else math.inf
            worst[p] = max(worst[p], be)
            # break_even None: the layer's other kernels on cuDNN cost GEMM's whole time
            table.setdefault(layer, {})[p] = dict(gemm_ms=g * 1e3, cudnn_ms=c * 1e3,
                                                  break_even=be if math.isfinite(be) else None)
            line += f" {g * 1e3:10.3f} {c * 1e3:11.3f} {be:10.0%}"
        w(line + "\n")
    verdict = {}
    for p in model.PRECISIONS:
        verdict[p] = "cudnn" if worst[p] < BREAK_EVEN else "gemm"
        w(f"  {p}: {verdict[p]} by default (the highest break-even {worst[p]:.0%}: " +
          ("GEMM wins only if cuDNN's calls run below it" if verdict[p] == "cudnn" else
           "a prediction at the bounds cannot tell the paths apart; --conv auto measures") +
          ")\n")
    return verdict, table


def measured_layers(measured):
    """{layer: (fwd ms, bwd ms)} summed over towers from twotower bench's JSON."""
    if not measured:
        return {}
    prof = measured.get("profile") or {}
    out = {}
    for L in prof.get("layers") or []:
        f, b = L.get("fwd_ms_total"), L.get("bwd_ms_total")
        if isinstance(f, (int, float)) and isinstance(b, (int, float)):
            out[L.get("name")] = (f, b)
    d = prof.get("data_ms")
    if isinstance(d, list) and all(isinstance(x, (int, float)) for x in d):
        out["data"] = (sum(d), 0.0)
    return out


def check_summary(exe):
    """The shapes of model.plan() against `twotower summary`'s table: (ok, lines)."""
    r = subprocess.run([exe, "summary"], capture_output=True, text=True)
    if r.returncode != 0:
        return False, [f"{exe} summary failed: {r.stderr.strip()}"]
    row = re.compile(r"^(\w+)\s+(own|both)\s+(\d+)x(\d+)x(\d+)\s+(?:.*?\s)?(\d+)x(\d+)x(\d+)\s+"
                     r"(\d+)\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s*$")
    got = {}
    for line in r.stdout.splitlines():
        m = row.match(line)
        if m:
            got[m.group(1)] = m.groups()
    ok, msgs = True, []
    for L in model.plan():
        g = got.get(L.name)
        want = (L.name, "both" if L.sources > 1 else "own", str(L.out_ch), str(L.out_h),
                str(L.out_h), str(L.out_ch), str(L.final_h), str(L.final_h), str(L.params))
        if g is None or g[:9] != want or abs(float(g[10]) - L.macs / 1e6) > 0.06:
            ok = False
            msgs.append(f"{L.name}: summary says {g}, gpu_cost computes {want} and "
                        f"{L.macs / 1e6:.1f} MMAC")
        else:
            msgs.append(f"{L.name}: {g[2]}x{g[3]}x{g[4]} -> {g[5]}x{g[6]}x{g[7]}, {g[8]} "
                        f"params, {g[10]} MMAC per tower: as summary")
    if len(got) != len(model.plan()):
        ok = False
        msgs.append(f"summary has {len(got)} layers, gpu_cost {len(model.plan())}")
    return ok, msgs


def check_lineinfo(build, use_ptx, nvdisasm):
    """Instruction counts of layers_cuda.cu's kernels with and without -lineinfo."""
    d, argv, src = next(c for c in cuda_commands(build) if c[2].endswith("layers_cuda.cu"))
    counts = []
    with tempfile.TemporaryDirectory() as work:
        for li in (True, False):
            out = os.path.join(work, "l.ptx" if use_ptx else "l.cubin")
            cmd = device_argv(argv, src, out, use_ptx)
            if not li:
                cmd.remove("-lineinfo")
            subprocess.run(cmd, cwd=d, check=True, capture_output=True)
            text = open(out).read() if use_ptx else subprocess.run(
                [nvdisasm, "-c", out], check=True, capture_output=True, text=True).stdout
            ks = count.count_text(text, sass=not use_ptx)
            counts.append({n: (k.static, k.prologue) for n, k in ks.items()})
    same = counts[0] == counts[1] and counts[0]
    return bool(same), (f"-lineinfo: {len(counts[0])} kernels, the same instructions with and "
                        f"without it" if same else f"-lineinfo changes the code: {counts}")


def check_ptx(build):
    """Every .cu object of the build embeds PTX beside its machine code: meson's flags ask
    for it (code=compute_NN) and, when cuobjdump is found, the objects list a PTX file."""
    msgs, ok = [], True
    cuobjdump = find_tool("cuobjdump")
    for d, argv, src in cuda_commands(build):
        base = os.path.basename(src)
        flags = " ".join(argv)
        ptx = re.findall(r"code=(compute_\d+)", flags)
        if not ptx:
            ok = False
            msgs.append(f"{base}: no -gencode ...,code=compute_NN: the build embeds no PTX")
            continue
        obj = argv[argv.index("-o") + 1] if "-o" in argv else None
        if cuobjdump and obj and os.path.isfile(os.path.join(d, obj)):
            r = subprocess.run([cuobjdump, "--list-ptx", os.path.join(d, obj)],
                               capture_output=True, text=True)
            listed = [l for l in r.stdout.splitlines() if l.startswith("PTX file")]
            if not listed:
                ok = False
                msgs.append(f"{base}: cuobjdump --list-ptx lists no PTX in {obj}")
                continue
            msgs.append(f"{base}: PTX {', '.join(ptx)} asked for; {obj}: "
                        f"{'; '.join(l.split(':', 1)[1].strip() for l in listed)}")
        else:
            msgs.append(f"{base}: PTX {', '.join(ptx)} asked for (no cuobjdump here to list it)")
    return ok, msgs


def compare(pred, measured, out):
    """The per-layer table of a saved prediction (--json) beside twotower bench's times."""
    meas = measured_layers(measured)
    p = measured.get("precision") if measured.get("precision") in model.PRECISIONS else \
        "tf32" if measured.get("tf32") else "fp32"
    out.write(f"predicted ({pred['source']}, {p}; PREDICTED) beside measured (bench.json, "
              f"{measured.get('device', '?')}), ms per step, both towers\n")
    out.write(f"{'layer':7s} {'pred fwd':>9s} {'meas fwd':>9s} {'ratio':>6s} {'pred bwd':>9s} "
              f"{'meas bwd':>9s} {'ratio':>6s}\n")
    r = lambda m, q: f"{m / q:6.2f}" if q > 0 else f"{'-':>6s}"
    for layer, row in pred["layers"].items():
        m = meas.get(layer)
        pf, pb = row[p + "_fwd_ms"], row[p + "_bwd_ms"]
        if m:
            out.write(f"{layer:7s} {pf:9.3f} {m[0]:9.3f} {r(m[0], pf)} {pb:9.3f} {m[1]:9.3f} "
                      f"{r(m[1], pb) if m[1] else '     -'}\n")
        else:
            out.write(f"{layer:7s} {pf:9.3f} {'-':>9s} {'-':>6s} {pb:9.3f} {'-':>9s} {'-':>6s}\n")
    ips = measured.get("images_per_s")
    out.write(f"images/s: predicted {pred['predicted'][p]['images_per_s']:.0f}, measured "
              f"{ips if not isinstance(ips, (int, float)) else round(ips)}\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--ptx", action="store_true", help="count from PTX even with nvdisasm")
    ap.add_argument("--fetch-tools", action="store_true")
    ap.add_argument("--explain", metavar="KERNEL")
    ap.add_argument("--json", metavar="FILE")
    ap.add_argument("--measured", metavar="BENCH_JSON")
    ap.add_argument("--check-summary", metavar="TWOTOWER")
    ap.add_argument("--check-lineinfo", action="store_true",
                    help="check that -lineinfo changes no instruction of layers_cuda.cu")
    ap.add_argument("--check-ptx", action="store_true",
                    help="check that every CUDA object embeds PTX (cuobjdump --list-ptx)")
    ap.add_argument("--predicted", metavar="GPU_COST_JSON",
                    help="with --measured: compare a saved prediction, compiling nothing")
    ap.add_argument("--batch", type=int, default=128)
    a = ap.parse_args()

    measured = json.load(open(a.measured)) if a.measured else None
    if measured and "twotower" in measured and "profile" not in measured:
        measured = measured["twotower"]  # bench.py's JSON holds twotower's under "twotower"
    if a.predicted:
        if not measured:
            print("gpu_cost: --predicted needs --measured", file=sys.stderr)
            return 2
        compare(json.load(open(a.predicted)), measured, sys.stdout)
        return 0
    if a.check_summary:
        ok, msgs = check_summary(a.check_summary)
        print("\n".join(msgs))
        if not ok:
            return 1
    nvcc = shutil.which("nvcc") or ("/usr/local/cuda/bin/nvcc"
                                    if os.path.exists("/usr/local/cuda/bin/nvcc") else None)
    if not nvcc:
        print("gpu_cost: nvcc not found: no CUDA toolkit here")
        return 77
    if cuda_commands(a.build) is None:
        print(f"gpu_cost: {a.build}/compile_commands.json not found: not a meson build folder")
        return 77
    if not cuda_commands(a.build):
        print(f"gpu_cost: {a.build} compiles no .cu file (a build without the CUDA backend)")
        return 77
    os.environ["PATH"] = os.path.dirname(nvcc) + os.pathsep + os.environ.get("PATH", "")
    nvdisasm = None if a.ptx else find_tool("nvdisasm")
    if nvdisasm is None and not a.ptx and a.fetch_tools and not a.quick:
        if fetch_tools():
            nvdisasm = find_tool("nvdisasm")
    use_ptx = nvdisasm is None
    if use_ptx and not a.ptx:
        print("gpu_cost: nvdisasm not found (--fetch-tools gets it): counting from PTX, "
              "which is rougher", file=sys.stderr)
    if a.check_ptx:
        ok, msgs = check_ptx(a.build)
        print("\n".join(msgs))
        if not ok:
            return 1
    if a.check_lineinfo:
        ok, msg = check_lineinfo(a.build, use_ptx, nvdisasm)
        print(msg)
        if not ok:
            return 1
    with tempfile.TemporaryDirectory() as work:
        kernels, files = build_and_count(a.build, use_ptx, nvdisasm, work)
    if not kernels:
        print("gpu_cost: no kernel found in the build's CUDA files", file=sys.stderr)
        return 1
    if a.explain:
        k = kernels.get(a.explain)
        if not k:
            print(f"gpu_cost: no kernel {a.explain}; there are: {', '.join(sorted(kernels))}")
            return 2
        print("\n".join(count.describe(k, ROOT)))
        return 0
    dev = model.Device()
    res = report(kernels, files, "PTX" if use_ptx else "SASS (nvdisasm)",
                 None if use_ptx else nvdisasm, dev, a.batch, measured, sys.stdout)
    bad = [p for p, v in res["summary"].items() if not math.isfinite(v["step_ms"]) or v["step_ms"] <= 0]
    if a.json:
        with open(a.json, "w") as f:
            json.dump(dict(source="ptx" if use_ptx else "sass", files=files,
                           device=vars(dev), batch=a.batch, predicted=res["summary"],
                           worklist=res["worklist"], layers=res["layers"],
                           kernels=res["counted"],
                           step_kernels={n: dict(r) for n, r in res["kernels"].items()},
                           not_in_step=res["others"], missing=res["missing"],
                           ops=res["ops"], conv_default=res["conv_default"],
                           conv_paths=res["conv_paths"]), f, indent=1)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
