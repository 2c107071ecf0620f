#!/usr/bin/env bash
# gpu_check.sh: the one GPU check of twotower (docs/GPU.md). On a machine with an NVIDIA GPU
# it builds (or takes a build made elsewhere), runs the GPU tests, times the training step
# as one CUDA graph against the uncaptured step (--graph on, off and auto), runs
# compute-sanitizer (memcheck, racecheck, initcheck, synccheck) over a few training steps,
# and trains one epoch of Fashion-MNIST in the single-GPU fallback, in fp32 and with
# --precision bf16, printing images/s and test accuracy.
# Logs go to $OUT if set, else to ./gpu-check-logs.
#
#   tools/gpu_check.sh [--carry DIR] [--build DIR] [--data DIR] [--stages LIST] [--size N]
#                      [--bench-args "ARGS"] [--sanitizers LIST]
#   tools/gpu_check.sh --prepare-carry [DIR]      (on a Debian 12 machine with nvcc)
#
# --prepare-carry builds here (-Dcuda=enabled; once with the cuDNN path, once without) and
# packs, into DIR (default carry/), what a bare GPU machine lacks: gpu-carry.tar.xz (the
# build folders and every shared library their programs need that is not glibc, CUDA or
# cuDNN: cuDNN is the machine's, e.g. PyTorch's wheel's), fashion-mnist/ and gpu_cost.json
# (tools/gpu_cost's prediction, made here). On the GPU machine, --carry DIR unpacks that and
# uses it. --stages: any of tests,graph,sanitize,epoch,bench,cost (default
# tests,graph,sanitize,epoch); graph runs `twotower bench --gpus 0` with --graph off, on and
# auto at batches 128 and 16 and puts their images/s side by side (passing when every run
# ends, their losses agree and auto kept the graph: its check found the replayed step's
# bits equal to the uncaptured step's);
# bench runs tools/bench/bench.py (twotower vs PyTorch, docs/BENCH.md) with the python3 that
# has torch, passing it --bench-args; cost runs `twotower bench` at batch 128 and puts its
# per-layer times beside tools/gpu_cost's predicted ones (and ncu's counts of the work
# list's kernels when ncu is installed), then the same bench with --precision tf32 and
# bf16, on --conv gemm and (built with cuDNN) --conv cudnn, each step's images/s beside its
# predicted one. --sanitizers: the compute-sanitizer tools of the
# sanitize stage (default memcheck,racecheck,initcheck,synccheck; what each can see is
# written above the stage).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
root=$PWD

