#!/usr/bin/env bash
# towers.sh: one of the paper's claims, both arms, several seeds (experiment.py: CLAIMS["towers"]).
# usage: tools/experiments/towers.sh [--scale tiny|cpu|gpu|paper] [--data DIR] [--out DIR] [--seeds N]
exec /usr/bin/python3 "$(dirname "$0")/experiment.py" towers "$@"
