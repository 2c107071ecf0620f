#!/usr/bin/env bash
# kill_test.sh: kill -9 a training run at random moments of its training, again and again,
# and check that each time the newest checkpoint is valid (`twotower ckpt-check`) and that
# resuming continues from it (the checkpointed step never goes back). No kill lands before
# the run trains: each start draws a checkpoint at or after the one it resumed from
# (a fresh run: its first), waits until that checkpoint exists, then kills at a random
# moment within the next checkpoint interval, so the kills spread over the steps and the
# checkpoint writes between them whatever the machine's speed. A kill whose process left
# its own ckpt-*.ttc.tmp landed inside a checkpoint write; they are counted. A tiny net's
# write takes well under a millisecond, so random kills may miss every write on a fast
# machine: every fifth kill is therefore sent inside one on purpose. That start runs with
# the trainer's fault-injection hook TWOTOWER_DEBUG_CKPT_PAUSE_MS, which stops each write
# halfway with its first half flushed to the .tmp; the kill goes once that .tmp appears,
# and the test fails if it did not land inside the write. In the last interval half the
# starts are let finish, so runs end and start over instead of dying at the same steps
# again and again. At the end the run is let finish, and its per-step losses must equal
# those of an uninterrupted run bit for bit.
#
# usage: tools/kill_test.sh [TWOTOWER_BINARY] [KILLS]
#   TWOTOWER_BINARY  default build/src/train/twotower
#   KILLS            default 50
# environment:
#   KILL_TEST_FLAGS  the training flags (default: a tiny CPU run on a 64-image prep of
#                    Fashion-MNIST made in the work folder, below; give --ckpt-every)
#   KILL_TEST_SRC    the Fashion-MNIST IDX folder of that prep
#                    (default /usr/share/datasets/fashion-mnist; missing: the test skips)
#   KILL_TEST_MAX_MS the longest wait after the drawn checkpoint appears, in ms (default:
#                    1.5 x one checkpoint interval of the uninterrupted reference run)
#   KILL_TEST_MIN_IN_WRITE  kills that must land inside a checkpoint write, the ones sent
#                    inside one on purpose included (default 1)
#   KILL_TEST_PAUSE_MS  the write's stop for the kills sent inside one (default 2000)
#   KILL_TEST_SEED   seed of the kill moments (default 1), so a failure can be replayed
#   KILL_TEST_KEEP   1: keep the work folder for inspection
set -u -o pipefail

BIN=${1:-build/src/train/twotower}
KILLS=${2:-50}
RANDOM=${KILL_TEST_SEED:-1}
MIN_IN_WRITE=${KILL_TEST_MIN_IN_WRITE:-1}
PAUSE_MS=${KILL_TEST_PAUSE_MS:-2000}

die() { echo "kill_test: FAIL: $*" >&2; exit 1; }
[ -x "$BIN" ] || die "$BIN is not an executable (build first, or pass the binary)"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/tt-kill-XXXXXX") || die "mktemp"
cleanup() { [ "${KILL_TEST_KEEP:-0}" = 1 ] && echo "kill_test: kept $WORK" || rm -rf "$WORK"; }
trap cleanup EXIT
RUN="$WORK/run"
REF="$WORK/ref"

# A checkpoint every 3 steps and a metrics line every step (so every loss is compared).
# With --width-div the net is tiny (KBs per checkpoint); without it, 67-pixel inputs
# keep the full widths (160 MB per checkpoint: slow, but the same test). The data is a
# 64 + 64 image prep of Fashion-MNIST: the shards are mapped in milliseconds, so a start
# costs little and the kills go to training, not to decoding 70,000 IDX images.
if "$BIN" train --help 2>/dev/null | grep -- '--width-div' > /dev/null; then
    TINY="--size 67 --batch 2 --width-div 8 --train-limit 48"
else
    TINY="--size 67 --batch 2 --train-limit 16"
