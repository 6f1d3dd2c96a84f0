/* The LSTM's whole training window in one call: the recurrent bf16 GEMM of every time
 * step and the gate arithmetic around it, forward and backward, on all threads.
 *
 * Why (benchmarks/RESULTS.md, round 10): with the time loop in Python each step cost a
 * oneDNN call, a kernel call through ctypes, bf16 casts and a copy, and each window a
 * reorder of W_hh into oneDNN's blocked layout (twice, once transposed for the backward);
 * and the two cores shared each (20, 650) x (650, 2600) product, too small to split well.
 * Here the batch rows are split over the threads: a row's recurrence never reads another
 * row, so each thread runs the whole window on its rows with no synchronization, reading
 * all of W_hh (it stays in L2/L3) and keeping the products in registers: the gate
 * arithmetic runs on the GEMM's fp32 accumulators (no bf16 rounding of h W_hh^T, so the
 * result is a little more accurate than the step kernels' path).
 *
 * The GEMM is AVX-512 BF16 (VDPBF16PS: 16 fp32 lanes, each the dot product of a pair of
 * bf16 values), on weights packed by lstm_pack_forward and gemm_bf16.c's bf16_pack_kn:
 *   forward   rec[b, q*H + j] = sum_k h[b, k] W[q*H + j, k]: per block of 16 units j and
 *             per pair of k, the four gates' 16 x 2 values, so one 5-row x 64-column tile
 *             holds i, f, g and o of 16 units and the cell update follows in place.
 *   backward  dh[b, j] = sum_k dg[b, k] W[k, j] over k < 4H: per group of 64 units and
 *             per pair of k, four blocks of 16 units x 2 values.
 * Every row's arithmetic is the same whatever the thread count (d_bias is summed per row,
 * then over the rows in order), so results do not depend on it.
 *
 * Built only where the compiler targets AVX-512 BF16 (lstm_window_available() says so);
 * elsewhere the Python loop over the step kernels (lstm_step.c) runs. Threads come from
 * OpenMP: linked into torch's process, libgomp is torch's own (one thread pool).
 */
#include "gemm_bf16.h"
#include "vec_math.h"

#include <stdlib.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__AVX512F__) && defined(__AVX512BF16__)

/* What a forward or backward tile reads and writes (see lstm_window_forward/_backward). */
typedef struct {
    int64_t T, B, H;
    const bf16 *x_proj, *packed;
    const float *bias, *d_out;
    float *out, *acts, *cells, *tanh_c, *dc, *d_bias_rows, *dh0;
    bf16 *d_gates, *d_pairs; /* d_pairs: d_gates again, in the pair layout (or NULL) */
} Window;

/* Forward, step t, rows b0 .. b0 + mr - 1, units j0 .. j0 + 15 (the first n of them):
 * rec = h_{t-1} W_hh^T for the four gates, then the cell update on the accumulators. */
INLINE void forward_tile(int mr, const Window *w, int64_t t, int64_t b0, int64_t u,
                         const bf16 *h_in, bf16 *h_next, int64_t ldh) {
    int64_t H = w->H, j0 = u * BLOCK;
    __mmask16 k = lanes(H - j0);
    __m512 acc[MR][4];
    gemm_tile(mr, 4, ldh / 2, 0, h_in, ldh, 2, w->packed + u * (ldh / 2) * 128, acc);
    __m512 b_i = v_ld(w->bias + j0, k), b_f = v_ld(w->bias + H + j0, k);
    __m512 b_g = v_ld(w->bias + 2 * H + j0, k), b_o = v_ld(w->bias + 3 * H + j0, k);
    for (int m = 0; m < mr; ++m) {
        int64_t row = t * w->B + b0 + m;
        const bf16 *xp = w->x_proj + row * 4 * H + j0;
        float *a = w->acts + row * 4 * H + j0;
        __m512 i = v_sigmoid(_mm512_add_ps(_mm512_add_ps(v_ld_bf16(xp, k), acc[m][0]), b_i));
        __m512 f = v_sigmoid(_mm512_add_ps(_mm512_add_ps(v_ld_bf16(xp + H, k), acc[m][1]), b_f));
        __m512 g = v_tanh(_mm512_add_ps(_mm512_add_ps(v_ld_bf16(xp + 2 * H, k), acc[m][2]), b_g));
        __m512 o = v_sigmoid(_mm512_add_ps(_mm512_add_ps(v_ld_bf16(xp + 3 * H, k), acc[m][3]), b_o));
        __m512 c = _mm512_fmadd_ps(f, v_ld(w->cells + row * H + j0, k), _mm512_mul_ps(i, g));
        __m512 th = v_tanh(c), h = _mm512_mul_ps(o, th);
        v_st(a, k, i), v_st(a + H, k, f), v_st(a + 2 * H, k, g), v_st(a + 3 * H, k, o);
        v_st(w->cells + (row + w->B) * H + j0, k, c);
        v_st(w->tanh_c + row * H + j0, k, th);
        v_st(w->out + row * H + j0, k, h);
        v_st_bf16(h_next + m * ldh + j0, k, h);
    }
}

