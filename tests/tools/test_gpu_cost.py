#!/usr/bin/python3
"""test_gpu_cost.py BUILD TWOTOWER JSON: tools/gpu_cost --quick on this build. Asserts that
the shapes it computes are summary's, that every CUDA object embeds PTX, that -lineinfo
changes no instruction, that every kernel of the build is counted (a finite, positive
instruction count, the 64-bit count no smaller) and every kernel of the step model is in
the build, that every layer of the step and every precision has a finite predicted time,
that the step before the fused LRN + max-pool is predicted beside it, and that the report
names what it counted from and marks itself predicted, and that the step model casts to
bf16 where net_cuda.cu does. No timing and no particular number is asserted. Exit 77
(skip) without nvcc or a CUDA build."""
import json
import math
import os
import subprocess
import sys

root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
build, exe, out = sys.argv[1:4]
tool = os.path.join(root, "tools", "gpu_cost", "gpu_cost.py")
r = subprocess.run([sys.executable, tool, "--quick", "--build", build, "--json", out,
                    "--check-summary", exe, "--check-lineinfo", "--check-ptx"], capture_output=True, text=True)
sys.stdout.write(r.stdout)
sys.stderr.write(r.stderr)
if r.returncode == 77:
    sys.exit(77)
fails = []


def check(cond, what):
    if not cond:
        fails.append(what)
        print("FAIL:", what)


# count.py's chains from nvdisasm -gi: an instruction's line, then the call sites it was
# inlined at, one level a line; a position line with no instruction after it adds to the
# chain of the next instruction only
sys.path.insert(0, os.path.join(root, "tools", "gpu_cost"))
import count  # noqa: E402
sample = """//--------------------- .text._Z1kv --------------------------
        /*0000*/                   MOV R1, c[0x0][0x28] ;
	//## File "/x/kernels.h", line 130 inlined at "/x/kernels.h", line 497
	//## File "/x/kernels.h", line 497 inlined at "/x/layers.cu", line 739
        /*0010*/                   LDG.E R2, [R4] ;
        /*0020*/                   FFMA R3, R2, R2, R3 ;
	//## File "/x/layers.cu", line 741
        /*0030*/                   EXIT ;
"""
ins = count.parse_sass(sample)["_Z1kv"][0]
check([i.chain for i in ins] == [(), (("kernels.h", 130), ("kernels.h", 497), ("layers.cu", 739)),
                                 (("kernels.h", 130), ("kernels.h", 497), ("layers.cu", 739)),
                                 (("layers.cu", 741),)],
      f"count.parse_sass's inlined-at chains: {[i.chain for i in ins]}")
check([i.line for i in ins] == [None, ("kernels.h", 130), ("kernels.h", 130), ("layers.cu", 741)],
      "count.parse_sass's innermost lines")
