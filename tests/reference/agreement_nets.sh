#!/bin/sh
# tests/reference: every preset, and every switch that changes the math, against PyTorch:
# one training step each (dump_net: a dump at batch 2, 67 pixels, widths / 8, 10 classes)
# and two Adam updates, checked by one compare.py run. The dumps (~3 MB each) are removed
# afterwards. usage: agreement_nets.sh DUMP_NET COMPARE_PY OUTDIR
set -eu
dump=$1
compare=$2
outdir=$3/nets-$$
mkdir -p "$outdir"
trap 'rm -rf "$outdir"' EXIT INT TERM
n=0
d() { # NET SEED [switch value]...
    n=$((n + 1))
    net=$1 seed=$2
    shift 2
    "$dump" "$outdir/$n-$net.safetensors" "$net" 67 8 10 "$seed" "$@"
}
for net in alexnet2012 alexnet2012-1gpu half merged alexnet2014 torchvision fmnist; do
    d "$net" 11
done
d alexnet2012 12 lrn off               # two towers, no LRN
d torchvision 13 lrn on                # LRN after conv1 and conv2 where there was none
d half 14 pool 2:2                     # the paper's non-overlapping pooling
d torchvision 15 act tanh              # tanh (PyTorch's init: not saturated)
d alexnet2012 16 dropout 0.3           # another p, both towers' masks
d fmnist 17 dropout 0                  # no dropout at all
d fmnist 18 --update 0.001             # Adam, the preset's optimizer
d alexnet2012 19 optim adam beta2 0.99 --update 0.0005   # Adam switched on, two towers
/usr/bin/python3 "$compare" --threads 2 "$outdir"/*.safetensors
