#!/usr/bin/env bash
# run_main.sh: README command (a). Installs the packages, builds, and trains the paper's
# two-tower net on Fashion-MNIST, then prints the test accuracy and the time it all took.
# - With a GPU (nvidia-smi lists one): the full run, `twotower train --epochs 30` (all
#   60,000 training images an epoch at 224x224, the paper's init and schedule).
# - Without one: a short CPU run (no CUDA in the build) of the same two-tower net: three
#   epochs of all 60,000 images at 74x74 (the paper's random crops, 222 of the 256 pixels,
#   averaged 3x3), widths / 4, batch 64, PyTorch's init, the paper's SGD and its schedule
#   (lr 0.01, divided by 10 when the validation error stops improving), judged every half
#   epoch on all 10,000 test images: an improvement under 1 point counts as stopped
#   (--patience 1 --min-delta 0.01). The last evaluation (centre crop) is printed.
# Extra arguments go to `twotower train`.
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$(date +%s)
source tools/deps.sh
gpu=0
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then
  gpu=1
fi
if [ $gpu = 1 ]; then
  build=build
  [ -f $build/build.ninja ] || meson setup $build --buildtype=release
else
  build=build-cpu # the CUDA files take minutes to compile and a CPU run needs none
  [ -f $build/build.ninja ] || meson setup $build --buildtype=release -Dcuda=disabled
fi
meson compile -C $build
run=runs/main-$(date +%Y%m%d-%H%M%S)
if [ $gpu = 1 ]; then
  ./$build/src/train/twotower train --epochs 30 --run "$run" "$@"
else
  ./$build/src/train/twotower train --cpu --size 74 --downsample 3 --width-div 4 \
    --init torch --batch 64 --epochs 3 --eval-every 469 --patience 1 --min-delta 0.01 \
    --run "$run" "$@"
fi
/usr/bin/python3 - "$run" "$t0" <<'EOF'
import json, sys, time
run, t0 = sys.argv[1], int(sys.argv[2])
ev = [r for r in map(json.loads, open(run + "/metrics.jsonl")) if r.get("type") == "eval"]
s = int(time.time()) - t0
if ev:
    e = ev[-1]
    print(f"run_main.sh: test accuracy {100 * (1 - e['top1_err_center']):.2f}% on "
          f"{e['images']:,} test images (top-5 error {100 * e['top5_err_center']:.2f}%) after "
          f"{e['epoch']:g} epoch(s); {s // 60} min {s % 60} s in all, set-up and build "
          f"included; run folder {run}")
else:
    print(f"run_main.sh: no evaluation in {run}/metrics.jsonl; {s // 60} min {s % 60} s")
EOF
