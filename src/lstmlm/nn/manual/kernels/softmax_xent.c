/* Softmax cross-entropy of the decoder's bf16 scores, row by row, on torch's threads.
 *
 * For each row n of scores (N, V): m = max_v s, Z = sum_v exp(s - m),
 * nll[n] = (m - s[y_n]) + log Z, in fp32. With `grad`, the row is then overwritten with
 * the gradient of nll[n] with respect to it, softmax - onehot(y_n), rounded to bf16, and
 * where `pairs` is given, written there too in gemm_bf16.c's bf16_pair_rows layout (for
 * rows 2kp and 2kp + 1, the pairs (g[2kp, v], g[2kp + 1, v]) in blocks of 80 columns v),
 * which the gradient of the decoder's weight reads as its transposed operand.
 *
 * Why: the torch version of this ran about ten ops per block of 64 rows (max, softmax,
 * gather, log, scatter, copy back), several passes over each 20 KB row and a transposing
 * copy of the whole (N, V) gradient for the weight's product; here each row is read
 * once from memory and written once per layout (benchmarks/RESULTS.md, round 10).
 * NaN or inf in a row give a NaN nll (the trainer's guard sees it).
 *
 * sampled_xent is the same for the sampled softmax (nn/sampled.py): row n holds the
 * scores of M candidate words, of which the first `used` take part (the rest are
 * padding), and the row's own target's score lies outside it, in extra[n]; a candidate
 * equal to the target (column hit[n], -1 for none) takes no part. nll[n] = log(exp(extra)
 * + sum_j exp(s_j)) - extra, the gradient overwrites the row (0 in the columns that take
 * no part) and that of extra[n] goes to d_extra[n].
 */
#include "vec_math.h"

#include <math.h>
#include <stdlib.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__AVX512F__) && defined(__AVX512BF16__)


/* exp(s - m) of row s (V,) into e, and the row's nll. */
static float row_softmax(int64_t V, const bf16 *s, int64_t y, float *e, float *inv_z) {
    __m512 vmax = _mm512_set1_ps(-INFINITY);
    for (int64_t j = 0; j < V; j += BLOCK)
        vmax = _mm512_max_ps(vmax, v_ld_bf16(s + j, lanes(V - j)));
    float m = _mm512_reduce_max_ps(vmax); /* a NaN or inf score makes exp(s - m), Z NaN */
    __m512 vm = _mm512_set1_ps(m), sum = _mm512_setzero_ps();
    for (int64_t j = 0; j < V; j += BLOCK) {
        __mmask16 k = lanes(V - j);
        __m512 x = v_exp_neg(_mm512_sub_ps(v_ld_bf16(s + j, k), vm), 0);
        x = _mm512_maskz_mov_ps(k, x);
        _mm512_storeu_ps(e + j, x);
        sum = _mm512_add_ps(sum, x);
    }
    float z = _mm512_reduce_add_ps(sum);
    *inv_z = 1.0f / z;
    return (m - bf16_to_f32(s[y])) + logf(z);
}

/* p = e / Z - onehot(y) for 16 columns from j. */
INLINE __m512 grad16(const float *e, int64_t j, int64_t y, float inv_z, __mmask16 k) {
    __m512 p = _mm512_mul_ps(v_ld(e + j, k), _mm512_set1_ps(inv_z));
    if (y >= j && y < j + BLOCK)
        p = _mm512_mask_sub_ps(p, (__mmask16)(1u << (y - j)), p, _mm512_set1_ps(1.0f));
    return p;
}

/* Rows 2kp and 2kp + 1's gradients g[0], g[1] at columns j.. (of V) into the transposed
 * operand's pair layout (gemm_bf16.h): the pairs (g[0][v], g[1][v]), one vector. */
INLINE void store_pairs(bf16 *pairs, int64_t K2, int64_t kp, int64_t j, int64_t V,
                        const __m512 g[2]) {
    int64_t n16 = min64(BLOCK, V - j);
    __mmask32 both = n16 >= BLOCK ? 0xFFFFFFFFu : (__mmask32)((1u << (2 * n16)) - 1);
    bf16 *dst = pairs + (((j / PAIR_ROWS) * K2 + kp) * PAIR_ROWS + j % PAIR_ROWS) * 2;
    _mm512_mask_storeu_epi16(dst, both, interleave_bf16(g[0], g[1]));
}

