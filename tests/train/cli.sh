#!/usr/bin/env bash
# cli.sh: the `twotower` command line's answers that need no data and no GPU, for every
# subcommand: --help exits 0 and lists every flag; a bad value, an unknown flag or a flag
# of another command exits 2 naming it, before any work (never a crash).
# usage: cli.sh PATH/TO/twotower
set -u
exe=$1
fail=0
expect() { # expect CODE WANT_TEXT -- args...
    local code=$1 want=$2
    shift 3
    local out rc
    out=$("$exe" "$@" 2>&1)
    rc=$?
    if [ $rc -ne "$code" ] || ! grep -q -- "$want" <<<"$out"; then
        echo "FAIL: twotower $*: exit $rc (want $code), output: ${out:0:400} (want '$want')"
        fail=1
    else
        echo "ok: twotower $* -> exit $rc"
    fi
}
# help_lists CMD FLAG...: `twotower CMD --help` exits 0 and has a line for each flag
help_lists() {
    local cmd=$1 out rc
    shift
    out=$("$exe" "$cmd" --help 2>&1)
    rc=$?
    if [ $rc -ne 0 ] || ! grep -q "^usage: twotower $cmd" <<<"$out"; then
        echo "FAIL: twotower $cmd --help: exit $rc, output: ${out:0:400}"
        fail=1
        return
    fi
    for f in "$@" --help; do
        if ! grep -qE -- "^  (-., )?$f( |$)" <<<"$out"; then
            echo "FAIL: twotower $cmd --help does not list $f"
            fail=1
        fi
    done
    echo "ok: twotower $cmd --help lists $*"
}

place="--cpu --gpus --tf32 --precision --conv --serial"
help_lists train $place --data --towers --batch --size --width-div --epochs --train-limit \
    --test-limit --views --lr --seed --quiet --run --resume --ckpt-every --keep \
    --eval-every --log-every --patience --max-drops --min-delta --pca-std --mirror
help_lists summary --towers --classes --batch --size --width-div
help_lists prep --val-fraction --seed --shard-size --threads --max-skip --limit --max-pixels \
    --max-file-mb --quiet --verify
help_lists export --seed --towers --classes --size --width-div
help_lists dump --out --batch --seed --size --towers --classes --width-div $place
help_lists plot --out --x
help_lists ckpt-check
help_lists bench $place --batch --size --warmup --steps --profile-steps --batches --json \
    --towers --classes --width-div --seed --lr
help_lists filters --out --cols --zoom
help_lists features --out --data --split --layer --offset --limit --batch --quiet $place
help_lists neighbours --out --json --data --queries --seed --query-split --layer --neighbours \
    --limit --tile --batch --quiet $place

# the command list; `twotower help CMD` is `twotower CMD --help`
expect 0 "usage: twotower COMMAND" -- help
expect 0 "twotower --FLAG ...  *the same as twotower train --FLAG" -- help
for c in train summary prep export dump plot ckpt-check bench filters features neighbours; do
    expect 0 "^  $c " -- help
    expect 0 "usage: twotower $c" -- help "$c"
    expect 2 "twotower $c: unknown flag '--bogus'" -- "$c" --bogus
done
expect 2 "unknown command 'nope'" -- nope
expect 0 "total parameters: 60965224" -- summary
expect 0 "width-div N .*(default 1)" -- train --help
expect 0 "^  --conv gemm|cudnn|auto$" -- train --help
expect 0 "each layer.s faster$" -- train --help
expect 0 "^ *(default: gemm in fp32, cudnn in tf32 and bf16)$" -- train --help
expect 0 "^  --conv gemm|cudnn|auto$" -- bench --help

# train's refusals (--data names no folder: a refusal that failed would stop there, not
# start training)
nodata="--data /nonexistent/twotower-cli"
expect 2 "unknown flag '--bogus'" -- train --cpu $nodata --bogus
expect 2 "--batch needs a value" -- train --cpu $nodata --batch
expect 2 "--train-limit 8 is less than one batch" -- train --cpu $nodata --train-limit 8 --batch 16
# the kill test's fault-injection hook is checked before anything is opened
TWOTOWER_DEBUG_CKPT_PAUSE_MS=abc \
    expect 2 "TWOTOWER_DEBUG_CKPT_PAUSE_MS='abc': not an integer in 0..60000" -- train --cpu $nodata
TWOTOWER_DEBUG_CKPT_PAUSE_MS=60001 \
    expect 2 "TWOTOWER_DEBUG_CKPT_PAUSE_MS='60001': not an integer" -- train --cpu $nodata
