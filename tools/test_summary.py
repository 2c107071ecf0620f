#!/usr/bin/env python3
"""test_summary.py: the closing line of run_tests.sh, 'N passed, N failed, N skipped',
counted over meson's JSON test logs (one line per test program)."""
import json
import sys

passed = failed = skipped = 0
for path in sys.argv[1:]:
    try:
        lines = open(path).read().splitlines()
    except OSError:
        continue  # that pass did not run (an earlier one failed)
    for line in lines:
        result = json.loads(line)["result"]
        if result in ("OK", "EXPECTEDFAIL"):
            passed += 1
        elif result == "SKIP":
            skipped += 1
        else:
            failed += 1
print(f"{passed} passed, {failed} failed, {skipped} skipped")