/* Backward, step t (t = -1: only d h_0), rows b0 .. b0 + mr - 1, the nr blocks of 16 units
 * of group g: dh = d_gates_{t+1} W_hh (none at the last step), then the gate gradients. */
INLINE void backward_tile(int mr, int nr, const Window *w, int64_t T, int64_t t, int64_t b0,
                          int64_t g) {
    int64_t B = w->B, H = w->H, ld = 4 * H;
    __m512 acc[MR][4];
    if (t < T - 1)
        gemm_tile(mr, nr, 2 * H, 0, w->d_gates + ((t + 1) * B + b0) * ld, ld, 2,
                  w->packed + g * 2 * H * 128, acc);
    else
        for (int m = 0; m < mr; ++m)
            for (int q = 0; q < nr; ++q) acc[m][q] = _mm512_setzero_ps();
    for (int m = 0; m < mr; ++m) {
        int64_t b = b0 + m, row = t * B + b;
        for (int q = 0; q < nr; ++q) {
            int64_t j0 = (g * 4 + q) * BLOCK;
            __mmask16 k = lanes(H - j0);
            if (t < 0) {
                v_st(w->dh0 + b * H + j0, k, acc[m][q]);
                continue;
            }
            const float *a = w->acts + row * ld + j0;
            float *db = w->d_bias_rows + b * ld + j0, *dcb = w->dc + b * H + j0;
            bf16 *dg = w->d_gates + row * ld + j0;
            __m512 one = _mm512_set1_ps(1.0f);
            __m512 dh = _mm512_add_ps(acc[m][q], v_ld(w->d_out + row * H + j0, k));
            __m512 i = v_ld(a, k), f = v_ld(a + H, k), gg = v_ld(a + 2 * H, k);
            __m512 o = v_ld(a + 3 * H, k), tc = v_ld(w->tanh_c + row * H + j0, k);
            __m512 d_c = _mm512_fmadd_ps(_mm512_mul_ps(dh, o), _mm512_fnmadd_ps(tc, tc, one),
                                         v_ld(dcb, k));
            __m512 d_i = _mm512_mul_ps(_mm512_mul_ps(_mm512_mul_ps(d_c, gg), i),
                                       _mm512_sub_ps(one, i));
            __m512 d_f = _mm512_mul_ps(
                _mm512_mul_ps(_mm512_mul_ps(d_c, v_ld(w->cells + row * H + j0, k)), f),
                _mm512_sub_ps(one, f));
            __m512 d_g = _mm512_mul_ps(_mm512_mul_ps(d_c, i), _mm512_fnmadd_ps(gg, gg, one));
            __m512 d_o = _mm512_mul_ps(_mm512_mul_ps(_mm512_mul_ps(dh, tc), o),
                                       _mm512_sub_ps(one, o));
            v_st_bf16(dg, k, d_i), v_st_bf16(dg + H, k, d_f);
            v_st_bf16(dg + 2 * H, k, d_g), v_st_bf16(dg + 3 * H, k, d_o);
            if (w->d_pairs) { /* the weights' gradients read d_gates transposed */
                __m512 gate[4] = {d_i, d_f, d_g, d_o};
                for (int s = 0; s < 4; ++s)
                    store_pair_half(w->d_pairs, ceil_div(B * w->T, 2), row, s * H + j0,
                                    (__m256i)_mm512_cvtneps_pbh(gate[s]), min64(BLOCK, H - j0));
            }
            v_st(db, k, _mm512_add_ps(v_ld(db, k), d_i));
            v_st(db + H, k, _mm512_add_ps(v_ld(db + H, k), d_f));
            v_st(db + 2 * H, k, _mm512_add_ps(v_ld(db + 2 * H, k), d_g));
            v_st(db + 3 * H, k, _mm512_add_ps(v_ld(db + 3 * H, k), d_o));
            v_st(dcb, k, _mm512_mul_ps(d_c, f));
        }
    }
}

/* One function per tile size (the sizes constant inside, so the accumulators stay in
 * registers), picked from a table. */
typedef void (*forward_fn)(const Window *, int64_t, int64_t, int64_t, const bf16 *, bf16 *,
                           int64_t);
