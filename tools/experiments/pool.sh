#!/usr/bin/env bash
# pool.sh: one of the paper's claims, both arms, several seeds (experiment.py: CLAIMS["pool"]).
# usage: tools/experiments/pool.sh [--scale tiny|cpu|gpu|paper] [--data DIR] [--out DIR] [--seeds N]
exec /usr/bin/python3 "$(dirname "$0")/experiment.py" pool "$@"
