#!/bin/sh
# tests/reference: `twotower dump` then tools/reference/compare.py on the dump (one
# training step of twotower against PyTorch). The dump is removed afterwards (the full
# net's is ~490 MB).
# usage: agreement.sh TWOTOWER COMPARE_PY OUTDIR [dump flags...]
set -eu
exe=$1
compare=$2
outdir=$3
shift 3
if ! /usr/bin/python3 -c 'import torch, numpy' 2>/dev/null; then
    echo "agreement.sh: /usr/bin/python3 cannot import torch and numpy" \
         "(apt-get install -y python3-torch python3-numpy)" >&2
    exit 1
fi
mkdir -p "$outdir"
dump="$outdir/agreement-$$.safetensors"
trap 'rm -f "$dump" "$dump.tmp"' EXIT INT TERM
"$exe" dump --out "$dump" "$@"
/usr/bin/python3 "$compare" --threads 2 "$dump"
