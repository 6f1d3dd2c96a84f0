/* bf16 GEMMs for the training step's window-wide products: C = A B with fp32
 * accumulation, the micro-kernel of gemm_bf16.h, on torch's OpenMP threads.
 *
 * Why not torch.mm: on the 2-core AMD EPYC (Zen 4, AVX-512 BF16, no AMX) oneDNN ran the
 * medium step's products at 356-396 GFLOP/s on two threads, this kernel at 422-462 (see
 * benchmarks/RESULTS.md, round 10). The products are the decoder's (700 x 650 x 10k,
 * forward and both gradients) and the LSTM's input projections and weight gradients.
 *
 * Operands:
 *   A  read as bf16 pairs (A[m, k], A[m, k + 1]) at a + m * rs + (k / 2) * ks: a row-major
 *      (M, K) matrix (rs = its row stride, ks = 2), or bf16_pair_rows' layout of a (K, M)
 *      matrix, whose transpose it then is (rs = 2, ks = 2M).
 *   B  packed in panels of 64 columns (gemm_bf16.h) by bf16_pack_kn from a (K, N) matrix
 *      or bf16_pack_nk from an (N, K) one, fp32 (rounded to nearest even) or bf16.
 *   C  (M, N) fp32 or bf16 at c + m * ldc + n, with an optional fp32 bias per column added
 *      and then an optional fp32 scale per row applied to the accumulators before the one
 *      rounding; with `extra`, the last column goes there instead ((M,), fp32).
 * The work is split over rows (whole tiles of 5) or, for few rows, over panels; a tile's
 * arithmetic does not depend on the split, so results do not depend on the thread count.
 */
#include "gemm_bf16.h"
#include "vec_math.h"

#include <math.h>
#include <stdlib.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__AVX512F__) && defined(__AVX512BF16__)


int gemm_bf16_available(void) { return 1; }

int64_t bf16_packed_size(int64_t K, int64_t N) { return ceil_div(N, PANEL) * ceil_div(K, 2) * 128; }

/* 16 values of row `row` (< rows, else zeros) from column j (lanes k), as fp32. */
INLINE __m512 row16(const void *src, int src_bf16, int64_t ld, int64_t row, int64_t rows,
                    int64_t j, __mmask16 k) {
    if (row >= rows) return _mm512_setzero_ps();
    if (src_bf16) return v_ld_bf16((const bf16 *)src + row * ld + j, k);
    return v_ld((const float *)src + row * ld + j, k);
}

/* B from a (K, N) matrix, row k at src + k * ld. */
void bf16_pack_kn(int64_t K, int64_t N, const void *src, int src_bf16, int64_t ld, bf16 *packed,
                  int threads) {
    int64_t NP = ceil_div(N, PANEL), K2 = ceil_div(K, 2);
#pragma omp parallel for num_threads(threads) schedule(static) collapse(2)
    for (int64_t np = 0; np < NP; ++np)
        for (int64_t kp = 0; kp < K2; ++kp)
            for (int q = 0; q < 4; ++q) {
                int64_t j0 = np * PANEL + q * BLOCK;
                __mmask16 k = lanes(N - j0);
                __m512 lo = row16(src, src_bf16, ld, 2 * kp, K, j0, k);
                __m512 hi = row16(src, src_bf16, ld, 2 * kp + 1, K, j0, k);
                _mm512_storeu_si512((void *)(packed + ((np * K2 + kp) * 4 + q) * 32),
                                    interleave_bf16(lo, hi));
            }
}

/* 32 values of row `row` (< rows, else zeros) from column j (at most n of them) as 16
 * bf16 pairs, rounded to nearest even from fp32. */
INLINE __m512i row32(const void *src, int src_bf16, int64_t ld, int64_t row, int64_t rows,
                     int64_t j, int64_t n) {
    if (row >= rows) return _mm512_setzero_si512();
    if (src_bf16) {
        __mmask32 k = n >= 32 ? 0xFFFFFFFFu : n <= 0 ? 0 : (__mmask32)((1u << n) - 1);
        return _mm512_maskz_loadu_epi16(k, (const bf16 *)src + row * ld + j);
    }
    const float *s = (const float *)src + row * ld + j;
    __m512 lo = v_ld(s, lanes(n)), hi = v_ld(s + BLOCK, lanes(n - BLOCK));
    return (__m512i)_mm512_cvtne2ps_pbh(hi, lo);
}

/* B from an (N, K) matrix, row n at src + n * ld: 16 rows of 16 pairs at a time,
 * transposed in registers. */
