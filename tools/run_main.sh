#!/usr/bin/env bash
# run_main.sh: README command (a). Installs the packages, builds, and trains the two-tower
# net on Fashion-MNIST: on the GPU(s) when nvidia-smi lists any (30 epochs, the paper's
# schedule), else a short CPU run (one epoch of 8,192 images, ~6-10 minutes on 2 cores)
# that ends with a test accuracy. Extra arguments go to `twotower train`.
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/deps.sh
[ -f build/build.ninja ] || meson setup build --buildtype=release
meson compile -C build
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then
  exec ./build/src/train/twotower train --epochs 30 "$@"
fi
exec ./build/src/train/twotower train --cpu --epochs 1 --train-limit 8192 --test-limit 2000 "$@"