fi
if [ -z "${KILL_TEST_FLAGS:-}" ]; then
    SRC=${KILL_TEST_SRC:-/usr/share/datasets/fashion-mnist}
    if [ ! -e "$SRC/train-images-idx3-ubyte.gz" ]; then
        echo "kill_test: SKIP: no Fashion-MNIST at $SRC (set KILL_TEST_SRC or KILL_TEST_FLAGS)"
        exit 77
    fi
    "$BIN" prep "$SRC" "$WORK/data" --limit 64 --quiet > "$WORK/prep.log" 2>&1 ||
        { cat "$WORK/prep.log" >&2; die "prep of $SRC failed"; }
fi
FLAGS=${KILL_TEST_FLAGS:-"--cpu --data $WORK/data $TINY --epochs 2 --test-limit 8 --ckpt-every 3 --keep 2 --log-every 1 --quiet"}

# NEWEST = the checkpointed step of the newest checkpoint in RUN, or -1 when there is
# none (a glob, no subprocess: it is polled every few milliseconds).
newest() {
    local f k
    NEWEST=-1
    for f in "$RUN"/ckpt/ckpt-*.ttc; do
        k=${f##*/ckpt-}
        k=${k%.ttc}
        [[ $k =~ ^[0-9]+$ ]] || continue
        k=$((10#$k))
        [ "$k" -gt "$NEWEST" ] && NEWEST=$k
    done
    return 0
}
newest_step() { newest; echo "$NEWEST"; }

# "step loss" of every train line of a metrics.jsonl (the fields the losses live in).
losses() {
    grep '"type": "train"' "$1/metrics.jsonl" |
        sed -E 's/.*"step": ([0-9]+).*"loss": ([^,}]+).*/\1 \2/'
}

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
# TARGET: the checkpoint a start waits for. A resumed process has restored its own once it
# appended its resume line to metrics.jsonl (after the start stamp).
reached() {
    if [ "$TARGET" -le "$FROM" ] && [ "$FROM" -ge 0 ]; then
        [ "$RUN/metrics.jsonl" -nt "$WORK/start.stamp" ]
    else
        newest
        [ "$NEWEST" -ge "$TARGET" ]
    fi
}
# wait_for PID TEST: polls until TEST succeeds (0) or process PID has exited (1).
wait_for() {
    local pid=$1
    shift
    until "$@"; do
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.002
    done
}
sleep_ms() { sleep "$(printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000)))"; }
# A ckpt-*.ttc.tmp written since the start stamp: the started process is inside a write
# (or a kill left it there). A glob, no subprocess.
tmp_since_start() {
    local f
    for f in "$RUN"/ckpt/ckpt-*.ttc.tmp; do
        [ "$f" -nt "$WORK/start.stamp" ] && return 0
    done
    return 1
}

EVERY=$(sed -nE 's/.*--ckpt-every ([0-9]+).*/\1/p' <<< "$FLAGS")
[ -n "$EVERY" ] || die "the training flags give no --ckpt-every: nothing to kill between"

echo "kill_test: reference run (uninterrupted): $BIN train $FLAGS --run $REF"
t0=$(now_ms)
"$BIN" train $FLAGS --run "$REF" > "$WORK/ref.log" 2>&1 &
pid=$!
RUN_SAVED=$RUN RUN=$REF FROM=-1 TARGET=0
wait_for "$pid" reached && first_ms=$(now_ms) || first_ms=$t0
RUN=$RUN_SAVED
wait "$pid" || { tail -20 "$WORK/ref.log" >&2; die "the uninterrupted run failed"; }
end_ms=$(now_ms)
[ -n "$(losses "$REF")" ] || die "the reference run wrote no train lines to $REF/metrics.jsonl"
LAST_STEP=$(losses "$REF" | tail -1 | cut -d' ' -f1)
[ "${LAST_STEP:-0}" -gt "$EVERY" ] || die "the reference run has $LAST_STEP steps, too few to kill"
interval_ms=$(( (end_ms - first_ms) * EVERY / LAST_STEP ))
MAX_MS=${KILL_TEST_MAX_MS:-$(( interval_ms * 3 / 2 > 5 ? interval_ms * 3 / 2 : 5 ))}
echo "kill_test: the reference run took $(( end_ms - t0 )) ms for $LAST_STEP steps (a" \
     "checkpoint every $EVERY, ${interval_ms} ms apart); each kill lands 0..${MAX_MS} ms" \
     "after a drawn checkpoint appears"

kills=0 finished=0 prev=-1 starts=0 resumed=0 in_write=0 forced=0
while [ $kills -lt "$KILLS" ]; do
    resume=()
    FROM=$(newest_step)
    if [ "$FROM" -ge 0 ]; then
        resume=(--resume "$RUN")
        resumed=$((resumed + 1))
    fi
    # the resumed checkpoint (a fresh run: the first) or one of the next two before the
    # end, then a moment within the interval after it: a run advances a little per kill,
    # so the kills cover its whole length, pass after pass
    lo=$(( FROM >= 0 ? FROM : EVERY ))
    n=$(( (LAST_STEP - lo) / EVERY ))
    n=$(( n < 1 ? 1 : n > 3 ? 3 : n ))
    TARGET=$(( lo + EVERY * ((RANDOM * 32768 + RANDOM) % n) ))
    ms=$(( (RANDOM * 32768 + RANDOM) % (MAX_MS + 1) ))
    # every fifth kill inside a write on purpose (the first at kill 3); in the last interval
    # half the other starts run to the end (their losses are compared, the next is fresh)
    aim=random
    if [ $((kills % 5)) -eq 2 ]; then
        aim=write
        ms=$(( ms % (PAUSE_MS / 4 + 1) ))
    elif [ $((lo + EVERY)) -ge "$LAST_STEP" ] && [ $((RANDOM % 2)) -eq 0 ]; then
        aim=end
    fi
    pause=0
    [ $aim = write ] && pause=$PAUSE_MS
    touch "$WORK/start.stamp"
    TWOTOWER_DEBUG_CKPT_PAUSE_MS=$pause \
        "$BIN" train $FLAGS --run "$RUN" "${resume[@]}" > "$WORK/last.log" 2>&1 &
    pid=$!
    case $aim in
        write) wait_for "$pid" tmp_since_start && sleep_ms "$ms" ;;
        random) wait_for "$pid" reached && sleep_ms "$ms" ;;
    esac
    starts=$((starts + 1))
    if [ $aim != end ] && kill -9 "$pid" 2>/dev/null; then
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
    # inside a write: this process's temporary checkpoint outlived it (one left by an
    # earlier kill predates the stamp)
    where="between checkpoint writes"
    if tmp_since_start; then
        in_write=$((in_write + 1))
        where="inside a checkpoint write (its .tmp was left)"
    elif [ $aim = write ]; then
        die "kill $kills, sent inside a paused checkpoint write, left no .tmp"
    fi
    when="${ms} ms after checkpoint $TARGET"
    if [ $aim = write ]; then
        forced=$((forced + 1))
        when="${ms} ms into a checkpoint write paused on purpose"
    fi
    step=$(newest_step)
    [ "$step" -ge 0 ] || die "kill $kills landed before any checkpoint existed"
    "$BIN" ckpt-check "$RUN" > "$WORK/check.log" 2>&1 ||
        { cat "$WORK/check.log" >&2; die "after kill $kills the newest checkpoint is bad"; }
    [ "$step" -ge "$prev" ] ||
        die "after kill $kills the newest checkpoint went back from step $prev to $step"
    prev=$step
    echo "kill_test: kill $kills $when, $where: newest checkpoint step $step"
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
[ "$in_write" -ge "$MIN_IN_WRITE" ] ||
    die "only $in_write of $kills kills landed inside a checkpoint write (at least $MIN_IN_WRITE wanted)"
echo "kill_test: OK: $kills kills (SIGKILL) during training over $starts starts ($resumed resumed):" \
     "$in_write inside a checkpoint write ($forced of them sent there on purpose)," \
     "$((kills - in_write)) between writes, none before" \
     "the first checkpoint; $finished run(s) finished with losses identical to the uninterrupted run"
