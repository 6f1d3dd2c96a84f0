/* One SGD step over a parameter, with its packed bf16 copies written in the same pass.
 *
 * p <- p + alpha * (g * coef), with alpha = -lr and coef the gradient clipping factor: the
 * same two roundings as torch's clip_grad_norm_ (g * coef) and SGD's p.add_(g, alpha=-lr)
 * (one fused multiply-add), so the weights are those of torch.optim.SGD without momentum
 * or weight decay. While a block of 16 rows x 32 columns of the new weights is in
 * registers it is also written, rounded to bf16, in the layouts gemm_bf16.c reads (`nk`:
 * the operand B = p^T; `kn`: B = p), so the next step's products need no cast or packing
 * of the weights (benchmarks/RESULTS.md, round 10). Either may be NULL. They are written
 * into buffers packed before (bf16_pack_nk / bf16_pack_kn), whose padding stays zero.
 */
#include "gemm_bf16.h"

#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__AVX512F__) && defined(__AVX512BF16__)

void sgd_step(int64_t R, int64_t C, float *p, const float *g, float coef, float alpha, bf16 *nk,
              bf16 *kn, int threads) {
    int64_t RB = ceil_div(R, BLOCK), CC = ceil_div(C, 2 * BLOCK);
    int64_t K2_nk = ceil_div(C, 2), K2_kn = ceil_div(R, 2);
#pragma omp parallel for num_threads(threads) schedule(static) collapse(2)
    for (int64_t rb = 0; rb < RB; ++rb)
        for (int64_t cc = 0; cc < CC; ++cc) {
            int64_t r0 = rb * BLOCK, c0 = cc * 2 * BLOCK;
            __mmask16 k_lo = lanes(C - c0), k_hi = lanes(C - c0 - BLOCK);
            __m512 lo[BLOCK], hi[BLOCK];
            const __m512 vc = _mm512_set1_ps(coef), va = _mm512_set1_ps(alpha);
            for (int l = 0; l < BLOCK; ++l) {
                if (r0 + l >= R) {
                    lo[l] = hi[l] = _mm512_setzero_ps();
                    continue;
                }
                float *pr = p + (r0 + l) * C + c0;
                const float *gr = g + (r0 + l) * C + c0;
                lo[l] = _mm512_fmadd_ps(_mm512_mul_ps(v_ld(gr, k_lo), vc), va, v_ld(pr, k_lo));
                hi[l] = _mm512_fmadd_ps(_mm512_mul_ps(v_ld(gr + BLOCK, k_hi), vc), va,
                                        v_ld(pr + BLOCK, k_hi));
                v_st(pr, k_lo, lo[l]);
                v_st(pr + BLOCK, k_hi, hi[l]);
            }
            if (kn) /* rows 2kp, 2kp + 1 of p interleaved, per 16 columns */
                for (int i = 0; i < BLOCK / 2 && r0 + 2 * i < R; ++i)
                    for (int h = 0; h < 2; ++h) {
                        int64_t j0 = c0 + h * BLOCK, kp = (r0 + 2 * i) / 2;
                        if (j0 >= C) break;
                        __m512 a = h ? hi[2 * i] : lo[2 * i], b = h ? hi[2 * i + 1] : lo[2 * i + 1];
                        bf16 *dst = kn + (((j0 / PANEL) * K2_kn + kp) * 4 + (j0 / BLOCK) % 4) * 32;
                        _mm512_storeu_si512((void *)dst, interleave_bf16(a, b));
                    }
            if (nk) { /* 16 rows' pairs of columns, transposed: one vector per pair */
                __m512i w[BLOCK];
                for (int l = 0; l < BLOCK; ++l) w[l] = (__m512i)_mm512_cvtne2ps_pbh(hi[l], lo[l]);
                bf16_transpose16(w);
                bf16 *base = nk + ((rb / 4) * K2_nk * 4 + rb % 4) * 32;
                for (int64_t i = 0; i < BLOCK && cc * BLOCK + i < K2_nk; ++i)
                    _mm512_storeu_si512((void *)(base + (cc * BLOCK + i) * 128), w[i]);
            }
        }
}

#else

void sgd_step(int64_t R, int64_t C, float *p, const float *g, float coef, float alpha, bf16 *nk,
              bf16 *kn, int threads) {
    (void)nk, (void)kn, (void)threads;
    for (int64_t i = 0; i < R * C; ++i) p[i] = __builtin_fmaf(g[i] * coef, alpha, p[i]);
}
#endif