check(r.returncode == 0, f"gpu_cost exited {r.returncode}")
if r.returncode == 0:
    j = json.load(open(out))
    text = r.stdout
    check("PREDICTED" in text, "the report marks its numbers predicted")
    # the convolution path per layer: GEMM and cuDNN in every precision, finite; the
    # default each precision's verdict gives is the one `twotower train --help` states
    # (train_placement_conv_default), so a prediction that changes it fails here
    cp, verdict = j.get("conv_paths") or {}, j.get("conv_default") or {}
    check(sorted(cp) == ["conv1", "conv2", "conv3", "conv4", "conv5"], f"conv_paths rows {sorted(cp)}")
    for layer, per in cp.items():
        for p, v in per.items():
            check(all(isinstance(v[k], float) and math.isfinite(v[k]) and v[k] > 0
                      for k in ("gemm_ms", "cudnn_ms")), f"{layer} {p}: {v}")
    check(set(verdict) == {"fp32", "tf32", "bf16"} and set(verdict.values()) <= {"gemm", "cudnn"},
          f"conv_default {verdict}")
    h = subprocess.run([exe, "train", "--help"], capture_output=True, text=True).stdout
    import re  # noqa: E402
    # --conv's own lines: its help's continuation lines (indented past the flag column),
    # the last of them "(default: ...)"
    m = re.search(r"\n  --conv gemm\|cudnn\|auto\n(?: {10,}\S.*\n)*? {10,}\(default: ([^)]*)\)\n", h)
    stated = {}
    for path, precs in re.findall(r"(gemm|cudnn) in ((?:fp32|tf32|bf16)(?:(?:, | and )"
                                  r"(?:fp32|tf32|bf16))*)", m.group(1) if m else ""):
        for p in re.findall(r"fp32|tf32|bf16", precs):
            stated[p] = path
    check(stated == verdict, f"twotower's --conv default {stated} (from --help: "
          f"{m.group(1) if m else 'not found'}) is not the prediction's {verdict}")
    check(j["source"] in ("sass", "ptx") and
          ("counted from: " + ("SASS" if j["source"] == "sass" else "PTX")) in text,
          "the report names what it counted from")
    check(len(j["kernels"]) >= 15, f"kernels counted: {len(j['kernels'])}")
    for name, k in j["kernels"].items():
        check(math.isfinite(k["instructions"]) and k["instructions"] > 0,
              f"{name}: instructions {k['instructions']}")
        check(k["instructions_64bit"] >= k["instructions"], f"{name}: 64-bit count below")
    check(not j["missing"], f"kernels of the step model missing from the build: {j['missing']}")
    for name in ("im2col_chunk_kernel", "col2im_chunk_kernel", "lrn_maxpool_forward_kernel",
                 "lrn_maxpool_backward_kernel", "maxpool_forward_kernel", "sgd_arena_step_kernel",
                 "augment_kernel"):
        check(j["kernels"].get(name, {}).get("in_step"), f"{name} is in the step model")
    for name in ("lrn_forward_kernel", "lrn_backward_kernel"):  # counted, not in the step
        check(name in j["kernels"] and not j["kernels"][name]["in_step"],
              f"{name}: counted, and not in the fused step")
    want = ["data", "conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8", "loss",
            "update"]
    check(list(j["layers"]) == want, f"layers {list(j['layers'])}")
    for layer, row in j["layers"].items():
        for p in ("fp32", "tf32", "bf16"):
            check(math.isfinite(row[p + "_ms"]) and row[p + "_ms"] > 0, f"{layer} {p}")
    for layer in want[1:9]:
        check(j["layers"][layer]["flops"] > 0 and j["layers"][layer]["bytes"] > 0,
              f"{layer}: FLOPs and bytes")
    for p, v in j["predicted"].items():
        check(math.isfinite(v["step_ms"]) and v["step_ms"] > 0 and v["images_per_s"] > 0,
              f"predicted {p}: {v}")
    check(j["predicted"]["tf32"]["step_ms"] <= j["predicted"]["fp32"]["step_ms"],
          "TF32 no slower than FP32")
    # bf16 is implemented: its own step (half the col and gradient bytes, the casts) is
    # no slower than TF32's, and the report says what it covers
    check(j["predicted"]["bf16"]["step_ms"] <= j["predicted"]["tf32"]["step_ms"],
          "bf16 no slower than TF32")
    check("implemented: bf16 GEMM operands, fp32 activations" in text,
          "the bf16 line says what is implemented")
    for name in ("im2col_chunk_bf16_kernel", "to_cnhw_bf16_kernel", "cast_bf16_kernel"):
        check(name in j["kernels"], f"{name} is counted")
    for p, v in j["predicted"].items():  # the step before the fused LRN + max-pool beside it
        u = v.get("unfused_step_ms")
        check(isinstance(u, float) and math.isfinite(u) and u > 0, f"{p}: unfused step {u}")
    check("before, LRN and max-pool unfused" in text, "the unfused step beside the fused")
    check("35000 images/s" in text, "the target beside the prediction")
    # --conv cudnn beside it: every precision's step on cuDNN's calls, finite; bf16 no
    # slower than fp32 there; its cast kernels counted from the build; the copy stream's
    # upload reported beside the step, not in it
    for p, v in j["predicted"].items():
        c = v.get("cudnn_step_ms")
        check(isinstance(c, float) and math.isfinite(c) and c > 0, f"{p}: cuDNN step {c}")
        check(isinstance(v.get("copy_stream_ms"), float) and v["copy_stream_ms"] > 0,
              f"{p}: copy stream {v.get('copy_stream_ms')}")
    check(j["predicted"]["bf16"]["cudnn_step_ms"] <= j["predicted"]["fp32"]["cudnn_step_ms"],
          "bf16 on cuDNN no slower than fp32 on cuDNN")
    b = j["predicted"]["bf16"]
    check(b.get("cudnn_at_25pct_images_per_s", 0) < b.get("cudnn_at_50pct_images_per_s", 0)
          < b["cudnn_images_per_s"], "cuDNN's sensitivity: slower calls, fewer images/s")
    for name in ("cudnn_out_bf16_kernel", "grad_bf16_kernel", "add_bf16_kernel",
                 "add_bf16_block_kernel"):
        check(name in j["kernels"] or name in j["counted"], f"{name} is counted")
    # --bf16-acts beside it: its step, and the kernels it runs counted from the build
    k = b.get("cudnn_bf16_acts_step_ms")
    check(isinstance(k, float) and math.isfinite(k) and k > 0, f"--bf16-acts step {k}")
    check("bf16 with --bf16-acts" in text, "the --bf16-acts line in the report")
    for name in ("cudnn_act_bf16_kernel", "lrn_maxpool_forward_h_kernel",
                 "lrn_maxpool_backward_g_h_kernel", "grad_bf16_h_kernel"):
        check(name in j["kernels"], f"{name} is counted")
    check("--conv cudnn" in text and "copy stream, beside the step" in text,
          "the cuDNN step and the copy stream in the report")
    for layer in want:
        check(math.isfinite(j["layers"][layer]["bf16_cudnn_ms"]), f"{layer}: bf16 cuDNN")
# the step model's bf16 casts follow net_cuda.cu: bf16 on cuDNN, conv1 reads the bf16 copy
# the augmentation writes, conv2 the one conv1's fused LRN + max-pool writes, conv4 and
# conv5 the ones conv3 and conv4 write (no casts); an fc layer casts its gathered input once (forward) and its output gradient once
# (backward) per tower, whatever its sources; on the GEMM path the convolutions cast none
sys.path.insert(0, os.path.join(root, "tools", "gpu_cost"))
import model  # noqa: E402

for conv, want in (("cudnn", {"conv3": 4, "fc6": 4, "fc7": 4, "fc8": 4}),
                   ("gemm", {"fc6": 4, "fc7": 4, "fc8": 4})):
    _, ops = model.step_ops(128, precision="bf16", conv=conv)
    casts = {}
    for op in ops:
        if op.name == "cast_bf16_kernel":
            casts[op.layer] = casts.get(op.layer, 0) + 1
    check(casts == want, f"--conv {conv} bf16: casts per layer {casts}, want {want}")
print(f"test_gpu_cost: {len(fails)} failed" if fails else "test_gpu_cost: all checks passed")
sys.exit(1 if fails else 0)