expect 2 "--conv 'winograd'" -- train --cpu $nodata --conv winograd
expect 2 "--conv auto is a GPU option" -- train --cpu $nodata --conv auto
expect 2 "--cpu-conv 'dnnl': expected onednn or gemm" -- train --cpu $nodata --cpu-conv dnnl
expect 2 "--cpu-conv gemm is a CPU option" -- train --gpus 0 $nodata --cpu-conv gemm
expect 2 "bf16, so it needs a GPU, --precision bf16 and cuDNN.s convolutions (bf16.s default in a build with cuDNN, or --conv cudnn or auto), and this run is on the CPU: drop --bf16-acts" -- train --cpu $nodata --bf16-acts
expect 2 "this run is on the CPU: drop --bf16-acts" -- bench --cpu --bf16-acts
expect 2 "--views '5': expected 1 or 10" -- train --cpu $nodata --views 5
expect 2 "--mirror 'maybe': expected on or off" -- train --cpu $nodata --mirror maybe
expect 2 "--pca-std '-1'" -- train --cpu $nodata --pca-std -1
expect 2 "--lr 'inf'" -- train --cpu $nodata --lr inf
expect 2 "--quiet takes no value" -- train --cpu $nodata --quiet=1
expect 2 "unknown flag '--bat'" -- train --cpu $nodata --bat 16    # no abbreviations
expect 2 "unexpected argument 'extra'" -- train --cpu $nodata extra
# a flag of another command is refused, never written through a null destination
expect 2 "unknown flag '--classes'" -- train --cpu $nodata --classes 10
expect 2 "unknown flag '--gpus'" -- summary --gpus 0
expect 2 "unknown flag '--warmup'" -- train --cpu $nodata --warmup 1

# one rule for integers in every command: no fractions, hex, exponents or junk
for v in 2.5 0x10 1e3 16k " 16"; do
    expect 2 "--batch '$v': expected a whole number" -- train --cpu $nodata --batch "$v"
    expect 2 "--threads '$v': expected a whole number" -- prep /nonexistent/a /nonexistent/b --threads "$v"
    expect 2 "--shard-size '$v': expected a whole number" -- prep /nonexistent/a /nonexistent/b --shard-size "$v"
done
expect 2 "--limit '2.5'" -- prep /nonexistent/a /nonexistent/b --limit 2.5
expect 2 "--seed '2.5'" -- prep /nonexistent/a /nonexistent/b --seed 2.5
expect 2 "--max-file-mb '0x10'" -- prep /nonexistent/a /nonexistent/b --max-file-mb 0x10
expect 2 "--max-pixels '1e6'" -- prep /nonexistent/a /nonexistent/b --max-pixels 1e6
expect 2 "--val-fraction '2'" -- prep /nonexistent/a /nonexistent/b --val-fraction 2
expect 2 "--seed '1.5'" -- export /nonexistent/out.safetensors --seed 1.5
expect 2 "--width-div '0x2'" -- export /nonexistent/out.safetensors --width-div 0x2
expect 2 "--seed '-1'" -- dump --out /nonexistent/d.safetensors --seed -1
expect 2 "--batch '2.5'" -- dump --out /nonexistent/d.safetensors --batch 2.5
expect 2 "--steps '0x10'" -- bench --cpu --steps 0x10
expect 2 "--lr '1e9'" -- bench --cpu --lr 1e9
expect 2 "--classes '1.5'" -- summary --classes 1.5
expect 2 "--x 'time': expected epoch or step" -- plot /nonexistent/run --x time

# the other commands' refusals
expect 2 "--tf32" -- bench --cpu --tf32
expect 2 "--precision bf16" -- bench --cpu --precision bf16
expect 2 "--tf32 and --precision bf16" -- bench --cpu --tf32 --precision bf16
expect 2 "--precision 'fp16': expected fp32, tf32 or bf16" -- bench --cpu --precision fp16
expect 2 "--precision bf16" -- dump --out /nonexistent/d.safetensors --cpu --precision bf16
expect 2 "--serial takes no value" -- bench --cpu --serial=1
expect 2 "--tf32" -- dump --out /nonexistent/d.safetensors --tf32
expect 2 "--gpus '0,0': device 0 is repeated" -- dump --out /nonexistent/d.safetensors --gpus 0,0
expect 2 "--out FILE is required" -- dump
expect 2 "is a folder" -- export /tmp
expect 2 "no arguments" -- export
expect 2 "unexpected argument 'c'" -- export a b c
expect 2 "no arguments" -- plot
expect 2 "no arguments" -- ckpt-check
expect 2 "expected SRC OUT" -- prep /nonexistent/a
expect 2 "--verify takes OUT alone" -- prep --verify a b
expect 1 "meta.bin" -- prep --verify /nonexistent/twotower-cli-test

