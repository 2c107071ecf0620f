#!/usr/bin/env bash
# gpu_check.sh: the one GPU check of twotower (docs/GPU.md). On a machine with an NVIDIA GPU
# it builds (or takes a build made elsewhere), runs the GPU tests, times the step in every
# precision and convolution path beside tools/gpu_cost's prediction, benchmarks against
# PyTorch on the same GPU (tools/bench/bench.py), times the training step as one CUDA
# graph against the uncaptured step (--graph on, off and auto), trains one epoch of
# Fashion-MNIST in the single-GPU fallback (fp32, bf16, bf16 on cuDNN: images/s and test
# accuracy), and runs compute-sanitizer (memcheck, synccheck, initcheck, racecheck) over a
# few training steps.
# Logs go to ./gpu-check-logs; with $OUT set (the lent machine, which sends back at most 8
# files) to $TMPDIR/gpu-check-logs (/tmp), packed after every stage into $OUT/logs.tgz
# beside a copy of $OUT/summary.txt, so what ran comes back even when a later stage is cut
# off. Its other scratch (the unpacked carry, run folders) goes to $TMPDIR too.
#
#   tools/gpu_check.sh [--carry DIR] [--build DIR] [--data DIR] [--stages LIST] [--size N]
#                      [--bench-args "ARGS"] [--sanitizers LIST] [--deadline S]
#   tools/gpu_check.sh --prepare-carry [DIR]      (on a Debian 12 machine with nvcc)
#
# --deadline S: no program starts after S seconds from the start (it is noted as not
# started), and each runs under `timeout` for at most its stage's cap or what is left;
# default none, 300 with $OUT set (the lent machine: 15 minutes in all, start-up included,
# so a call of about 5 minutes leaves room for a second one). Stages run in this order, the
# most wanted first: tests, cost, bench, graph, epoch, sanitize.
#
# --prepare-carry builds here (-Dcuda=enabled; once with the cuDNN path, once without) and
# packs, into DIR (default carry/), what a bare GPU machine lacks: gpu-carry.tar.xz (the
# build folders and every shared library their programs need that is not glibc, CUDA or
# cuDNN: cuDNN is the machine's, e.g. PyTorch's wheel's), fashion-mnist/ and gpu_cost.json
# (tools/gpu_cost's prediction, made here). On the GPU machine, --carry DIR unpacks that and
# uses it. --stages: any of tests,graph,sanitize,epoch,bench,cost (default all of them);
# graph runs `twotower bench --gpus 0` with --graph off, on and
# auto at batches 128 and 16 and puts their images/s side by side (passing when every run
# ends, their losses agree and auto kept the graph: its check found the replayed step's
# bits equal to the uncaptured step's);
# bench runs tools/bench/bench.py (twotower vs PyTorch, docs/BENCH.md) with the python3 that
# has torch, passing it --bench-args; cost runs `twotower bench` at batch 128 and puts its
# per-layer times beside tools/gpu_cost's predicted ones (and ncu's counts of the work
# list's kernels when ncu is installed), then the same bench with --precision tf32 and
# bf16, on --conv gemm and (built with cuDNN) --conv cudnn, each step's images/s beside its
# predicted one. --sanitizers: the compute-sanitizer tools of the
# sanitize stage, run in the order given (default memcheck,synccheck,initcheck,racecheck,
# the slowest last; what each can see is written above the stage).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
root=$PWD

carry="" build="" data="" stages="tests,cost,bench,graph,epoch,sanitize" size="" prepare="" prep_dir="carry"
bench_args="" sanitizers="memcheck,synccheck,initcheck,racecheck" deadline=""
while [ $# -gt 0 ]; do
    case "$1" in
        --carry) carry=$2; shift 2 ;;
        --build) build=$2; shift 2 ;;
        --data) data=$2; shift 2 ;;
        --stages) stages=$2; shift 2 ;;
        --size) size=$2; shift 2 ;;
        --bench-args) bench_args=$2; shift 2 ;;
        --sanitizers) sanitizers=$2; shift 2 ;;
        --deadline) deadline=$2; shift 2
                    [[ $deadline =~ ^[0-9]+$ ]] || { echo "gpu_check: --deadline '$deadline': expected whole seconds" >&2; exit 2; } ;;
        --prepare-carry) prepare=1; shift; if [ $# -gt 0 ] && [ "${1#--}" = "$1" ]; then prep_dir=$1; shift; fi ;;
        -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d'; exit 0 ;;
        *) echo "gpu_check: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done

say() { echo "gpu_check: $*"; }
die() { echo "gpu_check: $*" >&2; exit 1; }
[ -d /usr/local/cuda/bin ] && export PATH="/usr/local/cuda/bin:$PATH"

