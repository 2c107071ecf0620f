#!/usr/bin/env bash
# views.sh: one of the paper's claims, both arms, several seeds (experiment.py: CLAIMS["views"]).
# usage: tools/experiments/views.sh [--scale tiny|cpu|gpu|paper] [--data DIR] [--out DIR] [--seeds N]
exec /usr/bin/python3 "$(dirname "$0")/experiment.py" views "$@"