typedef void (*backward_fn)(const Window *, int64_t, int64_t, int64_t, int64_t);
#define FWD(M)                                                                               \
    static void forward_##M(const Window *w, int64_t t, int64_t b0, int64_t u,              \
                            const bf16 *h_in, bf16 *h_next, int64_t ldh) {                   \
        forward_tile(M, w, t, b0, u, h_in, h_next, ldh);                                     \
    }
#define BWD(M, N)                                                                            \
    static void backward_##M##_##N(const Window *w, int64_t T, int64_t t, int64_t b0,       \
                                   int64_t g) {                                              \
        backward_tile(M, N, w, T, t, b0, g);                                                 \
    }
#define BWDS(M) BWD(M, 1) BWD(M, 2) BWD(M, 3) BWD(M, 4)
FWD(1) FWD(2) FWD(3) FWD(4) FWD(5)
BWDS(1) BWDS(2) BWDS(3) BWDS(4) BWDS(5)
#define BROW(M) {backward_##M##_1, backward_##M##_2, backward_##M##_3, backward_##M##_4}
static const forward_fn FORWARD[MR] = {forward_1, forward_2, forward_3, forward_4, forward_5};
static const backward_fn BACKWARD[MR][4] = {BROW(1), BROW(2), BROW(3), BROW(4), BROW(5)};

/* Sizes of the packed weights, in bf16 elements. */
int64_t lstm_packed_forward_size(int64_t H) { return ceil_div(H, BLOCK) * ceil_div(H, 2) * 128; }

/* w_hh (4H, H) fp32 -> the forward layout: [unit block u][k pair][gate q][lane l][2], the
 * 16 lanes of a k pair gathered from 16 rows of W. */
void lstm_pack_forward(int64_t H, const float *w_hh, bf16 *packed, int threads) {
    int64_t U = ceil_div(H, BLOCK), K2 = ceil_div(H, 2);
    const __m512i rows = _mm512_mullo_epi32(
        _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
        _mm512_set1_epi32((int)H));
#pragma omp parallel for num_threads(threads) schedule(static) collapse(2)
    for (int64_t u = 0; u < U; ++u)
        for (int q = 0; q < 4; ++q) {
            __mmask16 k = lanes(H - u * BLOCK);
            const float *src = w_hh + (q * H + u * BLOCK) * H;
            for (int64_t kp = 0; kp < K2; ++kp) {
                __m512 lo = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), k, rows,
                                                     src + 2 * kp, 4);
                __m512 hi = 2 * kp + 1 < H ? _mm512_mask_i32gather_ps(
                                                 _mm512_setzero_ps(), k, rows, src + 2 * kp + 1, 4)
                                           : _mm512_setzero_ps();
                _mm512_storeu_si512((void *)(packed + ((u * K2 + kp) * 4 + q) * 32),
                                    interleave_bf16(lo, hi));
            }
        }
}

/* The rows [r0, r1) of lstm_window_forward, on one thread. */
static void forward_rows(const Window *w, int64_t T, int64_t r0, int64_t r1, const float *h0,
                         const float *c0) {
    int64_t H = w->H, rows = r1 - r0, ldh = 2 * ceil_div(H, 2), U = ceil_div(H, BLOCK);
    bf16 *hb = calloc((size_t)(2 * rows * ldh), sizeof(bf16)); /* h_{t-1}, h_t in bf16 */
    for (int64_t r = 0; r < rows; ++r) {
        round_to_bf16(h0 + (r0 + r) * H, hb + r * ldh, H);
        memcpy(w->cells + (r0 + r) * H, c0 + (r0 + r) * H, (size_t)H * sizeof(float));
    }
    for (int64_t t = 0; t < T; ++t) {
        const bf16 *h_in = hb + (t % 2) * rows * ldh;
        bf16 *h_next = hb + ((t + 1) % 2) * rows * ldh;
        for (int64_t u = 0; u < U; ++u)
            for (int64_t r = 0; r < rows; r += MR)
                FORWARD[min64(MR, rows - r) - 1](w, t, r0 + r, u, h_in + r * ldh,
                                                 h_next + r * ldh, ldh);
    }
    free(hb);
}

/* The rows [r0, r1) of lstm_window_backward, on one thread. */
static void backward_rows(const Window *w, int64_t T, int64_t r0, int64_t r1) {
    int64_t H = w->H, G = ceil_div(H, 4 * BLOCK);
    for (int64_t t = T - 1; t >= -1; --t) /* t = -1: d h_0 = d_gates_0 W_hh, nothing else */
        for (int64_t g = 0; g < G; ++g) {
            int64_t nb = min64(4, ceil_div(H - g * 4 * BLOCK, BLOCK));
            for (int64_t r = r0; r < r1; r += MR)
                BACKWARD[min64(MR, r1 - r) - 1][nb - 1](w, T, t, r, g);
        }
}