# ---- on the development machine: build here, pack what the GPU machine lacks -------------
if [ -n "$prepare" ]; then
    command -v nvcc >/dev/null || die "--prepare-carry needs nvcc (the CUDA toolkit) here"
    # two builds: the full one (cuDNN path included when cuDNN is here) and one without
    # cuDNN, used there if the GPU machine has no libcudnn.so.9 to give the first
    b="build-gpu-carry" b2="build-gpu-carry-nocudnn"
    [ -f $b/build.ninja ] || meson setup $b -Dcuda=enabled -Dbuildtype=release >/dev/null ||
        die "meson setup failed (see $b/meson-logs/meson-log.txt)"
    [ -f $b2/build.ninja ] || meson setup $b2 -Dcuda=enabled -Dcudnn=disabled \
        -Dbuildtype=release >/dev/null || die "meson setup failed (see $b2/meson-logs/meson-log.txt)"
    for d in $b $b2; do
        ninja -C $d -j "${JOBS:-1}" >/dev/null || die "the build failed: run ninja -C $d"
    done
    stage=$(mktemp -d)
    mkdir -p "$stage/lib" "$prep_dir"
    # the build folders without objects (programs, test programs, meson's own files)
    tar -C "$root" --exclude='*.o' --exclude='*.a' --exclude='*.p' --exclude=meson-private \
        -cf - "$b" "$b2" | tar -C "$stage" -xf -
    # shared libraries the programs need, except glibc's and the CUDA ones (the GPU machine
    # has its own driver and toolkit); resolved through symlinks, kept under their sonames
    deps=$(find "$b" "$b2" -type f -perm -u+x ! -name '*.so*' ! -name '*.py' ! -name '*.sh' -print0 |
           xargs -0 -r ldd 2>/dev/null)
    if grep -q 'not found' <<<"$deps"; then
        die "the builds need libraries the loader cannot find here, so they cannot be carried: $(grep 'not found' <<<"$deps" | awk '{print $1}' | sort -u | tr '\n' ' ')"
    fi
    awk '/=> \//{print $1, $3}' <<<"$deps" | sort -u |
        grep -vE '^(libc|libm|libdl|libpthread|librt|libresolv|libutil|libanl|libnss[a-z_]*|ld-linux[a-z0-9_-]*|libstdc\+\+|libgcc_s|libcuda|libcudart|libcublas|libcublasLt|libnccl|libcudnn[a-z_]*|libnvidia[a-z-]*)[.]' |
        while read -r soname path; do cp -L "$path" "$stage/lib/$soname"; done
    tar -C "$stage" -cJf "$prep_dir/gpu-carry.tar.xz" . || die "packing failed"
    rm -rf "$stage"
    src=/usr/share/datasets/fashion-mnist
    [ -d $src ] || die "$src not found: the epoch stage needs Fashion-MNIST (apt-get install dataset-fashion-mnist)"
    mkdir -p "$prep_dir/fashion-mnist" && cp $src/*.gz "$prep_dir/fashion-mnist/" ||
        die "cannot copy Fashion-MNIST into $prep_dir/fashion-mnist"
    # the prediction, from this machine's nvcc (and nvdisasm when found): the cost stage
    # compares it with the GPU's measured times without compiling anything there
    /usr/bin/python3 tools/gpu_cost/gpu_cost.py --build $b --fetch-tools --json "$prep_dir/gpu_cost.json" \
        >"$prep_dir/gpu_cost.txt" || die "tools/gpu_cost failed (see $prep_dir/gpu_cost.txt)"
    say "packed $(du -sh "$prep_dir" | cut -f1) into $prep_dir/: $(ls "$prep_dir" | tr '\n' ' ')"
    # what a call sends: the tracked tree and the carry, 64 MiB at most
    kib=$(( $(du -sk "$prep_dir" | cut -f1) + $(git ls-files -z | xargs -0 du -sk 2>/dev/null | awk '{s += $1} END {print s + 0}') ))
    if [ "$kib" -gt $((60 * 1024)) ]; then
        die "$prep_dir and the tracked files come to $((kib / 1024)) MiB: over 60 of the 64 MiB a call may send"
    fi
    say "$prep_dir and the tracked files: $((kib / 1024)) MiB of the 64 MiB a call may send"
    say "on the GPU machine: tools/gpu_check.sh --carry $prep_dir"
    exit 0
fi

# ---- on the GPU machine -------------------------------------------------------------------
orig_ldp=${LD_LIBRARY_PATH-}   # the machine's own, for PyTorch (the bench stage)
tmpd=${TMPDIR:-/tmp}
if [ -n "${OUT:-}" ]; then
    logs=$tmpd/gpu-check-logs
    rm -rf "$logs"
    [ -n "$deadline" ] || deadline=300
else
    logs=$root/gpu-check-logs
fi
mkdir -p "$logs"
summary=$logs/summary.txt
: >"$summary"
note() { echo "$*" | tee -a "$summary"; }
die() { echo "gpu_check: $*" >&2; echo "gpu_check: stopped: $*" >>"$summary"; exit 1; }
failed=0
t0=$SECONDS
# pack: with $OUT set, summary.txt and logs.tgz (every log) into $OUT: two files. A log over
# 8 MiB (a sanitizer's thousands of reports) is cut to its first and last 3 MiB, and, should
# the archive still pass the 16 MiB a file may come back in, every log over 1 MiB to its
# first and last 256 KiB
cut_logs() { # cut_logs OVER KEEP
    local f
    while IFS= read -r -d '' f; do
        { head -c "$2" "$f"; printf '\n[... cut by gpu_check: %s bytes in all ...]\n' "$(stat -c %s "$f")"
          tail -c "$2" "$f"; } >"$f.cut" && mv "$f.cut" "$f"
    done < <(find "$logs" -type f -size +"$1" -print0)
}
pack() {
    [ -n "${OUT:-}" ] || return 0
    cut_logs 8M 3M
    cp "$summary" "$OUT/summary.txt"
    tar -C "$logs" -czf "$OUT/logs.tgz.part" . || return 0
    if [ "$(stat -c %s "$OUT/logs.tgz.part")" -gt $((15 * 1024 * 1024)) ]; then
        cut_logs 1M 256K
        tar -C "$logs" -czf "$OUT/logs.tgz.part" . || return 0
    fi
    mv "$OUT/logs.tgz.part" "$OUT/logs.tgz"
}
trap pack EXIT
# capped CAP CMD...: CMD under timeout, for at most CAP seconds and never past the deadline;
# 200 (and a line on stdout, which the caller's log takes) when too little is left to start
left() { if [ -n "$deadline" ]; then echo $((deadline - (SECONDS - t0))); else echo 1000000; fi; }
capped() {
    local cap=$1 l
    shift
    l=$(left)
    if [ "$l" -lt 20 ]; then
        echo "gpu_check: not started, $l s left before the deadline: $*"
        return 200
    fi
    [ "$l" -lt "$cap" ] && cap=$l
    timeout -k 10 "$cap" "$@"
}
# why RC: a program's exit status in words, for the summary
why() {
    case $1 in
        124|137) echo "cut off by its time limit" ;;
        200) echo "not started: the deadline (--deadline) was near" ;;
        *) echo "exit $1" ;;
    esac
}
# stage NAME: a line with the time so far when a stage begins (the lines show how long each
# took, for planning the next run), and the logs packed after the one before
stage() { pack; note "--- $1 at $((SECONDS - t0)) s${deadline:+ (deadline $deadline s)}"; }

command -v nvidia-smi >/dev/null || die "nvidia-smi not found: this is not a machine with an NVIDIA GPU"
nvidia-smi -L >"$logs/gpus.txt" 2>&1 || die "nvidia-smi -L failed: $(cat "$logs/gpus.txt")"
ngpus=$(grep -c '^GPU ' "$logs/gpus.txt")
note "GPUs: $ngpus ($(head -1 "$logs/gpus.txt"))"
[ "$ngpus" -ge 1 ] || die "no GPU listed by nvidia-smi"
# what the machine is, for reading the numbers later
{
    echo "=== nvidia-smi"; nvidia-smi 2>&1
    echo "=== os"; cat /etc/os-release 2>&1; uname -a; ldd --version 2>&1 | head -1
    echo "=== nvcc"; nvcc --version 2>&1
    echo "=== compute-sanitizer"; compute-sanitizer --version 2>&1 | head -3
    echo "=== ncu"; ncu --version 2>&1 | head -3
    echo "=== python3"; python3 -c 'import sys, torch; print(sys.version); print("torch", torch.__version__, torch.version.cuda)' 2>&1
    echo "=== cores"; nproc
} >"$logs/machine.txt" 2>&1

# the python3 that reads the JSON files below (the bench stage looks for one with torch)
py=$(command -v python3 || command -v /usr/bin/python3)

# CUDA and NCCL libraries: the toolkit's, or those of pip's nvidia-* wheels
libpath=""
[ -d /usr/local/cuda/lib64 ] && libpath=/usr/local/cuda/lib64
for cand in python3 /opt/torch/.venv/bin/python3; do
    d=$($cand -c 'import nvidia, os; print(os.path.dirname(list(nvidia.__path__)[0]))' 2>/dev/null) || continue
    for l in "$d"/nvidia/*/lib; do [ -d "$l" ] && libpath="$libpath:$l"; done
    break