# the figures' commands: -o is required, a bad value names its flag, an output that is the
# checkpoint is refused before anything is read; filters draws a version-2 checkpoint
fix=$(dirname "$0")/fixtures/ckpt-v2/ckpt-00000037.ttc
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
expect 2 "-o PNG is required" -- filters "$fix"
expect 2 "-o FILE is required" -- features "$fix"
expect 2 "-o PNG is required" -- neighbours "$fix"
expect 2 "no arguments" -- filters -o "$tmp/a.png"
expect 2 "unexpected argument 'b'" -- features a b -o "$tmp/f.st"
expect 2 "--split 'val': expected train or test" -- features "$fix" -o "$tmp/f.st" --split val
expect 2 "--query-split 'val': expected test or train" -- neighbours "$fix" -o "$tmp/a.png" --query-split val
expect 2 "--queries '0': expected a whole number" -- neighbours "$fix" -o "$tmp/a.png" --queries 0
expect 2 "--neighbours '2.5'" -- neighbours "$fix" -o "$tmp/a.png" --neighbours 2.5
expect 2 "--cols '0x4'" -- filters "$fix" -o "$tmp/a.png" --cols 0x4
expect 2 "--offset '-1'" -- features "$fix" -o "$tmp/f.st" --offset -1
expect 2 "--gpus '0,0': device 0 is repeated" -- features "$fix" -o "$tmp/f.st" --gpus 0,0
expect 2 "--tf32" -- neighbours "$fix" -o "$tmp/a.png" --cpu --tf32
expect 2 "is the same file as the input" -- filters "$fix" -o "$fix"
expect 2 "is the same file as the input" -- features "$fix" -o "$fix"
expect 2 "--json .*is the same file as the input" -- neighbours "$fix" -o "$tmp/a.png" --json "$fix"
expect 2 "is -o's file too" -- neighbours "$fix" -o "$tmp/a.png" --json "$tmp/a.png"
expect 2 "exists and is a folder" -- filters "$fix" -o "$tmp"
expect 1 "checkpoint $tmp/none: No such file" -- filters "$tmp/none" -o "$tmp/a.png"
expect 0 "2 kernels (2 towers x 1) of 11x11x3" -- filters "$fix" -o "$tmp/conv1.png"
expect 2 "--data $tmp/none: no such folder" -- features "$fix" -o "$tmp/f.st" --cpu --data "$tmp/none"

# flags with no command run train
expect 2 "twotower train: --batch '0': expected a whole number from 1 to 4096" -- --cpu $nodata --batch 0
expect 2 "twotower train: unknown flag '--bogus'" -- --bogus
expect 2 "twotower train: unknown flag '--classes'" -- --cpu $nodata --classes 10
expect 0 "usage: twotower train" -- train --help
expect 0 "usage: twotower COMMAND" -- --help
# OpenBLAS's kernels: never its SSE3 fallback (Prescott) on a CPU with AVX2 and FMA (the
# program names better ones and starts again), and a user's OPENBLAS_CORETYPE stands.
# OPENBLAS_VERBOSE=2 makes a DYNAMIC_ARCH OpenBLAS print "Core: NAME" as it loads.
last_core() { OPENBLAS_VERBOSE=2 "$@" 2>&1 | sed -n 's/^Core: //p' | tail -1; }
core=$(last_core env -u OPENBLAS_CORETYPE "$exe" --version)
if [ -z "$core" ]; then
    echo "ok: OpenBLAS prints no core (not DYNAMIC_ARCH): nothing to check"
elif grep -qw avx2 /proc/cpuinfo && grep -qw fma /proc/cpuinfo && [ "$core" = Prescott ]; then
    echo "FAIL: OpenBLAS runs its Prescott kernels on a CPU with AVX2"
    fail=1
else
    echo "ok: OpenBLAS kernels: $core"
fi
forced=$(OPENBLAS_CORETYPE=Prescott last_core "$exe" --version)
if [ -n "$core" ] && [ "$forced" != Prescott ]; then
    echo "FAIL: OPENBLAS_CORETYPE=Prescott was replaced by $forced"
    fail=1
else
    echo "ok: OPENBLAS_CORETYPE=Prescott stands"
fi

exit $fail
