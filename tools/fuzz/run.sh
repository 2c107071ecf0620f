#!/bin/sh
# tools/fuzz/run.sh SECONDS: builds the libFuzzer harnesses of src/data with clang
# (-fsanitize=fuzzer,address,undefined) into build-fuzz/ and runs each for SECONDS,
# starting from seed corpora made by the fixture generator and prep. Exits non-zero
# when a harness finds a crash, a leak, undefined behaviour or a timeout. FUZZ_SEED
# (default 1) seeds libFuzzer's mutations, so a run repeats the same inputs in the same
# order (how far it gets in SECONDS depends on the machine); FUZZ_SEED=0 draws a new seed.
set -eu
secs=${1:-20}
seed=${FUZZ_SEED:-1}
root=$(cd "$(dirname "$0")/../.." && pwd)
out=$root/build-fuzz
mkdir -p "$out"
cc=${CC_FUZZ:-clang}
flags="-g -O1 -std=c17 -D_GNU_SOURCE -fno-sanitize-recover=undefined -I$root/src -I$root/tools/make_image_folder $(pkg-config --cflags libpng matio)"
libs="$(pkg-config --libs libpng libjpeg zlib matio) -lm -lpthread"
# src/base too: the readers open their files through it, prep parses its flags with it
# (its version string is meson's); val_labels.c: prep's ILSVRC-2012 validation labels
srcs="$root/src/data/image.c $root/src/data/shard.c $root/src/data/source.c $root/src/data/augment.c $root/src/data/prefetch.c $root/src/data/prep.c $root/src/data/val_labels.c $root/src/base/base.c $root/src/base/file.c $root/src/base/flags.c"
flags="$flags -DTT_VERSION=\"fuzz\""

for h in image shard; do
    $cc $flags -fsanitize=fuzzer,address,undefined "$root/tools/fuzz/fuzz_$h.c" $srcs $libs -o "$out/fuzz_$h"
done

# seeds: every PNG mode and JPEG kind the generator writes, the bad files, one real shard
# and meta.bin
if [ ! -d "$out/seed_image" ]; then
    $cc $flags "$root/tools/make_image_folder/main.c" "$root/tools/make_image_folder/imgfix.c" $libs -o "$out/make_image_folder"
    $cc $flags "$root/tools/bench_data/bench_data.c" $srcs $libs -o "$out/bench_data"
    rm -rf "$out/seedsrc" "$out/seedout"
    "$out/make_image_folder" "$out/seedsrc" --classes 2 --per-class 8 >/dev/null
    mkdir -p "$out/seed_image" "$out/seed_shard"
    for f in "$out"/seedsrc/class_*/*.png "$out"/seedsrc/class_*/*.jpg; do
        [ -f "$f" ] && [ -s "$f" ] && [ "$(stat -c %s "$f")" -le 65536 ] &&
            cp "$f" "$out/seed_image/" || true
    done
    # a one-class, one-image tree: the smallest real shard and meta.bin
    mkdir -p "$out/seedtree/only"
    cp "$out"/seedsrc/class_01/img_0000.* "$out/seedtree/only/"
    "$out/bench_data" prep "$out/seedtree" "$out/seedout" --quiet --val-fraction 0 >/dev/null
    { printf '\000'; cat "$out/seedout/train-00000.tts"; } > "$out/seed_shard/shard"
    { printf '\001'; cat "$out/seedout/meta.bin"; } > "$out/seed_shard/meta"
fi
mkdir -p "$out/corpus_image" "$out/corpus_shard"
status=0
"$out/fuzz_image" -seed="$seed" -max_total_time="$secs" -max_len=65536 -rss_limit_mb=2048 -timeout=10 \
    -print_final_stats=1 "$out/corpus_image" "$out/seed_image" || status=1
"$out/fuzz_shard" -seed="$seed" -max_total_time="$secs" -max_len=1048576 -rss_limit_mb=2048 -timeout=10 \
    -print_final_stats=1 "$out/corpus_shard" "$out/seed_shard" || status=1
exit $status