void bf16_pack_nk(int64_t K, int64_t N, const void *src, int src_bf16, int64_t ld, bf16 *packed,
                  int threads) {
    int64_t NP = ceil_div(N, PANEL), K2 = ceil_div(K, 2), KC = ceil_div(K2, BLOCK);
#pragma omp parallel for num_threads(threads) schedule(static) collapse(3)
    for (int64_t np = 0; np < NP; ++np)
        for (int q = 0; q < 4; ++q)
            for (int64_t kc = 0; kc < KC; ++kc) {
                int64_t n0 = np * PANEL + q * BLOCK, k0 = kc * 2 * BLOCK;
                __m512i r[16];
                for (int l = 0; l < BLOCK; ++l)
                    r[l] = row32(src, src_bf16, ld, n0 + l, N, k0, K - k0);
                bf16_transpose16(r);
                for (int64_t i = 0; i < BLOCK && kc * BLOCK + i < K2; ++i)
                    _mm512_storeu_si512(
                        (void *)(packed + ((np * K2 + kc * BLOCK + i) * 4 + q) * 32), r[i]);
            }
}

/* dst = the A layout of a (K, M) matrix's transpose (row k at src + k * ld): in blocks of
 * PAIR_ROWS columns m, for each pair of rows k the pairs (src[2kp, m], src[2kp + 1, m])
 * (zero past row K - 1), so a tile's pairs are contiguous and its k steps 320 bytes
 * apart. */
void bf16_pair_rows(int64_t K, int64_t M, const void *src, int src_bf16, int64_t ld, bf16 *dst,
                    int threads) {
    int64_t K2 = ceil_div(K, 2), MB = ceil_div(M, BLOCK);
#pragma omp parallel for num_threads(threads) schedule(static) collapse(2)
    for (int64_t mb = 0; mb < MB; ++mb)
        for (int64_t kp = 0; kp < K2; ++kp) {
            int64_t m0 = mb * BLOCK, n = min64(BLOCK, M - m0);
            __mmask16 k = lanes(n);
            __m512 lo = row16(src, src_bf16, ld, 2 * kp, K, m0, k);
            __m512 hi = row16(src, src_bf16, ld, 2 * kp + 1, K, m0, k);
            __mmask32 both = n >= BLOCK ? 0xFFFFFFFFu : (__mmask32)((1u << (2 * n)) - 1);
            int64_t blk = m0 / PAIR_ROWS, at = (blk * K2 + kp) * PAIR_ROWS + m0 % PAIR_ROWS;
            _mm512_mask_storeu_epi16(dst + at * 2, both, interleave_bf16(lo, hi));
        }
}

int64_t bf16_pair_rows_size(int64_t K, int64_t M) {
    return ceil_div(M, PAIR_ROWS) * PAIR_ROWS * ceil_div(K, 2) * 2;
}

typedef struct {
    int64_t N, K2, rs, ks, ldc;
    int64_t a_block, a_block_stride; /* rows of A per block, elements between blocks */
    int odd, c_bf16;
    const bf16 *a, *packed;
    const float *bias, *row_scale;
    void *c;
    float *extra;
    int64_t n_main; /* columns that go to c; column n_main (if any) goes to extra */
    /* bf16_gemm_xent: per row the running max, sum of exp(c - max) and the target's c */
    const int64_t *targets;
    float *row_max, *row_sum, *row_target;
} Gemm;

/* bf16_gemm_xent's epilogue: the tile's values, rounded to bf16 as bf16_gemm would store
 * them, folded into each row's running max and sum of exponentials (the online softmax:
 * sum <- sum exp(max_old - max_new) + sum_j exp(c_j - max_new)). */
INLINE void xent_tile(int mr, int nr, const Gemm *g, int64_t m0, int64_t j0, __m512 acc[MR][4]) {
    for (int r = 0; r < mr; ++r) {
        int64_t m = m0 + r, y = g->targets[m];
        __m512 v[4], top = _mm512_set1_ps(-INFINITY);
        for (int q = 0; q < nr; ++q) {
            __mmask16 k = lanes(g->N - j0 - q * BLOCK);
            __m512 x = acc[r][q];
            if (g->bias) x = _mm512_add_ps(x, v_ld(g->bias + j0 + q * BLOCK, k));
            __m256i h = (__m256i)_mm512_cvtneps_pbh(x);
            v[q] = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
            top = _mm512_mask_max_ps(top, k, top, v[q]);
            if (y >= j0 + q * BLOCK && y < j0 + (q + 1) * BLOCK) {
                float lane[BLOCK];
                _mm512_storeu_ps(lane, v[q]);
                g->row_target[m] = lane[y - j0 - q * BLOCK];
            }
        }
        float old = g->row_max[m], best = fmaxf(old, _mm512_reduce_max_ps(top));
        __m512 sum = _mm512_setzero_ps(), vb = _mm512_set1_ps(best);
        for (int q = 0; q < nr; ++q) {
            __mmask16 k = lanes(g->N - j0 - q * BLOCK);
            sum = _mm512_mask_add_ps(sum, k, sum, v_exp_neg(_mm512_sub_ps(v[q], vb), 0));
        }
        float scaled = g->row_sum[m] == 0.0f ? 0.0f : g->row_sum[m] * expf(old - best);
        g->row_sum[m] = scaled + _mm512_reduce_add_ps(sum);
        g->row_max[m] = best;
    }
}

