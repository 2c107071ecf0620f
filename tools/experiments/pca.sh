#!/usr/bin/env bash
# pca.sh: one of the paper's claims, both arms, several seeds (experiment.py: CLAIMS["pca"]).
# usage: tools/experiments/pca.sh [--scale tiny|cpu|gpu|paper] [--data DIR] [--out DIR] [--seeds N]
exec /usr/bin/python3 "$(dirname "$0")/experiment.py" pca "$@"
