#!/usr/bin/env bash
# lrn.sh: one of the paper's claims, both arms, several seeds (experiment.py: CLAIMS["lrn"]).
# usage: tools/experiments/lrn.sh [--scale tiny|cpu|gpu|paper] [--data DIR] [--out DIR] [--seeds N]
exec /usr/bin/python3 "$(dirname "$0")/experiment.py" lrn "$@"