/* The 5 x 64 (or smaller) tile at rows m0.., panel np: the product, then the epilogue. */
INLINE void tile(int mr, int nr, const Gemm *g, int64_t m0, int64_t np) {
    __m512 acc[MR][4];
    const bf16 *a = g->a + (m0 / g->a_block) * g->a_block_stride + (m0 % g->a_block) * g->rs;
    gemm_tile(mr, nr, g->K2, g->odd, a, g->rs, g->ks, g->packed + np * g->K2 * 128, acc);
    if (g->targets) {
        xent_tile(mr, nr, g, m0, np * PANEL, acc);
        return;
    }
    for (int q = 0; q < nr; ++q) {
        int64_t j0 = np * PANEL + q * BLOCK;
        __mmask16 k = lanes(g->n_main - j0);
        __m512 bias = g->bias ? v_ld(g->bias + j0, lanes(g->N - j0)) : _mm512_setzero_ps();
        for (int r = 0; r < mr; ++r) {
            __m512 v = g->bias ? _mm512_add_ps(acc[r][q], bias) : acc[r][q];
            if (g->row_scale) v = _mm512_mul_ps(v, _mm512_set1_ps(g->row_scale[m0 + r]));
            int64_t at = (m0 + r) * g->ldc + j0;
            if (g->c_bf16)
                v_st_bf16((bf16 *)g->c + at, k, v);
            else
                v_st((float *)g->c + at, k, v);
            if (g->extra && g->n_main >= j0 && g->n_main < j0 + BLOCK)
                _mm512_mask_compressstoreu_ps(g->extra + m0 + r,
                                              (__mmask16)(1u << (g->n_main - j0)), v);
        }
    }
}

typedef void (*tile_fn)(const Gemm *, int64_t, int64_t);
#define TILE(M, N)                                                                           \
    static void tile_##M##_##N(const Gemm *g, int64_t m0, int64_t np) { tile(M, N, g, m0, np); }
#define TILES(M) TILE(M, 1) TILE(M, 2) TILE(M, 3) TILE(M, 4)
TILES(1) TILES(2) TILES(3) TILES(4) TILES(5)
#define ROW(M) {tile_##M##_1, tile_##M##_2, tile_##M##_3, tile_##M##_4}
static const tile_fn TILE_FNS[MR][4] = {ROW(1), ROW(2), ROW(3), ROW(4), ROW(5)};

/* Tiles [t0, t1) x panels [p0, p1). Panel by panel while this thread's rows of A fit in
 * L2 beside a panel, or when B is large; else (a tall A and a small B, as in the
 * gradients of the weights) block by block of ~256 KB of A, each block through all
 * panels, so A comes from memory once. */
static void run_tiles(const Gemm *g, int64_t M, int64_t t0, int64_t t1, int64_t p0, int64_t p1) {
    int64_t tile_bytes = MR * g->K2 * 4, b_bytes = (p1 - p0) * g->K2 * 256;
    int64_t block = (t1 - t0) * tile_bytes <= (512 << 10) || b_bytes > (2 << 20)
                        ? t1 - t0
                        : (256 << 10) / tile_bytes + 1;
    for (int64_t tb = t0; tb < t1; tb += block)
        for (int64_t np = p0; np < p1; ++np) {
            int nb = (int)min64(4, ceil_div(g->N - np * PANEL, BLOCK));
            for (int64_t t = tb; t < min64(t1, tb + block); ++t)
                TILE_FNS[min64(MR, M - t * MR) - 1][nb - 1](g, t * MR, np);
        }
}

/* C = A B (+ bias, * row_scale): see the top of the file. lda > 0: A is row-major with
 * row stride lda; lda = 0: A is bf16_pair_rows' layout (of A's transpose). */
