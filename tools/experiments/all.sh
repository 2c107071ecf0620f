#!/usr/bin/env bash
# all.sh: every claim's script in turn (each resumes where it stopped), then the results
# page OUT/index.md gathering their tables and figures.
# usage: tools/experiments/all.sh [--scale S] [--data DIR] [--out DIR] [--seeds N]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
scale=cpu out=""
args=("$@")
while [ $# -gt 0 ]; do
  case "$1" in
    --scale) scale=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) shift ;;
  esac
done
out=${out:-$here/../../runs/experiments/all-$scale}
rest=()
skip=0
for a in "${args[@]}"; do  # every flag but --out goes to each script
  if [ $skip = 1 ]; then skip=0; continue; fi
  if [ "$a" = --out ]; then skip=1; continue; fi
  rest+=("$a")
done
for n in lrn pool towers relu_tanh dropout pca views; do
  "$here/$n.sh" "${rest[@]}" --out "$out/$n"
done
/usr/bin/python3 "$here/results_page.py" "$out"