done

if [ -n "$carry" ]; then
    [ -f "$carry/gpu-carry.tar.xz" ] || die "$carry/gpu-carry.tar.xz not found: make it with --prepare-carry on the development machine and carry that folder"
    unpacked=$tmpd/twotower-carry
    rm -rf "$unpacked"; mkdir -p "$unpacked"
    # tar's -J needs the xz program; Python's tarfile reads the archive without it
    tar -C "$unpacked" -xJf "$carry/gpu-carry.tar.xz" 2>"$logs/unpack.log" ||
        python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' \
            "$carry/gpu-carry.tar.xz" "$unpacked" 2>>"$logs/unpack.log" ||
        die "cannot unpack $carry/gpu-carry.tar.xz: $(tail -2 "$logs/unpack.log" | tr '\n' ' ')"
    build=${build:-$unpacked/build-gpu-carry}
    # the carried libraries only fill gaps: where the machine has a library, its own is used
    have_libs=$(ldconfig -p 2>/dev/null | awk '{print $1}')
    for f in "$unpacked"/lib/*; do
        [ -e "$f" ] || continue
        so=$(basename "$f")
        if grep -qxF "$so" <<<"$have_libs"; then rm -f "$f"; fi
    done
    note "carried libraries used: $(cd "$unpacked/lib" && ls | tr '\n' ' ')"
    libpath="$unpacked/lib:$libpath"
    [ -z "$data" ] && [ -d "$carry/fashion-mnist" ] && data=$carry/fashion-mnist
fi
export LD_LIBRARY_PATH="$libpath${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
data=${data:-/usr/share/datasets/fashion-mnist}

if [ -z "$build" ]; then
    # build here: needs meson, ninja, nvcc and the libraries' development files
    build="build-gpu"
    missing=()
    for t in meson ninja nvcc pkg-config; do command -v $t >/dev/null || missing+=("$t"); done
    for p in openblas libpng libjpeg zlib criterion; do
        pkg-config --exists $p 2>/dev/null || missing+=("$p (development files)")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        die "cannot build here, missing: ${missing[*]}. Either install them (Debian: tools/deps.sh) or, on a Debian 12 machine with nvcc, run tools/gpu_check.sh --prepare-carry and pass --carry carry here (docs/GPU.md)"
    fi
    cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d .)
    [ -f $build/build.ninja ] || meson setup $build -Dcuda=enabled -Dgpu_arch="${cap:-90}" \
        >"$logs/build.log" 2>&1 || { tail -30 "$logs/build.log"; die "meson setup failed"; }
    ninja -C $build >>"$logs/build.log" 2>&1 || { tail -30 "$logs/build.log"; die "build failed"; }
    note "built in $build for sm_${cap:-90}"
fi
exe=$build/src/train/twotower
[ -x "$exe" ] || die "$exe not found: not a twotower build folder ($build)"
# cuDNN (--conv cudnn) is never carried (its engines are hundreds of MiB): use the machine's,
# which may live outside the loader's path (PyTorch's pip wheels ship it in site-packages)
# (ldd read once into a variable: `ldd | grep -q` can end ldd with SIGPIPE, which pipefail
# turns into a false answer)
ldd_out=$(ldd "$exe" 2>&1)
if grep -q 'libcudnn.*not found' <<<"$ldd_out"; then
    cudnn_so=""
    for cand in python3 /usr/bin/python3 /usr/local/bin/python3 /opt/torch/.venv/bin/python3; do
        d=$("$cand" -c 'import nvidia.cudnn, os; print(os.path.join(list(nvidia.cudnn.__path__)[0], "lib"))' 2>/dev/null) &&
            [ -f "$d/libcudnn.so.9" ] && { cudnn_so=$d/libcudnn.so.9; break; }
    done
    [ -n "$cudnn_so" ] || cudnn_so=$(find /usr /opt /root /home -name 'libcudnn.so.9' 2>/dev/null | head -1)
    if [ -n "$cudnn_so" ]; then
        LD_LIBRARY_PATH="$(dirname "$cudnn_so"):$LD_LIBRARY_PATH"
        export LD_LIBRARY_PATH
        note "cuDNN from $(dirname "$cudnn_so")"
    elif [ -n "$carry" ] && [ -x "$unpacked/build-gpu-carry-nocudnn/src/train/twotower" ]; then
        build=$unpacked/build-gpu-carry-nocudnn
        exe=$build/src/train/twotower
        note "no libcudnn.so.9 on this machine: using the build without the cuDNN path (its tests skip)"
    fi
fi
ldd_out=$(ldd "$exe" 2>&1)
if grep -q 'not found' <<<"$ldd_out"; then
    grep 'not found' <<<"$ldd_out"
    die "libraries missing: $(grep 'not found' <<<"$ldd_out" | awk '{print $1}' | tr '\n' ' ')(carry them with --prepare-carry, or add them to LD_LIBRARY_PATH)"
fi
has_cudnn=0
grep -q libcudnn <<<"$ldd_out" && has_cudnn=1
echo "=== LD_LIBRARY_PATH"$'\n'"$LD_LIBRARY_PATH"$'\n'"=== ldd $exe"$'\n'"$ldd_out" >>"$logs/machine.txt"

# ---- 1. the GPU tests (run directly: no meson needed, and none may skip here) ------------
if [[ $stages == *tests* ]]; then
    stage tests
    tlog=$logs/tests.log
    : >"$tlog"
    for t in tests/cuda/test_kernels_host tests/cuda/test_device tests/cuda/test_layers_cuda \
             tests/cuda/test_model_cuda tests/cuda/test_order_cuda tests/cuda/test_graph_cuda \
             tests/comm/test_comm_host \
             tests/comm/test_comm_gpu \
             tests/bench/test_bench tests/data/test_data_augment_cuda; do
        [ -x "$build/$t" ] || { note "FAIL: $t not built"; failed=1; continue; }
        echo "=== $t" >>"$tlog"
        (cd "$root" && OPENBLAS_NUM_THREADS=8 capped 330 "$build/$t" --verbose >>"$tlog" 2>&1)
        rc=$?
        if [ $rc -eq 0 ]; then r=ok; else r="FAIL ($(why $rc))"; failed=1; fi
        # this program's own lines of the log
        own=$(awk -v t="=== $t" '$0==t{on=1;next} /^=== /{on=0} on' "$tlog")
        synth=$(grep -a 'Synthesis' <<<"$own" | tail -1 | sed 's/.*Synthesis: //')
        [ -n "$synth" ] || synth="no synthesis line"
        skips=$(grep -a '\[SKIP\]' <<<"$own" | grep -v 'needs 2 CUDA device' | grep -vc 'has no cuDNN' || true)
        if [ "$skips" -gt 0 ]; then r=FAIL; failed=1; fi
        nocudnn=$(grep -a '\[SKIP\]' <<<"$own" | grep -c 'has no cuDNN' || true)
        extra=""
        [ "${nocudnn:-0}" -gt 0 ] && extra=", for want of cuDNN in this build: $nocudnn"
        note "$r: $t: ${synth% }; skipped (not for want of a second GPU or of cuDNN): $skips$extra"
    done
    echo "=== tests/cuda/cli_gpus.sh" >>"$tlog"
    OPENBLAS_NUM_THREADS=8 capped 120 bash tests/cuda/cli_gpus.sh "$exe" >>"$tlog" 2>&1
    rc=$?
    if [ $rc -eq 0 ]; then note "ok: tests/cuda/cli_gpus.sh"
    else note "FAIL: tests/cuda/cli_gpus.sh ($(why $rc))"; failed=1; fi
fi

# ---- 2. the predicted cost beside the measured one (docs/BENCH.md, "Predicted") ------------
if [[ $stages == *cost* ]]; then
    stage cost
    clog=$logs/cost.log
    bj=$logs/bench-b128.json
    # shellcheck disable=SC2086  # --bench-args is a list of flags
    capped 120 "$exe" bench --gpus 0 --batch 128 --json "$bj" $bench_args >"$logs/bench-b128.log" 2>&1
    rc=$?
    if [ $rc -eq 0 ]; then
        how=""
        # the carried prediction when there is one (made from the same sources; predicting
        # here would compile them again), else one made here
        tried="no carry/gpu_cost.json, and no nvcc and compile_commands.json to predict here"
        if [ -n "$carry" ] && [ -f "$carry/gpu_cost.json" ]; then
            capped 60 "$py" tools/gpu_cost/gpu_cost.py --predicted "$carry/gpu_cost.json" \
                --measured "$bj" >"$clog" 2>&1
            rc=$?
            if [ $rc -eq 0 ]; then
                how="the carried prediction"
                cp "$carry/gpu_cost.json" "$logs/gpu_cost.json"
            else tried="the carried prediction: $(why $rc)"; fi
        fi
        if [ -z "$how" ] && command -v nvcc >/dev/null && [ -f "$build/compile_commands.json" ]; then
            capped 240 "$py" tools/gpu_cost/gpu_cost.py --quick --build "$build" --measured "$bj" \
                --json "$logs/gpu_cost.json" >>"$clog" 2>&1
            rc=$?
            if [ $rc -eq 0 ]; then how="predicted here"
            else tried="$tried; predicting here: $(why $rc)"; fi
        fi
        if [ -n "$how" ]; then
            note "ok: cost ($how; see cost.log): $(grep -a 'images/s' "$clog" | grep -a 'measured' | tail -1)"
        else
            note "FAIL: cost: no prediction ($tried): $(tail -2 "$clog" 2>/dev/null | tr '\n' ' ')"
            failed=1
        fi
        # ncu on the work list's kernels: instructions executed, DRAM bytes, time per launch
        if command -v ncu >/dev/null && [ -f "$logs/gpu_cost.json" ]; then
            # run last in this stage, after the benches below
            ncu_names=$("$py" -c 'import json,sys; print("|".join(json.load(open(sys.argv[1]))["worklist"]))' "$logs/gpu_cost.json")
        fi
    else
        note "FAIL: cost: twotower bench --batch 128 ($(why $rc); see bench-b128.log): $(tail -2 "$logs/bench-b128.log" | tr '\n' ' ')"
        failed=1
    fi
    # the other precisions' steps beside their predictions (fp32's is the run above)
    # and on cuDNN (tf32, bf16: the setting predicted to reach the target), when built
    # (cudnn-acts: bf16 on cuDNN with --bf16-acts, conv1's and conv2's activations in bf16);
    # then --conv auto in bf16 and fp32: each conv layer timed on both paths at start-up,
    # and the choice it makes (docs/BENCH.md, "Convolution path per layer")
    for pc in bf16:cudnn tf32:gemm bf16:gemm tf32:cudnn bf16:cudnn-acts bf16:auto fp32:auto; do
        prec=${pc%%:*} conv=${pc##*:} tag=$prec acts=""
        [ "$conv" != gemm ] && tag=$prec-$conv
        [ "$conv" = cudnn-acts ] && conv=cudnn acts=--bf16-acts
        [ "$conv" != gemm ] && [ $has_cudnn -eq 0 ] && continue
        pj=$logs/bench-b128-$tag.json
        # shellcheck disable=SC2086  # --bench-args is a list of flags
        capped 120 "$exe" bench --gpus 0 --batch 128 --precision "$prec" --conv "$conv" $acts \
            --json "$pj" $bench_args >"$logs/bench-b128-$tag.log" 2>&1
        rc=$?
        if [ $rc -eq 0 ]; then
            line=$("$py" -c '
import json, sys
m = json.load(open(sys.argv[1]))
conv = sys.argv[4]
key = "cudnn_" if conv == "cudnn" else ""
key += "bf16_acts_" if sys.argv[5] else ""
try:
    p = json.load(open(sys.argv[2]))["predicted"][sys.argv[3]]
    pred = "predicted %.0f images/s (%.2f ms)" % (p[key + "images_per_s"], p[key + "step_ms"])
except Exception:
    pred = "no prediction"
if conv == "auto":
    pred = "chose: " + m.get("conv_choice", "?")
print("measured %.0f images/s (%.2f ms per step, precision %s, --conv %s%s), %s"
      % (m["images_per_s"], m["ms_per_step"], m.get("precision"), conv,
         " " + sys.argv[5] if sys.argv[5] else "", pred))' \
                "$pj" "$logs/gpu_cost.json" "$prec" "$conv" "$acts" 2>/dev/null)
            note "ok: cost, bench --precision $prec --conv $conv $acts at batch 128: ${line:-?}"
        else
            note "FAIL: cost: twotower bench --batch 128 --precision $prec --conv $conv $acts ($(why $rc); see bench-b128-$tag.log): $(tail -2 "$logs/bench-b128-$tag.log" | tr '\n' ' ')"
            failed=1
        fi
    done
    # --clock-control none: the clocks as a run has them (ncu's default locks them to base)
    if [ -n "${ncu_names:-}" ]; then
        capped 150 ncu --csv --clock-control none --kernel-name-base function \
            --kernel-name "regex:^($ncu_names)\$" --launch-count 60 \
            --metrics smsp__inst_executed.sum,dram__bytes.sum,gpu__time_duration.sum \
            "$exe" bench --gpus 0 --batch 128 --warmup 0 --steps 1 --profile-steps 0 \
            >"$logs/ncu.csv" 2>"$logs/ncu.log"
        rc=$?
        if [ $rc -eq 0 ]; then
            note "ok: ncu on $ncu_names (ncu.csv: warp-instructions executed per launch; divide by elements / 32 for instructions per element)"
        else
            note "FAIL: ncu ($(why $rc); see ncu.log)"; failed=1
        fi
    fi
fi

# ---- 3. the benchmark against PyTorch (docs/BENCH.md) --------------------------------------
# twice when the build has cuDNN: first bf16 on cuDNN (twotower's fastest setting, against
# PyTorch's bf16 autocast), then fp32 on twotower's default path (bench.log, bench.json);
# --bench-args go to both
if [[ $stages == *bench* ]]; then
    stage bench
    torch_py=""
    for p in python3 /opt/torch/.venv/bin/python3 /usr/bin/python3; do
        if command -v "$p" >/dev/null && "$p" -c 'import torch, numpy' 2>/dev/null; then torch_py=$p; break; fi
    done
    if [ -z "$torch_py" ]; then
        note "FAIL: bench: no python3 here can import torch and numpy"; failed=1
    else
        # twotower gets the library path set up above; PyTorch keeps the machine's own (the
        # toolkit's libcublas first on LD_LIBRARY_PATH could shadow the one torch was built with)
        wrap=$tmpd/twotower-bench-exe.sh
        printf '#!/bin/sh\nLD_LIBRARY_PATH=%q exec %q "$@"\n' "$LD_LIBRARY_PATH" "$(realpath "$exe")" >"$wrap"
        chmod +x "$wrap"
        bench_runs=("bf16-cudnn:--precision bf16 --conv cudnn" ":")
        [ $has_cudnn -eq 1 ] || bench_runs=(":")
        for run in "${bench_runs[@]}"; do
            tag=${run%%:*} flags=${run#*:}
            name=bench${tag:+-$tag}
            # shellcheck disable=SC2086  # the flags and --bench-args are lists of flags
            LD_LIBRARY_PATH="$orig_ldp" PYTHONUNBUFFERED=1 capped 300 "$torch_py" tools/bench/bench.py \
                --twotower "$wrap" --gpus 0 $flags --json "$logs/$name.json" $bench_args \
                >"$logs/$name.log" 2>&1
            rc=$?
            if [ $rc -eq 0 ]; then r=ok; else r="FAIL ($(why $rc))"; failed=1; fi
            line=$("$py" -c '
import json, sys
r = json.load(open(sys.argv[1]))
def ips(k):
    v = r.get(k) or {}
    return "%.0f" % v["images_per_s"] if "images_per_s" in v else (v.get("skipped") or v.get("error") or "-")
c = r.get("correctness") or {}
x = r.get("ratios") or {}
f = lambda v: "%.2fx" % v if v else "-"
print("%s: images/s twotower %s, PyTorch eager %s, compile %s; twotower/eager %s, /compile %s; check %s"
      % (r.get("precision", "?"), ips("twotower"), ips("pytorch_eager"), ips("pytorch_compile"),
         f(x.get("twotower_over_eager")), f(x.get("twotower_over_compile")),
         "PASS" if c.get("pass") else "FAIL"))' "$logs/$name.json" 2>/dev/null)
            note "$r: bench ${flags:-(fp32, --conv gemm)} (see $name.log, $name.json): ${line:-$(tail -3 "$logs/$name.log" | tr '\n' ' ')}"
        done
    fi
fi

# ---- 4. the step as one CUDA graph, timed against the uncaptured step ----------------------
# twotower bench --gpus 0 with --graph off, on and auto at two batch sizes (the paper's 128,
# and 16, where the launches weigh more). auto's own check (model.h, MODEL_GRAPH_AUTO)
# replays the first captured step and compares its every bit with the uncaptured step's
# (parameters, gradients, momentum, loss) on the full net: it keeping the graph is the
# identity check at full size (test_graph_cuda checks it on small nets in stage 1). The
# bench's JSON numbers have 9 digits, so the losses compared here agree to 9 digits. Then
# the same at batch 128 in bf16 on cuDNN (with cuDNN in the build): the hand-overs' copies
# in the replayed step.
if [[ $stages == *graph* ]]; then
    stage graph
    glog=$logs/graph.log
    : >"$glog"
    configs=("b128:128:" "b16:16:")
    [ $has_cudnn -eq 1 ] && configs+=("b128-bf16-cudnn:128:--precision bf16 --conv cudnn")
    for c in "${configs[@]}"; do
        tag=${c%%:*} rest=${c#*:}
        b=${rest%%:*} flags=${rest#*:}
        ok=1 why_not=""
        for mode in off on auto; do
            echo "=== bench --batch $b $flags --graph $mode" >>"$glog"
            # shellcheck disable=SC2086  # the flags are a list of flags
            capped 120 "$exe" bench --gpus 0 --batch "$b" $flags --graph "$mode" --profile-steps 0 \
                --json "$logs/graph-$mode-$tag.json" >>"$glog" 2>&1
            rc=$?
            [ $rc -eq 0 ] || { ok=0; why_not="${why_not:+$why_not, }--graph $mode: $(why $rc)"; }
        done
        b="$b${flags:+ $flags}"
        if [ $ok -eq 1 ]; then
            line=$("$py" - "$logs" "$tag" "$b" <<'PY'
import json, sys
logs, tag, b = sys.argv[1], sys.argv[2], sys.argv[3]
r = {m: json.load(open(f"{logs}/graph-{m}-{tag}.json")) for m in ("off", "on", "auto")}
same = all(r[m]["loss_first"] == r["off"]["loss_first"] and
           r[m]["loss_last"] == r["off"]["loss_last"] for m in r)
kept = r["auto"].get("graph", "").startswith("auto: the whole step captured")
on = r["on"].get("graph", "").startswith("on: the whole step captured")
ips = {m: r[m]["images_per_s"] for m in r}
print("%s batch %s: images/s off %.0f, on %.0f (%.3fx), auto %.0f; median ms/step off %.3f, "
      "on %.3f; losses %s; auto %s; graph on: %s" % (
      "ok:" if same and kept and on else "FAIL:", b, ips["off"], ips["on"],
      ips["on"] / ips["off"], ips["auto"], r["off"]["ms_per_step_median"],
      r["on"]["ms_per_step_median"], "agree" if same else "DIFFER",
      "kept the graph" if kept else "did not keep the graph: " + r["auto"].get("graph", "?"),
      r["on"].get("graph", "?")))
PY
)
            note "${line:-FAIL: graph batch $b: could not read the JSON (see graph.log)}"
            [[ $line == ok:* ]] || failed=1
        else
            note "FAIL: graph batch $b: a bench run failed ($why_not; see graph.log): $(tail -2 "$glog" | tr '\n' ' ')"
            failed=1
        fi
    done
fi

# ---- 5. one epoch of Fashion-MNIST on one GPU (both towers on GPU 0) ----------------------
# fp32 and bf16 on GEMM (fp32's default), then bf16 on cuDNN (bf16's default, with cuDNN in
# the build); each run
# folder in $TMPDIR (a checkpoint of the full net is 240 MB: not for the logs)
if [[ $stages == *epoch* ]]; then
    stage epoch
    epochs=("fp32:gemm" "bf16:gemm")
    [ $has_cudnn -eq 1 ] && epochs+=("bf16:cudnn")
    for pc in "${epochs[@]}"; do
        prec=${pc%%:*} conv=${pc##*:}
        tag=$prec
        [ "$conv" = gemm ] || tag=$prec-$conv
        elog=$logs/epoch.log
        [ "$tag" = fp32 ] || elog=$logs/epoch-$tag.log
        rm -rf "$tmpd/gpu-check-run-$tag"
        args=(train --gpus 0 --data "$data" --epochs 1 --seed 1 --precision "$prec" --conv "$conv"
              --run "$tmpd/gpu-check-run-$tag" --log-every 50)
        [ -n "$size" ] && args+=(--size "$size")
        start=$(date +%s.%N)
        capped 240 "$exe" "${args[@]}" >"$elog" 2>&1
        rc=$?
        if [ $rc -eq 0 ]; then
            end=$(date +%s.%N)
            # the speed from the run's metrics.jsonl: its train lines (every --log-every
            # steps) carry the training time so far; the first interval (start-up, the
            # first batches) is left out of the steady rate
            speed=$(python3 - "$tmpd/gpu-check-run-$tag/metrics.jsonl" <<'PY' 2>/dev/null
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
tr = [r for r in rows if r.get("type") == "train"]
run = json.load(open(sys.argv[1].replace("metrics.jsonl", "run.json")))
B = run.get("batch") or run.get("config", {}).get("batch")
last = tr[-1]
out = "%d steps in %.1f s of training" % (last["step"], last["time_s"])
if B:
    out += " = %.0f images/s" % (last["step"] * B / last["time_s"])
    if len(tr) > 1:
        a = tr[0]
        out += ", %.0f after the first %d steps" % (
            (last["step"] - a["step"]) * B / (last["time_s"] - a["time_s"]), a["step"])
out += "; data wait %.1f%% of the last interval" % (100 * last.get("data_wait_share", 0))
print(out)
PY
)
            acc=$(grep -aoE 'accuracy [0-9.]+%' "$elog" | tail -1)
            note "ok: one epoch, --gpus 0 --precision $prec --conv $conv: ${speed:-speed not read (see $(basename "$elog"))}; test $acc (wall $(awk -v a="$start" -v b="$end" 'BEGIN{printf "%.0f", b - a}') s)"
        else
            note "FAIL: one epoch --precision $prec --conv $conv ($(why $rc); see $(basename "$elog")): $(tail -3 "$elog" | tr '\n' ' ')"
            failed=1
        fi
    done
fi

# ---- 6. compute-sanitizer over a few training steps in the fallback -----------------------
# memcheck: out-of-bounds and misaligned accesses, failed API calls, device memory leaks.
# racecheck: shared-memory hazards only: in our kernels the fused LRN + max-pool's tiles and
#   the softmax's block reductions (and cuBLAS's); the ordering between the two towers'
#   streams is what tests/cuda/test_order_cuda's delay test checks.
# initcheck: reads of device global memory that nothing wrote, in kernels and (the default
#   --check-api-memory-access yes) in copies. The tower arenas are zeroed once at init,
#   so what it can see is the memory outside them: the conv chunk scratch, the cuBLAS
#   workspace, the input staging. --track-unused-memory is not used: it reports memory
#   allocated and never touched, which the cuBLAS workspace and the scratch (sized for
#   the largest layer) are by design. A report is ours when its kernel is one of src/'s
#   __global__ functions or it names no kernel (a copy); a report inside a library kernel
#   (cuBLAS, cuDNN, NCCL reading a workspace it wrote in an earlier launch) is listed on
#   its own line and does not fail the check: read it in the log.
# synccheck: __syncthreads and warp-synchronous calls (the softmax's shuffles) used where
#   not every thread of the mask reaches them.
# Then memcheck and initcheck again in bf16 on cuDNN with --bf16-acts (when the build has
# cuDNN): its casts, the kept activations and the hand-overs (conv1's input written with
# the image, the pooled and chained inputs, the LRN gradient), the update's bf16 weights
# (logs sanitize-TOOL-bf16.log).
few_steps=("$exe" train --gpus 0 --data "$data" --epochs 1 --train-limit 64 --test-limit 32
           --batch 16 --size 67 --quiet --seed 1)
bf16_steps=(--precision bf16 --conv cudnn --bf16-acts)
if [[ $stages == *sanitize* ]]; then
    stage sanitize
    cs=$(command -v compute-sanitizer)
    for c in /usr/local/cuda/bin/compute-sanitizer /usr/local/cuda/compute-sanitizer/compute-sanitizer; do
        [ -z "$cs" ] && [ -x "$c" ] && cs=$c
    done
    [ -n "$cs" ] || cs=$(find /usr/local /opt -maxdepth 6 -name compute-sanitizer -type f -perm -u+x 2>/dev/null | head -1)
    if [ -z "$cs" ]; then
        note "FAIL: compute-sanitizer not found"; failed=1
    else
        ours=$(grep -rhoE '__global__[^(]*[[:space:]][A-Za-z_][A-Za-z0-9_]*[[:space:]]*\(' \
                   --include='*.cu' --include='*.cuh' --include='*.h' src |
               sed -E 's/__launch_bounds__[[:space:]]*\([^)]*\)//; s/.*[[:space:]]([A-Za-z_][A-Za-z0-9_]*)[[:space:]]*\($/\1/' |
               sort -u | paste -sd'|')
        # each tool in the order given, memcheck's and initcheck's bf16 run right after it
        runs=""
        for tool in ${sanitizers//,/ }; do
            runs="$runs $tool"
            if [ $has_cudnn -eq 1 ]; then
                case $tool in memcheck|initcheck) runs="$runs $tool:bf16" ;; esac
            fi
        done
        for run in $runs; do
            tool=${run%%:*} tag="" extra=()
            [ "$run" != "$tool" ] && tag=-${run#*:} extra=("${bf16_steps[@]}")
            slog=$logs/sanitize-$tool$tag.log
            rm -rf "$tmpd/gpu-check-san-$tool$tag"
            capped 180 "$cs" --tool "$tool" --error-exitcode 9 "${few_steps[@]}" "${extra[@]}" \
                --run "$tmpd/gpu-check-san-$tool$tag" >"$slog" 2>&1
            rc=$?
            tool=$tool$tag # the name its lines below give
            case $rc in
                124|137|200) note "FAIL: compute-sanitizer --tool $tool: $(why $rc) (see $(basename "$slog"))"
                             failed=1; continue ;;
            esac
            summ=$(grep -a 'ERROR SUMMARY\|RACECHECK SUMMARY' "$slog" | tail -1)
            if [ "${tool%-bf16}" = initcheck ] && [ $rc -eq 9 ]; then
                # each report: its header, then indented lines; "at NAME..." names its kernel
                split=$(awk -v ours="^($ours)\$" '
                    function done_block() {
                        if (!inblk) return
                        if (kern == "" || kern ~ ours) o++; else { l++; libs[kern] = 1 }
                        inblk = 0
                    }
                    /^========= [^ ]/ {
                        done_block()
                        if ($0 ~ /[Uu]ninitiali[sz]ed/) { inblk = 1; kern = ""; seen_at = 0 }
                        next
                    }
                    inblk && !seen_at && /^=========[ ]+at / {
                        seen_at = 1
                        line = $0; sub(/^=========[ ]+at[ ]+/, "", line)
                        sub(/^0x[0-9a-f]+ in /, "", line)   # older form: at 0xPC in NAME(...)
                        sub(/^[^ ]*:[0-9]+:/, "", line)     # with line info: FILE:LINE:NAME
                        sub(/^void /, "", line)
                        sub(/[(<+].*$/, "", line)
                        kern = line
                    }
                    END {
                        done_block()
                        names = ""; for (k in libs) names = names (names == "" ? "" : " ") k
                        printf "%d %d %s\n", o, l, names
                    }' "$slog")
                read -r n_ours n_lib lib_names <<<"$split"
                if [ "${n_ours:-0}" -eq 0 ] && [ "${n_lib:-0}" -gt 0 ] &&
                   ! grep -aq 'Target application returned an error\|returned non-zero' "$slog"; then
                    note "ok: compute-sanitizer --tool $tool: none in our kernels or copies"
                    note "WARN: compute-sanitizer --tool $tool: $n_lib report(s) inside library kernels ($lib_names), not ours (see $(basename "$slog"))"
                    continue
                fi
                note "FAIL: compute-sanitizer --tool $tool (see $(basename "$slog")): ${n_ours:-?} report(s) in our kernels or copies, ${n_lib:-?} in library kernels${lib_names:+ ($lib_names)}; $summ"
                failed=1
                continue
            fi
            if [ $rc -eq 0 ]; then
                note "ok: compute-sanitizer --tool $tool: $summ"
            else
                note "FAIL: compute-sanitizer --tool $tool (see $(basename "$slog")): $(grep -a 'ERROR SUMMARY\|Error\|error' "$slog" | tail -2 | tr '\n' ' ')"
                failed=1
            fi
        done
    fi
fi

ran=$(grep -c '^--- ' "$summary")
if [ "$ran" -eq 0 ]; then
    note "gpu_check: no stage ran (--stages '$stages': any of tests,cost,bench,graph,epoch,sanitize)"
    exit 2
fi
where=$logs
[ -n "${OUT:-}" ] && where="$OUT/logs.tgz"
if [ $failed -eq 0 ]; then note "gpu_check: all passed ($ran stages, $((SECONDS - t0)) s)"
else note "gpu_check: FAILED ($ran stages, $((SECONDS - t0)) s; logs in $where)"; fi
exit $failed
