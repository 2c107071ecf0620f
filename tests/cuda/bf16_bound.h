/* bf16_bound.h: the error bound of a GEMM with bf16 operands and fp32 sums against the fp32
 * CPU, element by element, for the bf16 tests (tests/cuda: the host emulation and the GPU).
 * Plain C: needs no GPU. paper_notes.md, "bf16 GEMM operands", derives it. */
#ifndef TT_TEST_BF16_BOUND_H
#define TT_TEST_BF16_BOUND_H

#include <stddef.h>

/* bf16's unit roundoff: 8 significant bits, so rounding to nearest moves a value by at most
 * 2^-8 of itself */
#define TT_BF16_U (1.0 / 256.0)

/* The factor f(K) of the bound |bf16 result - fp32 result| <= f(K) * sum_k |a_k b_k| for one
 * output of a reduction of length K: each of the two operands rounded once, (1 + u)^2 - 1 =
 * 2u + u^2, plus both sides' fp32 accumulation, at most K + 2 roundings of 2^-23 each (one
 * ulp, so that a tensor core that truncates its partial sums is covered too) on each side,
 * and 1% for the fp32 rounding of the bound itself. */
double tt_bf16_factor(long K);

/* Prints "what: n, max|ref|, max abs err, its ratio to the bound, max err / max|ref|" and
 * returns 1 when every |got[i] - ref[i]| <= factor * absref[i] + 1e-30 and every got[i] is
 * finite; absref: the same computation on the absolute values of the operands (the CPU
 * layer run on |in|, |w|, |dout|), the sum_k |a_k b_k| of each output. */
int tt_bf16_within(const char *what, const float *got, const float *ref, const float *absref,
                   size_t n, double factor);

/* x[i] = |x[i]| */
void tt_abs(float *x, size_t n);

#endif
