/* The bf16 GEMM micro-kernel shared by gemm_bf16.c and lstm_window.c (AVX-512 BF16).
 *
 * VDPBF16PS multiplies 16 pairs of bf16 values lane by lane and adds each pair's dot
 * product to 16 fp32 accumulators. So the second operand B is packed in panels of 64
 * columns: per pair of k, 4 vectors of 16 columns x 2 values (k, k + 1), and the first
 * operand A is read as 32-bit pairs (a[m, k], a[m, k + 1]) broadcast to all lanes. One
 * tile is 5 rows x 64 columns: 20 accumulators, 4 B vectors and a broadcast in the 32
 * vector registers, 20 VDPBF16PS per 9 loads. Measured on the 2-core AMD EPYC (Zen 4):
 * ~231 GFLOP/s on one core, ~430-460 on two for the shapes of a medium step, where
 * oneDNN's bf16 GEMM ran at 356-396 (benchmarks/RESULTS.md, round 10).
 */
#ifndef LSTMLM_GEMM_BF16_H
#define LSTMLM_GEMM_BF16_H

#include "step_common.h"

#if defined(__AVX512F__) && defined(__AVX512BF16__)
#include <immintrin.h>

#define MR 5      /* rows per tile */
#define BLOCK 16  /* columns per vector */
#define PANEL 64  /* columns per panel: 4 vectors */
#define INLINE static inline __attribute__((always_inline))
/* The transposed-operand layout (bf16_pair_rows) of a (K, M) matrix: in blocks of PAIR_ROWS
 * columns m, per pair of rows kp the pairs (x[2kp, m], x[2kp + 1, m]); 80 = 16 tiles of 5. */
#define PAIR_ROWS 80

/* acc[r][q] = sum over kp < k2 of the pair at a + r * rs + kp * ks times the 16 pairs of
 * p[kp * 128 + q * 32 ..], for r < mr, q < nr (compile-time constants after inlining, so
 * the accumulators stay in registers). With `odd` the last pair's second value is
 * taken as 0 (its a[.. + 1] may lie past the row). */
INLINE void gemm_tile(int mr, int nr, int64_t k2, int odd, const bf16 *a, int64_t rs,
                      int64_t ks, const bf16 *p, __m512 acc[MR][4]) {
    for (int r = 0; r < mr; ++r)
        for (int q = 0; q < nr; ++q) acc[r][q] = _mm512_setzero_ps();
    for (int64_t kp = 0; kp < k2; ++kp) {
        __m512bh w[4];
        for (int q = 0; q < nr; ++q)
            w[q] = (__m512bh)_mm512_loadu_si512((const void *)(p + kp * 128 + q * 32));
        for (int r = 0; r < mr; ++r) {
            int32_t pair = 0;
            if (odd && kp == k2 - 1)
                pair = a[r * rs + kp * ks]; /* (a, 0) */
            else
                memcpy(&pair, a + r * rs + kp * ks, sizeof pair);
            __m512bh x = (__m512bh)_mm512_set1_epi32(pair);
            for (int q = 0; q < nr; ++q) acc[r][q] = _mm512_dpbf16_ps(acc[r][q], x, w[q]);
        }
    }
}

static inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
static inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
static inline __mmask16 lanes(int64_t n) {
    return n >= BLOCK ? 0xFFFF : n <= 0 ? 0 : (__mmask16)((1u << n) - 1);
}

INLINE __m512 v_ld(const float *p, __mmask16 k) { return _mm512_maskz_loadu_ps(k, p); }
INLINE void v_st(float *p, __mmask16 k, __m512 v) { _mm512_mask_storeu_ps(p, k, v); }
INLINE __m512 v_ld_bf16(const bf16 *p, __mmask16 k) {
    __m256i raw = _mm256_maskz_loadu_epi16(k, p);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(raw), 16));
}
INLINE void v_st_bf16(bf16 *p, __mmask16 k, __m512 v) { /* round to nearest even */
    _mm256_mask_storeu_epi16(p, k, (__m256i)_mm512_cvtneps_pbh(v));
}

/* Row n's values v (16 bf16, the first `count`) at columns m0.. into the pair layout above
 * (K2 pairs of rows): the even or odd half of each pair, the other half left as it is. */
INLINE void store_pair_half(bf16 *pairs, int64_t K2, int64_t n, int64_t m0, __m256i v,
                            int64_t count) {
    __m512i wide = _mm512_cvtepu16_epi32(v); /* value in the low half of each 32-bit lane */
    if (n & 1) wide = _mm512_slli_epi32(wide, 16);
    __mmask32 half = (n & 1) ? 0xAAAAAAAAu : 0x55555555u;
    int64_t done = 0;
    while (done < count) { /* at most two pieces: a block boundary inside the 16 columns */
        int64_t m = m0 + done, in_block = min64(count - done, PAIR_ROWS - m % PAIR_ROWS);
        __mmask32 cols = (__mmask32)(((1ull << (2 * in_block)) - 1) << (2 * done));
        bf16 *row = pairs + (((m / PAIR_ROWS) * K2 + n / 2) * PAIR_ROWS + m % PAIR_ROWS) * 2;
        _mm512_mask_storeu_epi16(row - 2 * done, half & cols, wide);
        done += in_block;
    }
}

/* 16 fp32 pairs (lo[l], hi[l]) -> 32 bf16 interleaved lo0 hi0 lo1 hi1 .., rounded to
 * nearest even: one packed vector. */
INLINE __m512i interleave_bf16(__m512 lo, __m512 hi) {
    const __m512i order = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25,
                                           9, 24, 8, 23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2,
                                           17, 1, 16, 0);
    return _mm512_permutexvar_epi16(order, (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
}

/* 16 rows x 16 32-bit words -> their transpose, in place (out[j] lane i = in[i] lane j). */
INLINE void bf16_transpose16(__m512i r[16]) {
    __m512i a[16], b[16];
    for (int i = 0; i < 8; ++i) {
        a[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
        a[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 4; ++i) { /* lane L of b[4i + c]: rows 4i..4i+3 of column 4L + c */
        b[4 * i] = _mm512_unpacklo_epi64(a[4 * i], a[4 * i + 2]);
        b[4 * i + 1] = _mm512_unpackhi_epi64(a[4 * i], a[4 * i + 2]);
        b[4 * i + 2] = _mm512_unpacklo_epi64(a[4 * i + 1], a[4 * i + 3]);
        b[4 * i + 3] = _mm512_unpackhi_epi64(a[4 * i + 1], a[4 * i + 3]);
    }
    for (int c = 0; c < 4; ++c) { /* a 4 x 4 transpose of 128-bit lanes */
        __m512i s0 = _mm512_shuffle_i32x4(b[c], b[4 + c], 0x44);
        __m512i s1 = _mm512_shuffle_i32x4(b[c], b[4 + c], 0xEE);
        __m512i s2 = _mm512_shuffle_i32x4(b[8 + c], b[12 + c], 0x44);
        __m512i s3 = _mm512_shuffle_i32x4(b[8 + c], b[12 + c], 0xEE);
        r[c] = _mm512_shuffle_i32x4(s0, s2, 0x88);
        r[4 + c] = _mm512_shuffle_i32x4(s0, s2, 0xDD);
        r[8 + c] = _mm512_shuffle_i32x4(s1, s3, 0x88);
        r[12 + c] = _mm512_shuffle_i32x4(s1, s3, 0xDD);
    }
}

#endif
#endif
