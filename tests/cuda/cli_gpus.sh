#!/usr/bin/env bash
# cli_gpus.sh: `twotower train` refuses bad device arguments with exit code 2 and a
# message naming the flag, before any work starts (the data folder does not exist, so
# getting past the check would fail differently). Runs with or without a GPU: the
# no-device case hides the GPUs with CUDA_VISIBLE_DEVICES="". --tf32, --precision tf32|bf16,
# --conv cudnn and --conv auto on the CPU, and an unknown --conv, are refused the same way,
# as are --graph on on the CPU and an unknown --graph.
# usage: cli_gpus.sh PATH/TO/twotower
set -u
exe=$1
fail=0
expect() { # expect WANT_TEXT [env...] -- args...
    local want=$1; shift
    local envs=()
    while [ "$1" != "--" ]; do envs+=("$1"); shift; done
    shift
    local out rc
    out=$(env "${envs[@]}" "$exe" train --data /nonexistent/twotower-test "$@" 2>&1 >/dev/null)
    rc=$?
    if [ $rc -ne 2 ] || ! grep -q -- "$want" <<<"$out"; then
        echo "FAIL: twotower train $*: exit $rc (want 2), stderr: $out (want '$want')"
        fail=1
    else
        echo "ok: twotower train $* -> exit 2: $out"
    fi
}
expect "repeated" -- --gpus 0,0
expect "more than two" -- --gpus 0,1,2
expect "malformed" -- --gpus 0:1
expect "malformed" -- --gpus ""
expect "--cpu" -- --gpus 0 --cpu
expect "CUDA" CUDA_VISIBLE_DEVICES= -- --gpus 0
expect "CUDA" CUDA_VISIBLE_DEVICES= -- --gpus 0,1
expect "--tf32" -- --cpu --tf32
expect "--tf32" CUDA_VISIBLE_DEVICES= -- --tf32
expect "--precision bf16" -- --cpu --precision bf16
expect "--precision bf16" CUDA_VISIBLE_DEVICES= -- --precision bf16
expect "--tf32 (--precision tf32)" -- --cpu --precision tf32
expect "--conv cudnn" -- --cpu --conv cudnn
expect "--conv auto" -- --cpu --conv auto
expect "--conv auto" CUDA_VISIBLE_DEVICES= -- --conv auto
expect "--conv 'winograd'" -- --cpu --conv winograd
expect "CUDA device 4095\|CUDA driver\|no CUDA" -- --gpus 4095
expect "--graph on" -- --cpu --graph on
expect "--graph on" CUDA_VISIBLE_DEVICES= -- --graph on
expect "--graph 'sometimes'" -- --cpu --graph sometimes
exit $fail