void bf16_gemm(int64_t M, int64_t N, int64_t K, const bf16 *a, int64_t lda, const bf16 *packed,
               const float *bias, const float *row_scale, void *c, int c_bf16, int64_t ldc,
               float *extra, int threads) {
    int64_t K2 = ceil_div(K, 2);
    Gemm g = {.N = N, .K2 = K2, .rs = lda ? lda : 2, .ks = lda ? 2 : 2 * PAIR_ROWS,
              .a_block = lda ? M : PAIR_ROWS, .a_block_stride = lda ? 0 : 2 * PAIR_ROWS * K2,
              .ldc = ldc, .odd = lda ? (int)(K & 1) : 0,
              .c_bf16 = c_bf16, .a = a, .packed = packed, .bias = bias,
              .row_scale = row_scale, .c = c, .extra = extra, .n_main = extra ? N - 1 : N};
    int64_t tiles = ceil_div(M, MR), panels = ceil_div(N, PANEL);
    int by_rows = tiles >= 4 * threads || tiles >= panels;
#pragma omp parallel num_threads(threads)
    {
        int64_t tid = 0, nt = 1;
#ifdef _OPENMP
        tid = omp_get_thread_num(), nt = omp_get_num_threads();
#endif
        if (by_rows)
            run_tiles(&g, M, tiles * tid / nt, tiles * (tid + 1) / nt, 0, panels);
        else
            run_tiles(&g, M, 0, tiles, panels * tid / nt, panels * (tid + 1) / nt);
    }
}

/* nll[m] = -log softmax(A B + bias)[m, targets[m]] for each row m, without writing the
 * (M, N) scores: the values are those bf16_gemm would store in bf16 (so the same as
 * softmax_xent on them, to float rounding), folded row by row into an online softmax. A
 * as for bf16_gemm with lda > 0. Evaluation's decoder: no (M, N) buffer, memory O(M). */
void bf16_gemm_xent(int64_t M, int64_t N, int64_t K, const bf16 *a, int64_t lda,
                    const bf16 *packed, const float *bias, const int64_t *targets, float *nll,
                    int threads) {
    float *state = malloc((size_t)(3 * M) * sizeof(float));
    Gemm g = {.N = N, .K2 = ceil_div(K, 2), .rs = lda, .ks = 2, .a_block = M, .a_block_stride = 0,
              .odd = (int)(K & 1), .a = a, .packed = packed, .bias = bias, .n_main = N,
              .targets = targets, .row_max = state, .row_sum = state + M,
              .row_target = state + 2 * M};
    for (int64_t m = 0; m < M; ++m) state[m] = -INFINITY, state[M + m] = 0.0f;
    int64_t tiles = ceil_div(M, MR), panels = ceil_div(N, PANEL);
#pragma omp parallel num_threads(threads)
    {
        int64_t tid = 0, nt = 1;
#ifdef _OPENMP
        tid = omp_get_thread_num(), nt = omp_get_num_threads();
#endif
        run_tiles(&g, M, tiles * tid / nt, tiles * (tid + 1) / nt, 0, panels); /* rows' own */
    }
    for (int64_t m = 0; m < M; ++m)
        nll[m] = (g.row_max[m] - g.row_target[m]) + logf(g.row_sum[m]);
    free(state);
}

#else /* no AVX-512 BF16: callers use torch.mm */

int gemm_bf16_available(void) { return 0; }
int64_t bf16_packed_size(int64_t K, int64_t N) { return 0 * K * N; }
void bf16_pack_kn(int64_t K, int64_t N, const void *src, int src_bf16, int64_t ld, bf16 *packed,
                  int threads) {
    (void)K, (void)N, (void)src, (void)src_bf16, (void)ld, (void)packed, (void)threads;
}
void bf16_pack_nk(int64_t K, int64_t N, const void *src, int src_bf16, int64_t ld, bf16 *packed,
                  int threads) {
    (void)K, (void)N, (void)src, (void)src_bf16, (void)ld, (void)packed, (void)threads;
}
void bf16_pair_rows(int64_t K, int64_t M, const void *src, int src_bf16, int64_t ld, bf16 *dst,
                    int threads) {
    (void)K, (void)M, (void)src, (void)src_bf16, (void)ld, (void)dst, (void)threads;
}
int64_t bf16_pair_rows_size(int64_t K, int64_t M) { return 0 * K * M; }
void bf16_gemm_xent(int64_t M, int64_t N, int64_t K, const bf16 *a, int64_t lda,
                    const bf16 *packed, const float *bias, const int64_t *targets, float *nll,
                    int threads) {
    (void)M, (void)N, (void)K, (void)a, (void)lda, (void)packed, (void)bias, (void)targets;
    (void)nll, (void)threads;
}
void bf16_gemm(int64_t M, int64_t N, int64_t K, const bf16 *a, int64_t lda, const bf16 *packed,
               const float *bias, const float *row_scale, void *c, int c_bf16, int64_t ldc,
               float *extra, int threads) {
    (void)M, (void)N, (void)K, (void)a, (void)lda, (void)packed, (void)bias;
    (void)row_scale, (void)c, (void)c_bf16, (void)ldc, (void)extra, (void)threads;
}
#endif
