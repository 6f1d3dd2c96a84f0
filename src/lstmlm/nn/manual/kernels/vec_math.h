/* 16 lanes of step_common.h's exp, sigmoid and tanh (AVX-512), for lstm_window.c and
 * softmax_xent.c: the same polynomial, NaN propagates. */
#ifndef LSTMLM_VEC_MATH_H
#define LSTMLM_VEC_MATH_H

#include "gemm_bf16.h"

#if defined(__AVX512F__) && defined(__AVX512BF16__)

INLINE __m512 v_exp_neg(__m512 y, int expm1) { /* exp(y) or expm1(y), y <= 0 */
    y = _mm512_max_ps(_mm512_set1_ps(-87.0f), y); /* max(c, NaN) is NaN: it passes */
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(y, _mm512_set1_ps(1.44269504f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145752f), y);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.42860677e-06f), r);
    __m512 p = _mm512_set1_ps(1.0f / 5040.0f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(_mm512_mul_ps(p, r), r, r); /* expm1(r) */
    __m512i bits = _mm512_slli_epi32(
        _mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
    __m512 scale = _mm512_castsi512_ps(bits); /* 2^n */
    __m512 tail = expm1 ? _mm512_sub_ps(scale, _mm512_set1_ps(1.0f)) : scale;
    return _mm512_fmadd_ps(scale, p, tail);
}

INLINE __m512 v_abs(__m512 x) {
    return _mm512_castsi512_ps(
        _mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32(0x7fffffff)));
}

INLINE __m512 v_sigmoid(__m512 x) {
    __m512 e = v_exp_neg(_mm512_sub_ps(_mm512_setzero_ps(), v_abs(x)), 0);
    __m512 s = _mm512_div_ps(_mm512_set1_ps(1.0f), _mm512_add_ps(_mm512_set1_ps(1.0f), e));
    __mmask16 pos = _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_GE_OQ);
    return _mm512_mask_blend_ps(pos, _mm512_mul_ps(e, s), s); /* NaN: e s, a NaN */
}

INLINE __m512 v_tanh(__m512 x) {
    __m512 m = v_exp_neg(_mm512_mul_ps(_mm512_set1_ps(-2.0f), v_abs(x)), 1);
    __m512 t = _mm512_div_ps(_mm512_sub_ps(_mm512_setzero_ps(), m),
                             _mm512_add_ps(m, _mm512_set1_ps(2.0f))); /* tanh |x| */
    __mmask16 pos = _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_GE_OQ);
    return _mm512_mask_blend_ps(pos, _mm512_sub_ps(_mm512_setzero_ps(), t), t);
}

#endif
#endif
