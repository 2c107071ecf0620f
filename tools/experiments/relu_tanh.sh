#!/usr/bin/env bash
# relu_tanh.sh: one of the paper's claims, both arms, several seeds (experiment.py: CLAIMS["relu_tanh"]).
# usage: tools/experiments/relu_tanh.sh [--scale tiny|cpu|gpu|paper] [--data DIR] [--out DIR] [--seeds N]
#                                       [--threshold X]  (default: the scale's, CLAIMS["relu_tanh"]["per_scale"])
exec /usr/bin/python3 "$(dirname "$0")/experiment.py" relu_tanh "$@"
