#!/usr/bin/python3
"""test_bf16_torch.py: the host rounding of --precision bf16 (kernels.h, tower_k_bf16, run
through the bf16_round filter) against PyTorch's float32 -> bfloat16 conversion of the same
values: random bit patterns, every bf16 value and the ties around it, subnormals, the largest
floats, zeros and infinities, bit for bit; NaN to a NaN (PyTorch keeps 0x7fc0, kernels.h
gives the canonical 0x7fff of CUDA's conversion). Skips (77) when torch is not importable.

  test_bf16_torch.py PATH/TO/bf16_round"""

import subprocess
import sys

try:
    import numpy as np
    import torch
except ImportError as e:
    print(f"skip: {e}")
    sys.exit(77)


def main():
    exe = sys.argv[1]
    rng = np.random.default_rng(2012)
    h = np.arange(1 << 16, dtype=np.uint32) << 16
    parts = [rng.integers(0, 1 << 32, size=1 << 20, dtype=np.uint64).astype(np.uint32),
             h, h | 0x8000, h | 0x7fff, h | 0x8001, h | 0xffff, h | 1,
             rng.integers(0, 1 << 23, size=1 << 14, dtype=np.uint32),           # subnormals
             rng.integers(0, 1 << 23, size=1 << 14, dtype=np.uint32) | 0x80000000,
             np.array([0, 0x80000000, 0x7f800000, 0xff800000, 0x7f7fffff, 0xff7fffff,
                       0x7f7f7fff, 0x7f7f8000, 0x00008000, 0x00018000, 0x3f808000,
                       0x3f818000, 0x7fc00000, 0x7f800001, 0xffffffff], dtype=np.uint32)]
    bits = np.concatenate(parts).astype(np.uint32)
    r = subprocess.run([exe], input=bits.tobytes(), capture_output=True, check=True)
    ours = np.frombuffer(r.stdout, dtype=np.uint16)
    assert ours.size == bits.size, f"{ours.size} results for {bits.size} values"
    x = torch.from_numpy(bits.view(np.float32).copy())
    theirs = x.bfloat16().view(torch.int16).numpy().view(np.uint16)
    nan = np.isnan(bits.view(np.float32))
    assert np.all(ours[nan] == 0x7fff), "a NaN did not give 0x7fff"
    assert np.all((theirs[nan] & 0x7f80) == 0x7f80) and np.all((theirs[nan] & 0x7f) != 0)
    bad = np.nonzero((ours != theirs) & ~nan)[0]
    if bad.size:
        i = bad[0]
        sys.exit(f"FAIL: {bad.size} of {bits.size} differ from torch {torch.__version__}; "
                 f"first {bits[i]:#010x}: ours {ours[i]:#06x}, torch {theirs[i]:#06x}")
    print(f"ok: {bits.size} floats rounded to bf16 as torch {torch.__version__} rounds them "
          f"({int(nan.sum())} NaNs to NaN)")


if __name__ == "__main__":
    main()
