#!/usr/bin/env bash
# cli.sh: the `twotower` command line's answers that need no data and no GPU: help exits 0
# and lists the flags; bad flags exit 2 naming the flag, before any work.
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
expect 0 "usage: twotower COMMAND" -- help
expect 0 "--conv gemm|cudnn" -- train --help
expect 0 "--tf32" -- train --help
expect 0 "--width-div" -- summary --help
expect 0 "total parameters: 60965224" -- summary
expect 2 "unknown flag '--bogus'" -- train --cpu --bogus
expect 2 "--batch needs a value" -- train --cpu --batch
expect 2 "--train-limit 8 is less than one batch" -- train --cpu --train-limit 8 --batch 16
expect 2 "--conv 'winograd'" -- train --cpu --conv winograd
expect 2 "--tf32" -- bench --cpu --tf32
expect 2 "is a folder" -- export /tmp
expect 1 "meta.bin" -- prep --verify /nonexistent/twotower-cli-test
exit $fail
