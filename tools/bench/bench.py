#!/usr/bin/python3
"""bench.py: twotower against PyTorch on the same net (issue 6), in one command.

Runs, one after the other on one device:
  1. `twotower bench` (training steps of the two-tower net from in-memory uint8 batches,
     augmented on the device; per-layer times; memory);
  2. the same net in PyTorch (tools/reference/twotower_torch.py: grouped convolutions,
     per-tower LRN with alpha=5e-4 = the paper's 1e-4, the paper's dropout), trained with
     the paper's SGD written out (v = 0.9 v - 0.0005 lr w - lr g, w += v, weights only
     decay), eager and with torch.compile, at the same batch and precision (FP32, TF32
     off; with --tf32, TF32 on in both: twotower's cuBLAS GEMMs and PyTorch's matmuls and
     cuDNN convolutions; with --precision bf16, twotower's --precision bf16 against
     PyTorch's bf16 autocast of the forward and the loss: bf16 operands, fp32 sums, fp32
     master weights and update in both), after warm-up;
  3. correctness: `twotower dump` of one batch and compare.py's PyTorch check of the
     logits, loss and every gradient on the same device: PASS or FAIL (exit code 1).
Prints one table (images/s, ratios, memory, achieved GFLOP/s against the device's
FP32 peak, twotower's per-layer times) and writes everything to --json.

  bench.py --twotower build/src/train/twotower --gpus 0 --json bench.json
  bench.py --twotower build/src/train/twotower --cpu --size 67 --width-div 8 --batch 4 \\
           --steps 3 --classes 10                    (the CI check: tiny, seconds)
  bench.py --python V/bin/python --cpu --batch 32,128   (the PyTorch installed in venv V;
                                                           two batches, one summary)
  bench.py --python V/bin/python --cpu --batch 32,128 --rounds 3
                                   (all of it three times in turn, each round's ratios and
                                    their medians: on a machine whose speed drifts)

The PyTorch compared with is the one the Python running this script imports: run it
with another Python (V/bin/python tools/bench/bench.py ...) or pass --python PATH, and
the script starts itself again under that Python.

Exit code: 0 all ran and the check passed; 1 a run failed or the check failed; 2 usage."""
import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tools", "reference"))


def python_flag(argv):
    """(PATH, argv without --python PATH) for --python PATH / --python=PATH, else (None, argv)."""
    for i, a in enumerate(argv):
        if a == "--python" and i + 1 < len(argv):
            return argv[i + 1], argv[:i] + argv[i + 2:]
        if a.startswith("--python="):
            return a.split("=", 1)[1], argv[:i] + argv[i + 1:]
    return None, argv


def reexec_under_python(argv):
    """--python PATH: run this script again under that Python (and so its PyTorch), before
    this one imports torch (it may have none)."""
    py, rest = python_flag(argv)
    if py is None:
        return
    if not (os.path.isfile(py) and os.access(py, os.X_OK)):
        print(f"bench.py: --python {py}: not an executable file", file=sys.stderr)
        sys.exit(2)
    if os.path.realpath(py) == os.path.realpath(sys.executable) and \
            os.path.abspath(py) == os.path.abspath(sys.executable):
        return
    sys.stdout.flush()
    os.execv(py, [py, os.path.abspath(__file__), *rest])


if __name__ == "__main__":
    reexec_under_python(sys.argv[1:])

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import compare  # noqa: E402
import safetensors_np  # noqa: E402
import twotower_torch  # noqa: E402

# FP32 peak without tensor cores (the FMA pipes: CUDA cores x 2 x boost clock), from
# NVIDIA's datasheets: H100 SXM5 66.9 TFLOP/s (132 SMs x 128 x 2 x 1.98 GHz), H100 PCIe
# 51.2, H100 NVL 60, H200 66.9 (the H100 SXM5 chip), A100 19.5. twotower runs plain FP32
# (cuBLAS CUBLAS_DEFAULT_MATH, no TF32), so this is the roof its GEMMs can reach. First
# match wins (so "H100 PCIe" before "H100").
PEAK_FP32_TFLOPS = (("H100 PCIe", 51.2), ("H100 NVL", 60.0), ("H100", 66.9),
                    ("H200", 66.9), ("A100", 19.5))
PEAK_SOURCE = ("NVIDIA datasheets, FP32 without tensor cores: H100 SXM5 66.9, H100 PCIe "
               "51.2, H100 NVL 60, H200 66.9, A100 19.5 TFLOP/s")

