#!/usr/bin/env bash
# run_tests.sh: README command (b), also what CI runs. Installs the packages, builds with
# warnings as errors (the CUDA code too, when nvcc is present), runs the whole suite (GPU
# tests skip without a device), then rebuilds the CPU code with AddressSanitizer and
# UndefinedBehaviorSanitizer and runs the CPU suites again under them, then a short fuzz
# run. Ends with one line 'N passed, N failed, N skipped' over both passes.
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/deps.sh
export OPENBLAS_NUM_THREADS=2
rc=0
rm -f build-ci/meson-logs/testlog.json build-san/meson-logs/testlog-sanitize.json
[ -f build-ci/build.ninja ] || meson setup build-ci --buildtype=release -Dwerror_ci=true
meson compile -C build-ci
meson test -C build-ci --print-errorlogs --num-processes 1 --timeout-multiplier 3 || rc=1
if [ $rc -eq 0 ]; then
  [ -f build-san/build.ninja ] || meson setup build-san --buildtype=debugoptimized \
    -Dwerror_ci=true -Dcuda=disabled -Db_sanitize=address,undefined -Db_lundef=false
  meson compile -C build-san
  meson test -C build-san --setup sanitize --print-errorlogs --num-processes 1 \
    --timeout-multiplier 6 || rc=1
fi
if [ $rc -eq 0 ] && [ -x tools/fuzz/run.sh ]; then tools/fuzz/run.sh 10 || rc=1; fi
/usr/bin/python3 tools/test_summary.py build-ci/meson-logs/testlog.json \
  build-san/meson-logs/testlog-sanitize.json
[ $rc -eq 0 ] && echo "run_tests.sh: all suites passed" || echo "run_tests.sh: FAILED"
exit $rc
