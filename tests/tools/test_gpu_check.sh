#!/usr/bin/env bash
# test_gpu_check.sh BUILD: tools/gpu_check.sh's own mechanics without a GPU (it runs for
# real only on a lent GPU machine, rarely): --help, a bad argument, and, with a stand-in
# nvidia-smi and $OUT set, that a run packs its logs into $OUT as two files (the lent
# machine sends back 8 at most), notes programs the deadline left unstarted instead of
# running them, and refuses a stage list that names no stage.
set -uo pipefail
build=$(cd "$1" && pwd)
root=$(cd "$(dirname "$0")/../.." && pwd)
script=$root/tools/gpu_check.sh
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
check() { if eval "$1"; then :; else echo "FAIL: $2"; fails=$((fails + 1)); fi; }

bash "$script" --help >"$tmp/help" 2>&1
check '[ $? -eq 0 ] && grep -q -- "--deadline S" "$tmp/help" && grep -q -- "--prepare-carry" "$tmp/help"' \
      "--help lists the flags"
bash "$script" --no-such-flag >"$tmp/bad" 2>&1
check '[ $? -eq 2 ] && grep -q "unknown argument" "$tmp/bad"' "a bad argument: exit 2, named"
bash "$script" --deadline 5m >"$tmp/bad" 2>&1
check '[ $? -eq 2 ] && grep -q -- "--deadline .5m.: expected whole seconds" "$tmp/bad"' \
      "a deadline that is not whole seconds: exit 2, named"

# a stand-in for the driver's tool: one GPU listed
mkdir -p "$tmp/bin" "$tmp/out"
printf '#!/bin/sh\ncase "$*" in *-L*) echo "GPU 0: Stand-in GPU (UUID: GPU-test)";; *compute_cap*) echo 9.0;; *) echo stand-in;; esac\n' \
    >"$tmp/bin/nvidia-smi"
chmod +x "$tmp/bin/nvidia-smi"

# --deadline 1: every program of the stages is noted as not started, none runs
PATH="$tmp/bin:$PATH" OUT="$tmp/out" TMPDIR="$tmp" bash "$script" --build "$build" --stages tests,epoch \
    --deadline 1 >"$tmp/run" 2>&1
rc=$?
check '[ $rc -eq 1 ]' "a run whose programs did not start fails (exit $rc)"
check '[ "$(ls "$tmp/out" | sort | tr "\n" " ")" = "logs.tgz summary.txt " ]' \
      "\$OUT holds summary.txt and logs.tgz alone: $(ls "$tmp/out" | tr '\n' ' ')"
s=$tmp/out/summary.txt
check 'grep -q "^GPUs: 1 (GPU 0: Stand-in GPU" "$s"' "the GPU line"
check 'grep -q "^--- tests at [0-9]* s (deadline 1 s)" "$s" && grep -q "^--- epoch at" "$s"' \
      "a line where each stage began"
if [ -x "$build/src/train/twotower" ] && [ -x "$build/tests/cuda/test_device" ]; then
    check 'grep -q "FAIL (not started: the deadline (--deadline) was near): tests/cuda/test_device" "$s"' \
          "a test program past the deadline is noted, not run"
fi
check 'grep -q "FAIL: one epoch --precision fp32 --conv gemm (not started" "$s" || ! [ -x "$build/src/train/twotower" ]' \
      "an epoch past the deadline is noted, not run"
check 'grep -q "^gpu_check: FAILED (2 stages" "$s"' "the last line counts the stages"
mkdir -p "$tmp/logs" && tar -C "$tmp/logs" -xzf "$tmp/out/logs.tgz"
check '[ -f "$tmp/logs/summary.txt" ] && [ -f "$tmp/logs/machine.txt" ] && [ -f "$tmp/logs/gpus.txt" ]' \
      "logs.tgz holds the summary, machine.txt and gpus.txt: $(ls "$tmp/logs" | tr '\n' ' ')"
check '! grep -q "Passing" "$tmp/logs/tests.log" 2>/dev/null' "no test program ran past the deadline"

# a stage list that names no stage
rm -rf "$tmp/out"/*
PATH="$tmp/bin:$PATH" OUT="$tmp/out" TMPDIR="$tmp" bash "$script" --build "$build" --stages none >"$tmp/none" 2>&1
rc=$?
check '[ $rc -eq 2 ] && grep -q "no stage ran" "$tmp/out/summary.txt"' "--stages none: exit 2 (got $rc)"

if [ $fails -gt 0 ]; then
    echo "--- the run's output:"; cat "$tmp/run"
    exit 1
fi
echo "test_gpu_check: all checks passed"
