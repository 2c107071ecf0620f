#!/usr/bin/env bash
# deps.sh: installs every Debian 12 package twotower's build, tests and tools need.
# Sourced by run_main.sh and run_tests.sh; safe to run again (apt skips what is there).
# The CUDA toolkit is not a Debian 12 package at the version we need (13); when nvcc is
# absent the build leaves the CUDA backend out (-Dcuda=auto).
set -euo pipefail
pkgs=(meson ninja-build pkg-config gcc libc6-dev
      libopenblas-dev libdnnl-dev libpng-dev libjpeg62-turbo-dev zlib1g-dev libjansson-dev libmatio-dev libcriterion-dev
      dataset-fashion-mnist python3 python3-numpy python3-torch python3-torchvision gnuplot-nox
      clang libclang-rt-14-dev)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "deps.sh: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# nvcc lives here on machines with the CUDA toolkit
if [ -d /usr/local/cuda/bin ]; then export PATH="/usr/local/cuda/bin:$PATH"; fi