int lstm_window_available(void) { return 1; }

#else /* no AVX-512 BF16: the Python loop over the step kernels runs instead */

int lstm_window_available(void) { return 0; }
int64_t lstm_packed_forward_size(int64_t H) { return H * 0; }
void lstm_pack_forward(int64_t H, const float *w_hh, bf16 *packed, int threads) {
    (void)H, (void)w_hh, (void)packed, (void)threads;
}
#endif

/* Forward over a window. x_proj (T, B, 4H) bf16: x_t W_ih^T; bias (4H,): b_ih + b_hh;
 * h0, c0 (B, H); packed: lstm_pack_forward's W_hh. Writes out (T, B, H): h_t; acts
 * (T, B, 4H): [sigmoid i, sigmoid f, tanh g, sigmoid o]; cells (T + 1, B, H): c_0 .. c_T;
 * tanh_c (T, B, H). All fp32 but x_proj. */
void lstm_window_forward(int64_t T, int64_t B, int64_t H, const bf16 *x_proj,
                         const float *bias, const float *h0, const float *c0,
                         const bf16 *packed, float *out, float *acts, float *cells,
                         float *tanh_c, int threads) {
#if defined(__AVX512F__) && defined(__AVX512BF16__)
    Window w = {.B = B, .H = H, .x_proj = x_proj, .packed = packed, .bias = bias, .out = out,
                .acts = acts, .cells = cells, .tanh_c = tanh_c};
    threads = threads < 1 ? 1 : (threads > B ? (int)B : threads);
#pragma omp parallel num_threads(threads)
    {
        int tid = 0, nt = 1;
#ifdef _OPENMP
        tid = omp_get_thread_num(), nt = omp_get_num_threads();
#endif
        int64_t r0 = B * tid / nt, r1 = B * (tid + 1) / nt;
        if (r1 > r0) forward_rows(&w, T, r0, r1, h0, c0);
    }
#else
    (void)T, (void)B, (void)H, (void)x_proj, (void)bias, (void)h0, (void)c0, (void)packed;
    (void)out, (void)acts, (void)cells, (void)tanh_c, (void)threads;
#endif
}

/* Backward over a window (BPTT). packed: W_hh (4H, H) as bf16_pack_kn packs it; d_out
 * (T, B, H): the gradient reaching each h_t from above, d h_T already added to the last
 * step's; acts, cells, tanh_c as the forward wrote them; dc (B, H): in d c_T, out d c_0.
 * Writes d_gates (T, B, 4H) bf16 (the pre-activation gradients, the gradient of x_proj);
 * unless NULL, the same in d_pairs in the pair layout of the (T B, 4H) matrix (gemm_bf16.h:
 * the weights' gradients read it as their transposed first operand; the caller zeroes it
 * when T B is odd); d_bias (4H,) (their fp32 sum over T and B) and dh0 (B, H): d h_0. */
void lstm_window_backward(int64_t T, int64_t B, int64_t H, const bf16 *packed,
                          const float *d_out, const float *acts, const float *cells,
                          const float *tanh_c, float *dc, bf16 *d_gates, bf16 *d_pairs,
                          float *d_bias, float *dh0, int threads) {
#if defined(__AVX512F__) && defined(__AVX512BF16__)
    float *rows = calloc((size_t)(B * 4 * H), sizeof(float)); /* d_bias per batch row */
    Window w = {.T = T, .B = B, .H = H, .packed = packed, .d_out = d_out,
                .acts = (float *)acts, .cells = (float *)cells, .tanh_c = (float *)tanh_c,
                .dc = dc, .d_bias_rows = rows, .dh0 = dh0, .d_gates = d_gates,
                .d_pairs = d_pairs};
    threads = threads < 1 ? 1 : (threads > B ? (int)B : threads);
#pragma omp parallel num_threads(threads)
    {
        int tid = 0, nt = 1;
#ifdef _OPENMP
        tid = omp_get_thread_num(), nt = omp_get_num_threads();
#endif
        int64_t r0 = B * tid / nt, r1 = B * (tid + 1) / nt;
        if (r1 > r0) backward_rows(&w, T, r0, r1);
    }
    for (int64_t b = 0; b < B; ++b) /* in row order: the same sum for any thread count */
        for (int64_t k = 0; k < 4 * H; ++k) d_bias[k] = b ? d_bias[k] + rows[b * 4 * H + k] : rows[k];
    free(rows);
#else
    (void)T, (void)B, (void)H, (void)packed, (void)d_out, (void)acts, (void)cells;
    (void)tanh_c, (void)dc, (void)d_gates, (void)d_pairs, (void)d_bias, (void)dh0, (void)threads;
#endif
}
