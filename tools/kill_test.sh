#!/usr/bin/env bash
# kill_test.sh: kill -9 a training run at random moments, again and again, and check that
# each time the newest checkpoint is valid (`twotower ckpt-check`) and that resuming
# continues from it (the checkpointed step never goes back). At the end the run is let
# finish, and its per-step losses must equal those of an uninterrupted run bit for bit.
#
# usage: tools/kill_test.sh [TWOTOWER_BINARY] [KILLS]
#   TWOTOWER_BINARY  default build/src/train/twotower
#   KILLS            default 50
# environment:
#   KILL_TEST_FLAGS  the training flags (default: a tiny CPU run on Fashion-MNIST, below)
#   KILL_TEST_MAX_MS the longest wait before a kill, in ms (default: 1.2 x the wall time of
#                    the uninterrupted reference run, so kills land anywhere from start-up
#                    to the last checkpoint write)
#   KILL_TEST_SEED   seed of the kill moments (default 1), so a failure can be replayed
#   KILL_TEST_KEEP   1: keep the work folder for inspection
set -u -o pipefail

BIN=${1:-build/src/train/twotower}
KILLS=${2:-50}
RANDOM=${KILL_TEST_SEED:-1}

die() { echo "kill_test: FAIL: $*" >&2; exit 1; }
[ -x "$BIN" ] || die "$BIN is not an executable (build first, or pass the binary)"

# A checkpoint every 3 steps and a metrics line every step (so every loss is compared).
# With --width-div the net is tiny (KBs per checkpoint); without it, 67-pixel inputs
# keep the full widths (160 MB per checkpoint: slow, but the same test).
if "$BIN" help 2>/dev/null | grep -q -- '--width-div'; then
    TINY="--size 67 --batch 2 --width-div 8 --train-limit 48"
else
    TINY="--size 67 --batch 2 --train-limit 16"
fi
FLAGS=${KILL_TEST_FLAGS:-"--cpu $TINY --epochs 2 --test-limit 8 --ckpt-every 3 --keep 2 --log-every 1 --quiet"}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/tt-kill-XXXXXX") || die "mktemp"
cleanup() { [ "${KILL_TEST_KEEP:-0}" = 1 ] && echo "kill_test: kept $WORK" || rm -rf "$WORK"; }
trap cleanup EXIT
RUN="$WORK/run"
REF="$WORK/ref"

# The checkpointed step of the newest checkpoint in RUN, or -1 when there is none.
newest_step() {
    local f
    f=$(ls "$RUN/ckpt/" 2>/dev/null | grep -E '^ckpt-[0-9]+\.ttc$' | sort -t- -k2 -n | tail -1)
    if [ -z "$f" ]; then echo -1; return; fi
    f=${f#ckpt-}
    f=${f%.ttc}
    echo $((10#$f))
}

# "step loss" of every train line of a metrics.jsonl (the fields the losses live in).
losses() {
    grep '"type": "train"' "$1/metrics.jsonl" |
        sed -E 's/.*"step": ([0-9]+).*"loss": ([^,}]+).*/\1 \2/'
}

echo "kill_test: reference run (uninterrupted): $BIN train $FLAGS --run $REF"
t0=$(date +%s%N)
"$BIN" train $FLAGS --run "$REF" > "$WORK/ref.log" 2>&1 || {
    tail -20 "$WORK/ref.log" >&2
    die "the uninterrupted run failed"
}
ref_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
[ -n "$(losses "$REF")" ] || die "the reference run wrote no train lines to $REF/metrics.jsonl"
MAX_MS=${KILL_TEST_MAX_MS:-$(( ref_ms * 12 / 10 > 100 ? ref_ms * 12 / 10 : 100 ))}
echo "kill_test: the reference run took ${ref_ms} ms; kills land 1..${MAX_MS} ms after a start"

kills=0 finished=0 prev=-1 starts=0 resumed=0
while [ $kills -lt "$KILLS" ]; do
    resume=()
    if [ "$(newest_step)" -ge 0 ]; then
        resume=(--resume "$RUN")
        resumed=$((resumed + 1))
    fi
    "$BIN" train $FLAGS --run "$RUN" "${resume[@]}" > "$WORK/last.log" 2>&1 &
    pid=$!
    starts=$((starts + 1))
    ms=$(( (RANDOM * 32768 + RANDOM) % MAX_MS + 1 ))
    sleep "$(printf '%d.%03d' $((ms / 1000)) $((ms % 1000)))"
    if kill -9 "$pid" 2>/dev/null; then
        wait "$pid" 2>/dev/null
        kills=$((kills + 1))
    else
        # it finished before the kill: start over from scratch so kills keep landing
        wait "$pid"
        rc=$?
        [ $rc -eq 0 ] || { tail -20 "$WORK/last.log" >&2; die "run exited $rc (start $starts)"; }
        finished=$((finished + 1))
        [ -n "$(losses "$RUN")" ] || die "a finished run left no train lines"
        diff <(losses "$REF") <(losses "$RUN") > "$WORK/diff.txt" ||
            { head -20 "$WORK/diff.txt" >&2; die "a finished, killed-and-resumed run differs from the reference"; }
        rm -rf "$RUN"
        prev=-1
        continue
    fi
    step=$(newest_step)
    if [ "$step" -ge 0 ]; then
        "$BIN" ckpt-check "$RUN" > "$WORK/check.log" 2>&1 ||
            { cat "$WORK/check.log" >&2; die "after kill $kills (${ms} ms) the newest checkpoint is bad"; }
        [ "$step" -ge "$prev" ] ||
            die "after kill $kills the newest checkpoint went back from step $prev to $step"
        prev=$step
    fi
    ls "$RUN/ckpt" 2>/dev/null | grep -qE '\.tmp$' && tmp=" (a .tmp was left: a write was cut)" || tmp=""
    echo "kill_test: kill $kills after ${ms} ms: newest checkpoint step $step$tmp"
done

# Let the last run finish, then compare with the reference.
if [ -d "$RUN" ]; then
    resume=()
    [ "$(newest_step)" -ge 0 ] && resume=(--resume "$RUN")
    "$BIN" train $FLAGS --run "$RUN" "${resume[@]}" > "$WORK/last.log" 2>&1 ||
        { tail -20 "$WORK/last.log" >&2; die "the final resumed run failed"; }
    finished=$((finished + 1))
    diff <(losses "$REF") <(losses "$RUN") > "$WORK/diff.txt" ||
        { head -20 "$WORK/diff.txt" >&2; die "the killed-and-resumed run's losses differ from the reference"; }
fi
echo "kill_test: OK: $kills kills (SIGKILL) over $starts starts ($resumed resumed), $finished run(s) finished with losses identical to the uninterrupted run"