void softmax_xent(int64_t N, int64_t V, bf16 *scores, const int64_t *targets, float *nll,
                  int grad, bf16 *pairs, int threads) {
    int64_t K2 = ceil_div(N, 2);
#pragma omp parallel num_threads(threads)
    {
        float *e = malloc((size_t)(2 * (V + BLOCK)) * sizeof(float)); /* both rows' exps */
        float inv_z[2] = {0.0f, 0.0f};
#pragma omp for schedule(static)
        for (int64_t kp = 0; kp < K2; ++kp) {
            int rows = 2 * kp + 1 < N ? 2 : 1;
            for (int r = 0; r < rows; ++r) {
                int64_t n = 2 * kp + r;
                nll[n] = row_softmax(V, scores + n * V, targets[n], e + r * (V + BLOCK),
                                     &inv_z[r]);
            }
            if (!grad) continue;
            for (int64_t j = 0; j < V; j += BLOCK) {
                __mmask16 k = lanes(V - j);
                __m512 g[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()};
                for (int r = 0; r < rows; ++r) {
                    int64_t n = 2 * kp + r;
                    g[r] = grad16(e + r * (V + BLOCK), j, targets[n], inv_z[r], k);
                    v_st_bf16(scores + n * V + j, k, g[r]);
                }
                if (pairs) store_pairs(pairs, K2, kp, j, V, g);
            }
        }
        free(e);
    }
}

/* Row s's `used` scores but column `hit`, and the score t outside the row: exp(s - m)
 * into e (0 at `hit`), 1/Z, the probability of t, and the row's nll. */
static float row_sampled(int64_t used, const bf16 *s, int64_t hit, float t, float *e,
                         float *inv_z, float *p_t) {
    __m512 vmax = _mm512_set1_ps(t);
    for (int64_t j = 0; j < used; j += BLOCK) {
        __mmask16 k = lanes(used - j);
        vmax = _mm512_mask_max_ps(vmax, k, vmax, v_ld_bf16(s + j, k));
    }
    float m = _mm512_reduce_max_ps(vmax);
    __m512 vm = _mm512_set1_ps(m), sum = _mm512_setzero_ps();
    for (int64_t j = 0; j < used; j += BLOCK) {
        __mmask16 k = lanes(used - j);
        if (hit >= j && hit < j + BLOCK) k &= (__mmask16)~(1u << (hit - j));
        __m512 x = v_exp_neg(_mm512_sub_ps(v_ld_bf16(s + j, k), vm), 0);
        x = _mm512_maskz_mov_ps(k, x);
        _mm512_storeu_ps(e + j, x);
        sum = _mm512_add_ps(sum, x);
    }
    float e_t = expf(t - m), z = _mm512_reduce_add_ps(sum) + e_t;
    *inv_z = 1.0f / z;
    *p_t = e_t / z;
    return (m - t) + logf(z);
}

void sampled_xent(int64_t N, int64_t M, int64_t used, bf16 *scores, const int64_t *hit,
                  const float *extra, float *nll, float *d_extra, bf16 *pairs, int threads) {
    int64_t K2 = ceil_div(N, 2);
#pragma omp parallel num_threads(threads)
    {
        float *e = malloc((size_t)(2 * (M + BLOCK)) * sizeof(float)); /* both rows' exps */
        float inv_z[2] = {0.0f, 0.0f};
#pragma omp for schedule(static)
        for (int64_t kp = 0; kp < K2; ++kp) {
            int rows = 2 * kp + 1 < N ? 2 : 1;
            for (int r = 0; r < rows; ++r) {
                int64_t n = 2 * kp + r;
                float p_t;
                nll[n] = row_sampled(used, scores + n * M, hit[n], extra[n],
                                     e + r * (M + BLOCK), &inv_z[r], &p_t);
                d_extra[n] = p_t - 1.0f;
            }
            for (int64_t j = 0; j < M; j += BLOCK) {
                __mmask16 k = lanes(M - j), live = lanes(used - j);
                __m512 g[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()};
                for (int r = 0; r < rows; ++r) {
                    int64_t n = 2 * kp + r;
                    __m512 p = v_ld(e + r * (M + BLOCK) + j, live); /* 0 past `used` */
                    g[r] = _mm512_mul_ps(p, _mm512_set1_ps(inv_z[r]));
                    v_st_bf16(scores + n * M + j, k, g[r]);
                }
                store_pairs(pairs, K2, kp, j, M, g);
            }
        }
        free(e);
    }
}

#else

void softmax_xent(int64_t N, int64_t V, bf16 *scores, const int64_t *targets, float *nll,
                  int grad, bf16 *pairs, int threads) {
    (void)N, (void)V, (void)scores, (void)targets, (void)nll, (void)grad, (void)pairs;
    (void)threads;
}

void sampled_xent(int64_t N, int64_t M, int64_t used, bf16 *scores, const int64_t *hit,
                  const float *extra, float *nll, float *d_extra, bf16 *pairs, int threads) {
    (void)N, (void)M, (void)used, (void)scores, (void)hit, (void)extra, (void)nll;
    (void)d_extra, (void)pairs, (void)threads;
}
#endif