# Issue 6's targets, for the paper's net at batch 128 on one H100 (docs/BENCH.md).
TARGETS = {"twotower_over_eager": 2.0, "twotower_over_compile": 1.3,
           "twotower_images_per_s_h100": 35000}


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n", 1)[1])
    ap.add_argument("--twotower", default=None,
                    help="the twotower program (default: build*/src/train/twotower under the "
                         "repository)")
    where = ap.add_mutually_exclusive_group()
    where.add_argument("--cpu", action="store_true", help="both on the CPU")
    where.add_argument("--gpus", default=None, metavar="N",
                       help="both on GPU N (twotower: both towers on it, as `--gpus N`)")
    ap.add_argument("--batch", type=batch_list, default=[128], metavar="B[,B...]",
                    help="batch size; several (32,128) run one after the other, each with "
                         "its own table, then a summary (default 128)")
    ap.add_argument("--python", default=None, metavar="PATH",
                    help="the Python whose PyTorch to compare with (this script restarts "
                         "under it; default: the Python running it)")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--towers", type=int, default=2, choices=(1, 2))
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--width-div", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--profile-steps", type=int, default=3,
                    help="twotower steps timed layer by layer (after the timed steps)")
    ap.add_argument("--batches", type=int, default=4, help="uint8 batches made once")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--check-batch", type=int, default=2,
                    help="batch of the correctness check (twotower dump)")
    ap.add_argument("--no-check", action="store_true", help="skip the correctness check")
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    ap.add_argument("--compile-mode", default="default",
                    help="torch.compile mode (default, reduce-overhead, max-autotune)")
    ap.add_argument("--peak-tflops", type=float, default=None,
                    help="the device's FP32 peak for the %%-of-peak column (default: from the "
                         "GPU's name; none on the CPU)")
    ap.add_argument("--threads", type=int, default=0,
                    help="CPU threads for PyTorch and OpenBLAS (default: OPENBLAS_NUM_THREADS "
                         "or all cores)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="run everything this many times, round after round (each round: "
                         "every twotower bench, then PyTorch eager and compiled at each "
                         "batch), and report each round's ratios and their medians: on a "
                         "machine whose speed drifts from minute to minute, one round's "
                         "ratios can be a minute's luck (default 1)")
    ap.add_argument("--json", default=None, help="write every number here")
    ap.add_argument("--tf32", action="store_true",
                    help="GPU only: TF32 tensor-core math in both programs (default: FP32); "
                         "the same as --precision tf32")
    ap.add_argument("--precision", choices=("fp32", "tf32", "bf16"), default=None,
                    help="GPU only: fp32 (default), tf32 (= --tf32), or bf16: twotower's "
                         "--precision bf16 against PyTorch's torch.autocast(dtype=bfloat16)")
    ap.add_argument("--conv", choices=("gemm", "cudnn", "auto"), default=None,
                    help="GPU only: twotower's convolutions, im2col + cuBLAS, cuDNN, or per "
                         "layer the faster of the two (timed at start-up); default: twotower's "
                         "(gemm in fp32, cudnn in tf32 and bf16 where the build has cuDNN)")
    args = ap.parse_args(argv)
    args.batches_list = args.batch
    args.batch = args.batch[0]
    for name in ("batch", "size", "classes", "width_div", "steps", "batches", "check_batch",
                 "rounds"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.warmup < 0 or args.profile_steps < 0:
        ap.error("--warmup and --profile-steps must be at least 0")
    if args.tf32 and args.precision not in (None, "tf32"):
        ap.error(f"--tf32 and --precision {args.precision} disagree: give one")
    args.precision = args.precision or ("tf32" if args.tf32 else "fp32")
    args.tf32 = args.precision == "tf32"
    if args.precision != "fp32" and args.cpu:
        ap.error(f"--precision {args.precision} is a GPU math mode: drop it or --cpu")
    if args.conv not in (None, "gemm") and args.cpu:
        ap.error(f"--conv {args.conv} is a GPU option: drop it or --cpu")
    if args.gpus is not None and not args.gpus.isdigit():
        ap.error(f"--gpus takes one device id (both towers on one GPU, as issue 6 "
                 f"compares), not '{args.gpus}'")
    return args


def batch_list(text):
    try:
        v = [int(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}': expected B or B,B,... (integers)")
    if not v or min(v) < 1:
        raise argparse.ArgumentTypeError(f"'{text}': batch sizes must be at least 1")
    return v


def find_twotower(path):
    if path:
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            sys.exit(f"bench.py: --twotower {path}: not an executable file")
        return path
    for d in sorted(os.listdir(ROOT)):
        p = os.path.join(ROOT, d, "src", "train", "twotower")
        if d.startswith("build") and os.access(p, os.X_OK):
            return p
    sys.exit("bench.py: no build*/src/train/twotower found: build first (meson) or pass "
             "--twotower PATH")


def net_flags(args):
    return ["--batch", str(args.batch), "--size", str(args.size), "--towers", str(args.towers),
            "--classes", str(args.classes), "--width-div", str(args.width_div),
            "--seed", str(args.seed)]


def place_flags(args):
    if args.cpu:
        return ["--cpu"]
    conv = ["--conv", args.conv] if args.conv else []  # none: twotower's default
    return ["--gpus", args.gpus, *conv, "--precision", args.precision]


def rss_bytes():
    """(current, peak) resident memory of this process."""
    cur = 0
    try:
        with open("/proc/self/statm") as f:
            cur = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        pass
    return cur, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# ---- 1. twotower ---------------------------------------------------------------------------

def run_twotower(exe, args, env, tmp):
    out = os.path.join(tmp, "twotower-bench.json")
    cmd = [exe, "bench", *place_flags(args), *net_flags(args), "--warmup", str(args.warmup),
           "--steps", str(args.steps), "--profile-steps", str(args.profile_steps),
           "--batches", str(args.batches), "--lr", repr(args.lr), "--json", out]
    print("$ " + " ".join(cmd), flush=True)
    p = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    print(p.stdout, end="", flush=True)
    if p.returncode != 0 or not os.path.exists(out):
        return None, f"twotower bench exited with code {p.returncode}"
    with open(out) as f:
        return json.load(f), None


# ---- 2. PyTorch ----------------------------------------------------------------------------

def build_net(tt, args, device):
    """The PyTorch net shaped by twotower's own plan (so both are the same net), the
    paper's init from --seed (weights N(0, 0.01); biases 1 where the paper says so)."""
    layers = tt["plan"]["layers"]
    widths = tuple(L["out_ch"] for L in layers[:7])
    pool_side = layers[4]["final_h"]
    torch.manual_seed(args.seed)
    net = twotower_torch.TwoTowerAlexNet(args.towers, args.classes, widths, pool_side)
    with torch.no_grad():
        for name, p in net.named_parameters():
            layer, what = name.split(".")
            if what == "weight":
                p.normal_(0.0, 0.01)
            else:
                p.fill_(1.0 if layer in ("conv2", "conv4", "conv5", "fc6", "fc7") else 0.0)
    n = sum(p.numel() for p in net.parameters())
    want = args.towers * tt["plan"]["params_per_tower"]
    if n != want:
        raise RuntimeError(f"the PyTorch net has {n} parameters, twotower's {want}: not the "
                           "same net")
    return net.to(device).train()


class Batches:
    """--batches uint8 crop batches (NHWC, as twotower's data path hands them out), made
    once from the seed, with lighting offsets and a mean image on the device; each step
    turns one into the float NCHW input on the device: upload, permute, convert, subtract
    the mean at the crop's place, add the lighting (the arithmetic data_augment_cuda does
    for twotower, per element). One crop place per batch rather than per image keeps it
    a slice instead of a gather; the work per element is the same."""

    def __init__(self, args, device):
        rng = np.random.default_rng(args.seed)
        B, S, nb = args.batch, args.size, args.batches
        pin = device.type == "cuda"
        self.device, self.S, self.nb = device, S, nb
        crops = torch.from_numpy(rng.integers(0, 256, (nb, B, S, S, 3), dtype=np.uint8))
        self.crops = [c.pin_memory() if pin else c for c in crops]
        self.mean = torch.from_numpy(
            (100 + 50 * rng.random((3, 256, 256))).astype(np.float32)).to(device)
        self.place = rng.integers(0, 256 - S + 1, (nb, 2))
        self.rgb = torch.from_numpy(
            (20 * rng.random((nb, B, 3, 1, 1)) - 10).astype(np.float32)).to(device)
        self.labels = torch.from_numpy(
            rng.integers(0, args.classes, (nb, B)).astype(np.int64)).to(device)

    def get(self, k):
        k %= self.nb
        oy, ox = (int(v) for v in self.place[k])
        x = self.crops[k].to(self.device, non_blocking=True).permute(0, 3, 1, 2).float()
        return x - self.mean[:, oy:oy + self.S, ox:ox + self.S] + self.rgb[k], self.labels[k]


def make_step(net, fwd, lr, momentum=0.9, wd=0.0005, bf16=False):
    """One training step with the paper's SGD written out (foreach ops: one kernel per op
    for all tensors, the fastest eager form); bf16: the forward and the loss under bf16
    autocast (the usual mixed precision: bf16 operands, fp32 weights, gradients and update;
    bf16 needs no loss scaling)."""
    ws = [p for n, p in net.named_parameters() if n.endswith("weight")]
    bs = [p for n, p in net.named_parameters() if n.endswith("bias")]
    vw = [torch.zeros_like(p) for p in ws]
    vb = [torch.zeros_like(p) for p in bs]

    def amp():
        if bf16:
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def step(x, y):
        for p in net.parameters():
            p.grad = None
        with amp():
            loss = F.cross_entropy(fwd(x), y)
        loss.backward()
        with torch.no_grad():
            # v = 0.9 v - wd lr w - lr g; w += v  (weights); biases: no decay
            torch._foreach_mul_(vw, momentum)
            torch._foreach_add_(vw, ws, alpha=-wd * lr)
            torch._foreach_add_(vw, [p.grad for p in ws], alpha=-lr)
            torch._foreach_add_(ws, vw)
            torch._foreach_mul_(vb, momentum)
            torch._foreach_add_(vb, [p.grad for p in bs], alpha=-lr)
            torch._foreach_add_(bs, vb)
        return loss.detach()

    return step


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_torch(tt, args, device, compiled):
    net = build_net(tt, args, device)
    fwd = net
    compile_s = None
    if compiled:
        fwd = torch.compile(net, mode=args.compile_mode)
    data = Batches(args, device)
    step = make_step(net, fwd, args.lr, bf16=args.precision == "bf16")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    k = 0
    t_first = time.perf_counter()
    for s in range(max(args.warmup, 1 if compiled else 0)):
        x, y = data.get(k)
        loss = step(x, y)
        k += 1
        if s == 0 and compiled:
            sync(device)
            compile_s = time.perf_counter() - t_first
    sync(device)
    losses = []
    t0 = time.perf_counter()
    for s in range(args.steps):
        x, y = data.get(k)
        losses.append(step(x, y))
        k += 1
    sync(device)
    dt = time.perf_counter() - t0
    ips = args.batch * args.steps / dt
    res = {"images_per_s": ips, "ms_per_step": 1e3 * dt / args.steps,
           "gflops_per_s": tt["flops_per_image"] * ips / 1e9,
           "loss_first": float(losses[0]), "loss_last": float(losses[-1]),
           "precision": args.precision,
           "tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32),
           "tf32_cudnn": bool(torch.backends.cudnn.allow_tf32),
           "cudnn_benchmark": bool(torch.backends.cudnn.benchmark)}
    if compiled:
        res["compile_mode"] = args.compile_mode
        res["first_step_s"] = compile_s
    if device.type == "cuda":
        res["memory"] = {"max_allocated_bytes": torch.cuda.max_memory_allocated(device),
                         "max_reserved_bytes": torch.cuda.max_memory_reserved(device)}
    else:
        cur, peak = rss_bytes()
        res["memory"] = {"rss_bytes": cur, "rss_peak_bytes": peak}
    if not all(np.isfinite([res["loss_first"], res["loss_last"]])):
        raise RuntimeError(f"loss not finite: {res['loss_first']} -> {res['loss_last']}")
    del step, data, fwd, net
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return res


# ---- 3. correctness ------------------------------------------------------------------------

def check(exe, args, env, device, tmp):
    dump = os.path.join(tmp, "check.safetensors")
    flags = net_flags(args)
    flags[flags.index("--batch") + 1] = str(args.check_batch)
    cmd = [exe, "dump", "--out", dump, *flags]
    if not args.cpu:
        cmd += ["--gpus", args.gpus]
    print("$ " + " ".join(cmd), flush=True)
    p = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if p.returncode != 0:
        return {"pass": False, "error": f"twotower dump exited with code {p.returncode}: "
                                        f"{p.stdout.strip()[-300:]}"}
    # the check is in FP32 on both sides whatever --tf32 says: it asks whether the two
    # programs compute the same thing, not how TF32 rounds (the dump above is FP32 too)
    tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    try:
        tensors, _ = safetensors_np.load(dump)
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        if device.type == "cuda":
            torch.backends.cudnn.deterministic = True
        loss, logits, grads = compare.torch_step(tensors, str(device), torch.float32)
    finally:
        torch.backends.cudnn.deterministic = False
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
        os.remove(dump)
    rows = [("loss", "loss", np.asarray(tensors["loss"]).reshape(-1)[:1], np.array([loss])),
            ("logits", "logits", tensors["logits"], logits)]
    rows += [(n, "grad", tensors[n], grads[n]) for n in sorted(grads)]
    worst = {c: {"max_abs": 0.0, "rel": 0.0, "tol": compare.TOL[c]} for c in compare.TOL}
    failed = []
    for name, cls, a, b in rows:
        d, rel, _ = compare.rel_diff(a, b)
        w = worst[cls]
        w["max_abs"], w["rel"] = max(w["max_abs"], d), max(w["rel"], rel)
        if not rel <= compare.TOL[cls]:
            failed.append(name)
    return {"pass": not failed, "failed": failed, "worst": worst, "device": str(device),
            "batch": args.check_batch, "gradients": len(grads),
            "tolerance_rule": "max|twotower - torch| / max|torch| per tensor (compare.py)"}


# ---- the report ----------------------------------------------------------------------------

def mib(b):
    return f"{b / 1048576:.1f} MiB" if b is not None else "-"


def peak_for(args, device):
    if args.peak_tflops:
        return args.peak_tflops, "--peak-tflops"
    if device.type != "cuda":
        return None, "no peak for the CPU (pass --peak-tflops)"
    name = torch.cuda.get_device_name(device)
    for key, tf in PEAK_FP32_TFLOPS:
        if key in name:
            return tf, f"{name}: {PEAK_SOURCE}"
    return None, f"{name}: not in the table (pass --peak-tflops)"


def report(res):
    tt, eager, comp = res["twotower"], res["pytorch_eager"], res["pytorch_compile"]
    peak = res["peak_fp32_tflops"]
    print()
    print(f"== twotower vs PyTorch {res['torch_version']} on {res['device_name']}: "
          f"{tt['config']['towers']} tower(s), batch {tt['config']['batch']}, "
          f"{tt['config']['size']}x{tt['config']['size']}, width_div "
          f"{tt['config']['width_div']}, {tt['flops_per_image'] / 1e9:.3f} GFLOP/image")
    on = res['tf32']['twotower']
    if res.get("precision") == "bf16":
        print("   precision: bf16: twotower --precision bf16 (bf16 GEMM and cuDNN operands, "
              "fp32 sums, fp32 weights and update); PyTorch torch.autocast(dtype=bfloat16) "
              f"of the forward and the loss; cudnn.benchmark {res['cudnn_benchmark']}")
    else:
        print(f"   precision: FP32 storage everywhere. TF32: twotower {'on' if on else 'off'} "
              f"(cuBLAS {'TF32_TENSOR_OP' if on else 'default'} math); PyTorch "
              f"backends.cuda.matmul.allow_tf32 = {res['tf32']['pytorch_matmul']}, "
              f"backends.cudnn.allow_tf32 = {res['tf32']['pytorch_cudnn']}; cudnn.benchmark "
              f"{res['cudnn_benchmark']}")
    print(f"   twotower's convolutions: {tt.get('conv_detail', tt.get('conv', '?'))}")
    if tt.get("backend") == "cuda" and tt.get("conv_choice", tt.get("conv")) != tt.get("conv"):
        # auto's choices and times, or the tf32 / bf16 default's paths
        print(f"   twotower's --conv {tt.get('conv_choice', '?')}")
    head = f"   {'':<18}{'images/s':>11}{'ms/step':>10}{'GFLOP/s':>10}{'% peak':>8}  memory"
    print(head)

    def row(name, r, mem):
        if r is None:
            return
        if "skipped" in r or "error" in r:
            print(f"   {name:<18}{'-':>11}{'-':>10}{'-':>10}{'-':>8}  "
                  f"{'skipped' if 'skipped' in r else 'FAILED'}: {r.get('skipped') or r['error']}")
            return
        pk = f"{100 * r['gflops_per_s'] / (1e3 * peak):.1f}" if peak else "-"
        print(f"   {name:<18}{r['images_per_s']:>11.1f}{r['ms_per_step']:>10.3f}"
              f"{r['gflops_per_s']:>10.1f}{pk:>8}  {mem}")

    if tt.get("images_per_s") is not None:
        m = tt["memory"]
        if tt["backend"] == "cuda":
            mem = (f"towers {mib(sum(m['tower_device_bytes']))} + batch buffers "
                   f"{mib(m['batch_buffers_device_bytes'])} (GPU used "
                   f"{mib(m['gpu_used_after_bytes'][0])} incl. CUDA context)")
        else:
            mem = f"arenas {mib(sum(m['arena_bytes']))}, peak RSS {mib(m['rss_peak_bytes'])}"
        row("twotower", tt, mem)
    for name, r in (("PyTorch eager", eager), ("PyTorch compile", comp)):
        if r and "memory" in r:
            mm = r["memory"]
            mem = (f"max_memory_allocated {mib(mm['max_allocated_bytes'])} (reserved "
                   f"{mib(mm['max_reserved_bytes'])})" if "max_allocated_bytes" in mm else
                   f"RSS {mib(mm['rss_bytes'])} (process peak {mib(mm['rss_peak_bytes'])})")
        else:
            mem = ""
        row(name, r, mem)
    if peak:
        print(f"   peak: {peak} TFLOP/s FP32 ({res['peak_source']})")
    else:
        print(f"   peak: {res['peak_source']}")
    full = res["full_size"]
    for key, label in (("twotower_over_eager", "twotower / PyTorch eager"),
                       ("twotower_over_compile", "twotower / torch.compile")):
        v = res["ratios"].get(key)
        target = TARGETS[key]
        if v is None:
            print(f"   {label:<26} -")
            continue
        verdict = ((f"target >= {target}: {'met' if v >= target else 'NOT met'}") if full
                   else f"target >= {target} applies to the paper's net at batch 128 on a GPU")
        print(f"   {label:<26} {v:.2f}x   ({verdict})")

    prof = tt.get("profile")
    if prof:
        T = tt["config"]["towers"]
        print(f"   twotower per layer, ms per step ({prof['steps']} profiled step(s), "
              f"{prof['timer']}; towers summed):")
        print(f"     {'layer':<7}{'forward':>9}{'backward':>10}{'xchg fwd':>10}{'xchg bwd':>10}"
              f"{'fwd GF/s':>10}{'bwd GF/s':>10}")
        for L in prof["layers"]:
            def f3(v):
                return f"{v:.3f}" if v is not None else "-"
            print(f"     {L['name']:<7}{L['fwd_ms_total']:>9.3f}{L['bwd_ms_total']:>10.3f}"
                  f"{f3(L['xchg_fwd_ms']):>10}{f3(L['xchg_bwd_ms']):>10}"
                  f"{L['fwd_gflops_per_s']:>10.1f}{L['bwd_gflops_per_s']:>10.1f}")
        print(f"     data {sum(prof['data_ms']):.3f}, sgd {sum(prof['sgd_ms']):.3f}, "
              f"loss {sum(prof['loss_fwd_ms']) + sum(prof['loss_bwd_ms']):.3f}, "
              f"logits exchange {prof['logits_xchg_ms']:.3f}; profiled step "
              f"{prof['step_ms']:.3f} ms ({T} tower(s))")
    c = res["correctness"]
    if c is None:
        print("   correctness: not checked (--no-check)")
    elif "error" in c:
        print(f"   correctness: FAIL: {c['error']}")
    else:
        w = c["worst"]
        detail = ", ".join(f"{k} rel {v['rel']:.2e} (max abs {v['max_abs']:.2e}, tol "
                           f"{v['tol']:.0e})" for k, v in w.items())
        print(f"   correctness ({c['device']}, batch {c['batch']}, loss + logits + "
              f"{c['gradients']} gradients vs PyTorch): {'PASS' if c['pass'] else 'FAIL'}: "
              f"{detail}")
        if not c["pass"]:
            print(f"   past tolerance: {', '.join(c['failed'][:8])}")


def main(argv=None):
    args = parse_args(argv)
    exe = find_twotower(args.twotower)
    if args.cpu:
        device = torch.device("cpu")
    else:
        if args.gpus is None:
            args.gpus = "0" if torch.cuda.is_available() else None
            args.cpu = args.gpus is None
        device = torch.device(f"cuda:{args.gpus}" if not args.cpu else "cpu")
        if args.cpu and args.precision != "fp32":
            print(f"bench.py: --precision {args.precision} is a GPU math mode, and this "
                  "PyTorch sees no CUDA device", file=sys.stderr)
            return 2
        if not args.cpu and not torch.cuda.is_available():
            print(f"bench.py: --gpus {args.gpus}, but this PyTorch sees no CUDA device",
                  file=sys.stderr)
            return 2
    threads = args.threads or int(os.environ.get("OPENBLAS_NUM_THREADS", "0") or 0) or \
        os.cpu_count()
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads))
    torch.set_num_threads(threads)
    # the same precision as twotower: FP32 math, no TF32 rounding in GEMMs or convolutions
    # (--tf32: TF32 in both); cuDNN may pick its fastest algorithm (benchmark mode), as a
    # PyTorch user would
    torch.backends.cuda.matmul.allow_tf32 = bool(args.tf32)
    torch.backends.cudnn.allow_tf32 = bool(args.tf32)
    torch.backends.cudnn.benchmark = True

    base = {"tool": "tools/bench/bench.py", "format": 1, "torch_version": torch.__version__,
            "python": sys.executable, "twotower_program": exe, "threads": threads,
            "precision": args.precision,
            "tf32": {"twotower": bool(args.tf32),
                     "pytorch_matmul": torch.backends.cuda.matmul.allow_tf32,
                     "pytorch_cudnn": torch.backends.cudnn.allow_tf32},
            "cudnn_benchmark": True, "targets": TARGETS,
            "targets_status": "not yet measured on a GPU (docs/BENCH.md)"}
    rounds, failed = [], []
    with tempfile.TemporaryDirectory(prefix="twotower-bench-") as tmp:
        for k in range(args.rounds):
            if args.rounds > 1:
                print(f"bench.py: round {k + 1} of {args.rounds}", file=sys.stderr)
            runs, why = one_round(exe, args, env, device, base, tmp)
            rounds.append(runs)
            failed += [w for w in why if w not in failed]
        every = [res for runs in rounds for res in runs]
        # the check does not depend on the batch timed (it runs --check-batch): once
        check_res = None if args.no_check or all("error" in r["twotower"] for r in every) \
            else check(exe, args, env, device, tmp)
        if check_res is not None and not check_res["pass"]:
            failed.append("correctness")
    for k, runs in enumerate(rounds):
        for res in runs:
            res["correctness"] = check_res
            if "error" not in res["twotower"]:
                if args.rounds > 1:
                    print(f"\n== round {k + 1} of {args.rounds}")
                report(res)
    if len(every) > 1:
        summary(rounds)
    if args.json:
        def one(runs):
            return runs[0] if len(runs) == 1 else dict(base, runs=runs)
        doc = one(rounds[0]) if args.rounds == 1 else \
            dict(base, rounds=[one(runs) for runs in rounds], medians=medians(rounds))
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=1)
        print(f"   wrote {args.json}")
    if failed:
        print(f"bench.py: FAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def one_round(exe, args, env, device, base, tmp):
    """Every twotower bench of args.batches_list, then PyTorch at each batch: the runs (one
    result per batch) and what failed."""
    runs, failed = [], []
    # every twotower run first, before this process touches the GPU in this round, so its
    # memory readings hold no PyTorch context (in the first round)
    tts = []
    for b in args.batches_list:
        args.batch = b
        tts.append(run_twotower(exe, args, env, tmp))
    for b, (tt, err) in zip(args.batches_list, tts):
        args.batch = b
        res = dict(base, full_size=(b == 128 and args.size == 224 and args.width_div == 1
                                    and args.towers == 2 and args.classes == 1000
                                    and not args.cpu))
        runs.append(res)
        if tt is None:
            print(f"bench.py: batch {b}: {err}", file=sys.stderr)
            res.update(twotower={"error": err}, pytorch_eager=None, pytorch_compile=None)
            failed.append(f"twotower bench (batch {b})")
            continue
        failed += run_pytorch_side(res, tt, args, device)
    return runs, failed


def run_pytorch_side(res, tt, args, device):
    """PyTorch eager and compiled at args.batch against twotower's result tt; fills res
    and returns what failed."""
    failed = []
    res["twotower"] = tt
    res["device_name"] = (torch.cuda.get_device_name(device) if device.type == "cuda"
                          else tt["device"])
    try:
        res["pytorch_eager"] = run_torch(tt, args, device, compiled=False)
    except Exception as e:  # reported in the table and the JSON, exit code 1
        res["pytorch_eager"] = {"error": f"{type(e).__name__}: {e}"}
        failed.append("PyTorch eager")
    if args.no_compile:
        res["pytorch_compile"] = {"skipped": "--no-compile"}
    elif not hasattr(torch, "compile"):
        res["pytorch_compile"] = {"skipped": f"torch {torch.__version__} has no "
                                             "torch.compile (it came in 2.0)"}
    else:
        try:
            res["pytorch_compile"] = run_torch(tt, args, device, compiled=True)
        except Exception as e:  # compile is optional: say why and go on
            msg = str(e).strip().split("\n")[0][:300]
            res["pytorch_compile"] = {"skipped": f"torch.compile failed: "
                                                 f"{type(e).__name__}: {msg}"}
    ips = tt["images_per_s"]
    res["ratios"] = {}
    for key, name in (("twotower_over_eager", "pytorch_eager"),
                      ("twotower_over_compile", "pytorch_compile")):
        r = res[name]
        res["ratios"][key] = ips / r["images_per_s"] if r and "images_per_s" in r else None
    res["peak_fp32_tflops"], res["peak_source"] = peak_for(args, device)
    if res["peak_fp32_tflops"]:
        res["twotower_share_of_peak"] = tt["gflops_per_s"] / (1e3 * res["peak_fp32_tflops"])
    return failed


def median(values):
    v = sorted(x for x in values if x is not None)
    if not v:
        return None
    n = len(v)
    return v[n // 2] if n % 2 else 0.5 * (v[n // 2 - 1] + v[n // 2])


def ips_of(r):
    return r["images_per_s"] if r and "images_per_s" in r else None


def medians(rounds):
    """Per batch, over the rounds: the median images/s of each program and the median of
    each round's ratios."""
    out = {}
    for i, b in enumerate(r["twotower"].get("config", {}).get("batch", "?")
                          for r in rounds[0]):
        col = [runs[i] for runs in rounds if i < len(runs)]
        out[str(b)] = {
            "rounds": len(col),
            "twotower_images_per_s": median(ips_of(r["twotower"]) for r in col),
            "eager_images_per_s": median(ips_of(r.get("pytorch_eager")) for r in col),
            "compile_images_per_s": median(ips_of(r.get("pytorch_compile")) for r in col),
            "twotower_over_eager": median(r.get("ratios", {}).get("twotower_over_eager")
                                          for r in col),
            "twotower_over_compile": median(r.get("ratios", {}).get("twotower_over_compile")
                                            for r in col),
        }
    return out


def summary(rounds):
    """One line per batch and round: images/s of each and the ratios (the docs/BENCH.md
    table); with several rounds, then the medians over them."""
    def ips(v):
        return f"{v:.1f}" if v is not None else "-"

    def ratio(v):
        return f"{v:.2f}x" if v is not None else "-"

    def mem(r):
        if not r or "memory" not in r:
            return "-"
        m = r["memory"]
        if "arena_bytes" in m:
            return f"{mib(m['rss_peak_bytes'])} (arenas {mib(sum(m['arena_bytes']))})"
        if "rss_bytes" in m:
            return f"{mib(m['rss_bytes'])} (peak {mib(m['rss_peak_bytes'])})"
        return mib(m.get("max_allocated_bytes"))

    first = rounds[0][0]
    several = len(rounds) > 1
    print()
    print(f"== summary: images/s (PyTorch {first['torch_version']}, {first['threads']} "
          f"thread(s)); memory: twotower's peak RSS; PyTorch's RSS after its timed steps "
          f"(and this process's peak so far, which includes the runs before it)")
    print(f"   {'round' if several else '':>5}{'batch':>6}{'twotower':>10}{'eager':>9}"
          f"{'compile':>9}{'/eager':>8}{'/compile':>10}  memory twotower | eager | compile")
    for k, runs in enumerate(rounds):
        for res in runs:
            tt = res["twotower"]
            b = tt["config"]["batch"] if "config" in tt else "?"
            rr = res.get("ratios", {})
            print(f"   {k + 1 if several else '':>5}{b:>6}{ips(ips_of(tt)):>10}"
                  f"{ips(ips_of(res['pytorch_eager'])):>9}"
                  f"{ips(ips_of(res['pytorch_compile'])):>9}"
                  f"{ratio(rr.get('twotower_over_eager')):>8}"
                  f"{ratio(rr.get('twotower_over_compile')):>10}  {mem(tt)} | "
                  f"{mem(res['pytorch_eager'])} | {mem(res['pytorch_compile'])}")
    if several:
        for b, m in medians(rounds).items():
            print(f"   {'median':>5}{b:>6}{ips(m['twotower_images_per_s']):>10}"
                  f"{ips(m['eager_images_per_s']):>9}{ips(m['compile_images_per_s']):>9}"
                  f"{ratio(m['twotower_over_eager']):>8}"
                  f"{ratio(m['twotower_over_compile']):>10}  (over {m['rounds']} rounds; "
                  f"the ratios' medians are of each round's ratios)")


if __name__ == "__main__":
    sys.exit(main())
