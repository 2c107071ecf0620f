#!/usr/bin/env bash
# run_main.sh: README command (a). Installs the packages, builds, and trains the two-tower
# net on Fashion-MNIST: on a GPU when there is one, else a short CPU run (~10 minutes on
# 2 cores) that ends with a test accuracy. Extra arguments go to `twotower train`.
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/deps.sh
[ -f build/build.ninja ] || meson setup build --buildtype=release
meson compile -C build
if ./build/twotower train --gpus 0 --epochs 1 --quiet --train-limit 1 --test-limit 1 \
     >/dev/null 2>&1; then
  exec ./build/twotower train --gpus 0 --epochs 30 "$@"
fi
exec ./build/twotower train --cpu --epochs 1 --train-limit 8192 --test-limit 2000 "$@"
