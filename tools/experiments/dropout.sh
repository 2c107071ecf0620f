#!/usr/bin/env bash
# dropout.sh: one of the paper's claims, both arms, several seeds (experiment.py: CLAIMS["dropout"]).
# usage: tools/experiments/dropout.sh [--scale tiny|cpu|gpu|paper] [--data DIR] [--out DIR] [--seeds N]
exec /usr/bin/python3 "$(dirname "$0")/experiment.py" dropout "$@"