carry="" build="" data="" stages="tests,graph,sanitize,epoch" size="" prepare="" prep_dir="carry"
bench_args="" sanitizers="memcheck,racecheck,initcheck,synccheck"
while [ $# -gt 0 ]; do
    case "$1" in
        --carry) carry=$2; shift 2 ;;
        --build) build=$2; shift 2 ;;
        --data) data=$2; shift 2 ;;
        --stages) stages=$2; shift 2 ;;
        --size) size=$2; shift 2 ;;
        --bench-args) bench_args=$2; shift 2 ;;
        --sanitizers) sanitizers=$2; shift 2 ;;
        --prepare-carry) prepare=1; shift; if [ $# -gt 0 ] && [ "${1#--}" = "$1" ]; then prep_dir=$1; shift; fi ;;
        -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
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
    find "$b" "$b2" -type f -perm -u+x ! -name '*.so*' ! -name '*.py' ! -name '*.sh' -print0 |
        xargs -0 -r ldd 2>/dev/null | awk '/=> \//{print $1, $3}' | sort -u |
        grep -vE '^(libc|libm|libdl|libpthread|librt|libresolv|libutil|libanl|libnss[a-z_]*|ld-linux[a-z0-9_-]*|libstdc\+\+|libgcc_s|libcuda|libcudart|libcublas|libcublasLt|libnccl|libcudnn[a-z_]*|libnvidia[a-z-]*)[.]' |
        while read -r soname path; do cp -L "$path" "$stage/lib/$soname"; done
    tar -C "$stage" -cJf "$prep_dir/gpu-carry.tar.xz" . || die "packing failed"
    rm -rf "$stage"
    src=/usr/share/datasets/fashion-mnist
    if [ -d $src ]; then mkdir -p "$prep_dir/fashion-mnist" && cp $src/*.gz "$prep_dir/fashion-mnist/"; fi
    # the prediction, from this machine's nvcc (and nvdisasm when found): the cost stage
    # compares it with the GPU's measured times without compiling anything there
    /usr/bin/python3 tools/gpu_cost/gpu_cost.py --build $b --json "$prep_dir/gpu_cost.json" \
        >"$prep_dir/gpu_cost.txt" || die "tools/gpu_cost failed (see $prep_dir/gpu_cost.txt)"
    say "packed $(du -sh "$prep_dir" | cut -f1) into $prep_dir/: $(ls "$prep_dir" | tr '\n' ' ')"
    say "on the GPU machine: tools/gpu_check.sh --carry $prep_dir"
    exit 0
fi

# ---- on the GPU machine -------------------------------------------------------------------
logs=${OUT:-$root/gpu-check-logs}
mkdir -p "$logs"
summary=$logs/summary.txt
: >"$summary"
note() { echo "$*" | tee -a "$summary"; }
failed=0

command -v nvidia-smi >/dev/null || die "nvidia-smi not found: this is not a machine with an NVIDIA GPU"
nvidia-smi -L >"$logs/gpus.txt" 2>&1 || die "nvidia-smi -L failed: $(cat "$logs/gpus.txt")"
ngpus=$(grep -c '^GPU ' "$logs/gpus.txt")
note "GPUs: $ngpus ($(head -1 "$logs/gpus.txt"))"
[ "$ngpus" -ge 1 ] || die "no GPU listed by nvidia-smi"

# CUDA and NCCL libraries: the toolkit's, or those of pip's nvidia-* wheels
libpath=""
[ -d /usr/local/cuda/lib64 ] && libpath=/usr/local/cuda/lib64
for py in python3 /opt/torch/.venv/bin/python3; do
    d=$($py -c 'import nvidia, os; print(os.path.dirname(list(nvidia.__path__)[0]))' 2>/dev/null) || continue
    for l in "$d"/nvidia/*/lib; do [ -d "$l" ] && libpath="$libpath:$l"; done
    break
done

if [ -n "$carry" ]; then
    [ -f "$carry/gpu-carry.tar.xz" ] || die "$carry/gpu-carry.tar.xz not found: make it with --prepare-carry on the development machine and carry that folder"
    unpacked=/tmp/twotower-carry
    rm -rf "$unpacked"; mkdir -p "$unpacked"
    tar -C "$unpacked" -xJf "$carry/gpu-carry.tar.xz" || die "cannot unpack $carry/gpu-carry.tar.xz"
    build=${build:-$unpacked/build-gpu-carry}
    # the carried libraries only fill gaps: where the machine has a library, its own is used
    for f in "$unpacked"/lib/*; do
        so=$(basename "$f")
        if ldconfig -p | awk '{print $1}' | grep -xF "$so" > /dev/null; then rm -f "$f"; fi
    done
    note "carried libraries used: $(cd "$unpacked/lib" && echo *)"
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
if ldd "$exe" | grep -q 'libcudnn.*not found'; then
    cudnn_so=""
    for py in python3 /usr/bin/python3 /usr/local/bin/python3 /opt/torch/.venv/bin/python3; do
        d=$("$py" -c 'import nvidia.cudnn, os; print(os.path.join(list(nvidia.cudnn.__path__)[0], "lib"))' 2>/dev/null) &&
            [ -f "$d/libcudnn.so.9" ] && { cudnn_so=$d/libcudnn.so.9; break; }
    done
    [ -n "$cudnn_so" ] || cudnn_so=$(find /usr /opt /root /home -name 'libcudnn.so.9' 2>/dev/null | head -1)
    if [ -n "$cudnn_so" ]; then
        export LD_LIBRARY_PATH="$(dirname "$cudnn_so"):$LD_LIBRARY_PATH"
        note "cuDNN from $(dirname "$cudnn_so")"
    elif [ -n "$carry" ] && [ -x "$unpacked/build-gpu-carry-nocudnn/src/train/twotower" ]; then
        build=$unpacked/build-gpu-carry-nocudnn
        exe=$build/src/train/twotower
        note "no libcudnn.so.9 on this machine: using the build without the cuDNN path (its tests skip)"
    fi
fi
ldd "$exe" | grep -q 'not found' && { ldd "$exe" | grep 'not found'; die "libraries missing (see above): carry them (--prepare-carry) or add them to LD_LIBRARY_PATH"; }

# ---- 1. the GPU tests (run directly: no meson needed, and none may skip here) ------------
if [[ $stages == *tests* ]]; then
    tlog=$logs/tests.log
    : >"$tlog"
    for t in tests/cuda/test_kernels_host tests/cuda/test_device tests/cuda/test_layers_cuda \
             tests/cuda/test_model_cuda tests/cuda/test_order_cuda tests/cuda/test_graph_cuda \
             tests/comm/test_comm_host \
             tests/comm/test_comm_gpu \
             tests/bench/test_bench tests/data/test_data_augment_cuda; do
        [ -x "$build/$t" ] || { note "FAIL: $t not built"; failed=1; continue; }
        echo "=== $t" >>"$tlog"
        if (cd "$root" && OPENBLAS_NUM_THREADS=8 "$build/$t" --verbose >>"$tlog" 2>&1); then r=ok; else r=FAIL; failed=1; fi
        synth=$(grep -a 'Synthesis' "$tlog" | tail -1 | sed 's/.*Synthesis: //')
        skips=$(awk -v t="=== $t" '$0==t{on=1;next} /^=== /{on=0} on&&/\[SKIP\]/' "$tlog" |
                grep -v 'needs 2 CUDA device' | grep -vc 'has no cuDNN' || true)
        if [ "$skips" -gt 0 ]; then r=FAIL; failed=1; fi
        nocudnn=$(awk -v t="=== $t" '$0==t{on=1;next} /^=== /{on=0} on&&/\[SKIP\]/' "$tlog" |
                  grep -c 'has no cuDNN' || true)
        extra=""
        [ "${nocudnn:-0}" -gt 0 ] && extra=", for want of cuDNN in this build: $nocudnn"
        note "$r: $t: ${synth% }; skipped (not for want of a second GPU or of cuDNN): $skips$extra"
    done
    if OPENBLAS_NUM_THREADS=8 bash tests/cuda/cli_gpus.sh "$exe" >>"$tlog" 2>&1; then
        note "ok: tests/cuda/cli_gpus.sh"
    else note "FAIL: tests/cuda/cli_gpus.sh"; failed=1; fi
fi

# ---- 1b. the step as one CUDA graph, timed against the uncaptured step ---------------------
# twotower bench --gpus 0 with --graph off, on and auto at two batch sizes (the paper's 128,
# and 16, where the launches weigh more). auto's own check (model.h, MODEL_GRAPH_AUTO)
# replays the first captured step and compares its every bit with the uncaptured step's
# (parameters, gradients, momentum, loss) on the full net: it keeping the graph is the
# identity check at full size (test_graph_cuda checks it on small nets in stage 1). The
# bench's JSON numbers have 9 digits, so the losses compared here agree to 9 digits.
if [[ $stages == *graph* ]]; then
    glog=$logs/graph.log
    : >"$glog"
    py=$(command -v python3 || command -v /usr/bin/python3)
    for b in 128 16; do
        ok=1
        for mode in off on auto; do
            echo "=== bench --batch $b --graph $mode" >>"$glog"
            "$exe" bench --gpus 0 --batch "$b" --graph "$mode" --profile-steps 0 \
                --json "$logs/graph-$mode-b$b.json" >>"$glog" 2>&1 || ok=0
        done
        if [ $ok -eq 1 ]; then
            line=$("$py" - "$logs" "$b" <<'PY'
import json, sys
logs, b = sys.argv[1], sys.argv[2]
r = {m: json.load(open(f"{logs}/graph-{m}-b{b}.json")) for m in ("off", "on", "auto")}
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
            note "FAIL: graph batch $b: a bench run failed (see graph.log): $(tail -2 "$glog" | tr '\n' ' ')"
            failed=1
        fi
    done
fi

# ---- 2. compute-sanitizer over a few training steps in the fallback -----------------------
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
    cs=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null)
    if [ -z "$cs" ]; then
        note "FAIL: compute-sanitizer not found"; failed=1
    else
        ours=$(grep -rhoE '__global__[^(]*[[:space:]][A-Za-z_][A-Za-z0-9_]*[[:space:]]*\(' \
                   --include='*.cu' --include='*.cuh' --include='*.h' src |
               sed -E 's/__launch_bounds__[[:space:]]*\([^)]*\)//; s/.*[[:space:]]([A-Za-z_][A-Za-z0-9_]*)[[:space:]]*\($/\1/' |
               sort -u | paste -sd'|')
        runs=${sanitizers//,/ }
        if ldd "$exe" | grep -q libcudnn; then
            for tool in ${sanitizers//,/ }; do
                case $tool in memcheck|initcheck) runs="$runs $tool:bf16" ;; esac
            done
        fi
        for run in $runs; do
            tool=${run%%:*} tag="" extra=()
            [ "$run" != "$tool" ] && tag=-${run#*:} extra=("${bf16_steps[@]}")
            slog=$logs/sanitize-$tool$tag.log
            "$cs" --tool "$tool" --error-exitcode 9 "${few_steps[@]}" "${extra[@]}" >"$slog" 2>&1
            rc=$?
            tool=$tool$tag # the name its lines below give
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

# ---- 3. one epoch of Fashion-MNIST on one GPU (both towers on GPU 0), fp32 and bf16 -------
if [[ $stages == *epoch* ]]; then
    for prec in fp32 bf16; do
        elog=$logs/epoch.log
        [ "$prec" = fp32 ] || elog=$logs/epoch-$prec.log
        args=("$exe" train --gpus 0 --data "$data" --epochs 1 --seed 1 --precision "$prec")
        [ -n "$size" ] && args+=(--size "$size")
        start=$(date +%s.%N)
        if "${args[@]}" >"$elog" 2>&1; then
            end=$(date +%s.%N)
            n=$(grep -aoE '[0-9]+ train images/epoch' "$elog" | head -1 | cut -d' ' -f1)
            tr_s=$(grep -aoE 'epoch 1: train [0-9.]+ s' "$elog" | grep -oE '[0-9.]+ s' | cut -d' ' -f1)
            acc=$(grep -aoE 'accuracy [0-9.]+%' "$elog" | head -1)
            ips=$(awk -v n="${n:-0}" -v s="${tr_s:-0}" 'BEGIN{ if (s > 0) printf "%.0f", n / s; else print "?" }')
            note "ok: one epoch, --gpus 0 --precision $prec: ${n:-?} images in ${tr_s:-?} s = $ips images/s; test $acc (wall $(awk -v a="$start" -v b="$end" 'BEGIN{printf "%.0f", b - a}') s)"
        else
            note "FAIL: one epoch --precision $prec (see $(basename "$elog")): $(tail -3 "$elog" | tr '\n' ' ')"
            failed=1
        fi
    done
fi

# ---- 4. the benchmark against PyTorch (docs/BENCH.md) --------------------------------------
if [[ $stages == *bench* ]]; then
    blog=$logs/bench.log
    py=""
    for p in python3 /opt/torch/.venv/bin/python3 /usr/bin/python3; do
        if command -v "$p" >/dev/null && "$p" -c 'import torch, numpy' 2>/dev/null; then py=$p; break; fi
    done
    if [ -z "$py" ]; then
        note "FAIL: bench: no python3 here can import torch and numpy"; failed=1
    else
        # twotower gets the library path set up above; PyTorch keeps its own libraries (the
        # toolkit's libcublas first on LD_LIBRARY_PATH could shadow the one torch was built with)
        wrap=/tmp/twotower-bench-exe.sh
        printf '#!/bin/sh\nLD_LIBRARY_PATH=%q exec %q "$@"\n' "$LD_LIBRARY_PATH" "$(realpath "$exe")" >"$wrap"
        chmod +x "$wrap"
        # shellcheck disable=SC2086  # --bench-args is a list of flags
        if env -u LD_LIBRARY_PATH PYTHONUNBUFFERED=1 "$py" tools/bench/bench.py --twotower "$wrap" \
               --gpus 0 --json "$logs/bench.json" $bench_args >"$blog" 2>&1; then r=ok; else r=FAIL; failed=1; fi
        line=$("$py" -c '
import json, sys
r = json.load(open(sys.argv[1]))
def ips(k):
    v = r.get(k) or {}
    return "%.0f" % v["images_per_s"] if "images_per_s" in v else (v.get("skipped") or v.get("error") or "-")
c = r.get("correctness") or {}
x = r.get("ratios") or {}
f = lambda v: "%.2fx" % v if v else "-"
print("images/s twotower %s, PyTorch eager %s, compile %s; twotower/eager %s, /compile %s; check %s"
      % (ips("twotower"), ips("pytorch_eager"), ips("pytorch_compile"),
         f(x.get("twotower_over_eager")), f(x.get("twotower_over_compile")),
         "PASS" if c.get("pass") else "FAIL"))' "$logs/bench.json" 2>/dev/null)
        note "$r: bench (see bench.log, bench.json): ${line:-$(tail -3 "$blog" | tr '\n' ' ')}"
    fi
fi

# ---- 5. the predicted cost beside the measured one (docs/BENCH.md, "Predicted") ------------
if [[ $stages == *cost* ]]; then
    clog=$logs/cost.log
    bj=$logs/bench-b128.json
    # shellcheck disable=SC2086  # --bench-args is a list of flags
    if "$exe" bench --gpus 0 --batch 128 --json "$bj" $bench_args >"$logs/bench-b128.log" 2>&1; then
        py=$(command -v python3 || command -v /usr/bin/python3)
        how=""
        if command -v nvcc >/dev/null && [ -f "$build/compile_commands.json" ] &&
           "$py" tools/gpu_cost/gpu_cost.py --quick --build "$build" --measured "$bj" \
               --json "$logs/gpu_cost.json" >"$clog" 2>&1; then
            how="predicted here"
        elif [ -n "$carry" ] && [ -f "$carry/gpu_cost.json" ] &&
             "$py" tools/gpu_cost/gpu_cost.py --predicted "$carry/gpu_cost.json" \
                 --measured "$bj" >"$clog" 2>&1; then
            how="the carried prediction"
            cp "$carry/gpu_cost.json" "$logs/gpu_cost.json"
        fi
        if [ -n "$how" ]; then
            note "ok: cost ($how; see cost.log): $(grep -a 'images/s' "$clog" | grep -a 'measured' | tail -1)"
        else
            note "FAIL: cost: no prediction (no nvcc here and no carry/gpu_cost.json): $(tail -2 "$clog" 2>/dev/null | tr '\n' ' ')"
            failed=1
        fi
        # ncu on the work list's kernels: instructions executed, DRAM bytes, time per launch
        if command -v ncu >/dev/null && [ -f "$logs/gpu_cost.json" ]; then
            names=$("$py" -c 'import json,sys; print("|".join(json.load(open(sys.argv[1]))["worklist"]))' "$logs/gpu_cost.json")
            if [ -n "$names" ] && ncu --csv --kernel-name-base function --kernel-name "regex:^($names)\$" \
                   --launch-count 60 --metrics smsp__inst_executed.sum,dram__bytes.sum,gpu__time_duration.sum \
                   "$exe" bench --gpus 0 --batch 128 --warmup 0 --steps 1 --profile-steps 0 \
                   >"$logs/ncu.csv" 2>"$logs/ncu.log"; then
                note "ok: ncu on $names (ncu.csv: warp-instructions executed per launch; divide by elements / 32 for instructions per element)"
            else
                note "FAIL: ncu (see ncu.log)"; failed=1
            fi
        fi
    else
        note "FAIL: cost: twotower bench --batch 128 (see bench-b128.log): $(tail -2 "$logs/bench-b128.log" | tr '\n' ' ')"
        failed=1
    fi
    # the other precisions' steps beside their predictions (fp32's is the run above)
    py=$(command -v python3 || command -v /usr/bin/python3)
    # and on cuDNN (tf32, bf16: the setting predicted to reach the target), when built
    # (cudnn-acts: bf16 on cuDNN with --bf16-acts, conv1's and conv2's activations in bf16)
    for pc in tf32:gemm bf16:gemm tf32:cudnn bf16:cudnn bf16:cudnn-acts; do
        prec=${pc%%:*} conv=${pc##*:} tag=$prec acts=""
        [ "$conv" != gemm ] && tag=$prec-$conv
        [ "$conv" = cudnn-acts ] && conv=cudnn acts=--bf16-acts
        [ "$conv" = cudnn ] && ! ldd "$exe" | grep -q libcudnn && continue
        pj=$logs/bench-b128-$tag.json
        # shellcheck disable=SC2086  # --bench-args is a list of flags
        if "$exe" bench --gpus 0 --batch 128 --precision "$prec" --conv "$conv" $acts --json "$pj" \
               $bench_args >"$logs/bench-b128-$tag.log" 2>&1; then
            line=$("$py" -c '
import json, sys
m = json.load(open(sys.argv[1]))
key = "cudnn_" if sys.argv[4] == "cudnn" else ""
key += "bf16_acts_" if sys.argv[5] else ""
try:
    p = json.load(open(sys.argv[2]))["predicted"][sys.argv[3]]
    pred = "predicted %.0f images/s (%.2f ms)" % (p[key + "images_per_s"], p[key + "step_ms"])
except Exception:
    pred = "no prediction"
print("measured %.0f images/s (%.2f ms per step, precision %s, --conv %s%s), %s"
      % (m["images_per_s"], m["ms_per_step"], m.get("precision"), sys.argv[4],
         " " + sys.argv[5] if sys.argv[5] else "", pred))' \
                "$pj" "$logs/gpu_cost.json" "$prec" "$conv" "$acts" 2>/dev/null)
            note "ok: cost, bench --precision $prec --conv $conv $acts at batch 128: ${line:-?}"
        else
            note "FAIL: cost: twotower bench --batch 128 --precision $prec --conv $conv $acts (see bench-b128-$tag.log): $(tail -2 "$logs/bench-b128-$tag.log" | tr '\n' ' ')"
            failed=1
        fi
    done
fi

if [ $failed -eq 0 ]; then note "gpu_check: all passed"; else note "gpu_check: FAILED (logs in $logs)"; fi
exit $failed
