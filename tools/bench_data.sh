#!/bin/sh
# tools/bench_data.sh [BUILD_DIR]: the data path's speed (issue 4 item 6), a benchmark and
# not a timed test. Prints prep's images/s on a generated ImageNet-style folder and on
# Fashion-MNIST, then what the prefetcher delivers (float batches = CPU path with the
# augmentation done on the host; uint8 crops = GPU path, arithmetic on the device).
# Needs about 1 GB in $TMPDIR for a while; removes what it wrote.
set -eu
build=${1:-build}
root=$(cd "$(dirname "$0")/.." && pwd)
meson compile -C "$build" bench_data make_image_folder >/dev/null
bd=$build/tests/data/bench_data
mk=$build/tests/data/make_image_folder
tmp=$(mktemp -d "${TMPDIR:-/tmp}/tt_bench_data_XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fm=/usr/share/datasets/fashion-mnist

echo "== prep, generated folder (8 classes x 64 PNG/JPEG images, 180..400 px a side)"
"$mk" "$tmp/folder" --classes 8 --per-class 64 --no-bad
"$bd" prep "$tmp/folder" "$tmp/folder_shards" --quiet 2>&1 | tail -1
if [ -f "$fm/train-images-idx3-ubyte.gz" ]; then
    echo "== prep, Fashion-MNIST (first 3000 train + 3000 test images, 28 -> 256)"
    "$bd" prep "$fm" "$tmp/fm_shards" --quiet --limit 3000 2>&1 | tail -1
    echo "== loader, Fashion-MNIST IDX (upscaled on the fly), B=128, crop 224"
    "$bd" loader --idx "$fm" --batches 30
    echo "== loader, Fashion-MNIST shards (mmap), B=128, crop 224"
    "$bd" loader --shards "$tmp/fm_shards" --batches 30
fi
echo "== loader, generated-folder shards (mmap), B=128, crop 224"
"$bd" loader --shards "$tmp/folder_shards" --batches 30
