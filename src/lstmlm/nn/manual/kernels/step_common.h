/* What the step kernels share: bf16 conversions and fp32 sigmoid / tanh.
 *
 * Included by lstm_step.c and gru_step.c (compiled together into one library by
 * lstmlm/native.py). Arithmetic is fp32. bf16 values are raw uint16 bits, rounded to
 * nearest even. NaN and inf pass through as IEEE arithmetic gives them (no
 * -ffast-math), so the trainer's non-finite guard still sees them.
 */
#ifndef LSTMLM_STEP_COMMON_H
#define LSTMLM_STEP_COMMON_H

#include <stdint.h>
#include <string.h>

typedef uint16_t bf16;

static inline float bf16_to_f32(bf16 b) {
    uint32_t u = (uint32_t)b << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline bf16 f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
    uint32_t quiet_nan = (u >> 16) | 0x40u;
    return (bf16)((f != f) ? quiet_nan : rounded);
}

/* exp(y) - 1 (expm1 = 1) or exp(y) (expm1 = 0) for y <= 0, about 2 ulp: y = n ln2 + r with
 * |r| <= ln2 / 2, p = expm1(r) by its Taylor polynomial; exp(y) = 2^n (1 + p) and
 * expm1(y) = 2^n p + (2^n - 1), each without cancellation where it is used. */
static inline __attribute__((always_inline)) float exp_neg(float y, int expm1) {
    y = y < -87.0f ? -87.0f : y;
    float n = __builtin_rintf(y * 1.44269504f);
    float r = y - n * 0.693145752f; /* ln2 split in two for an exact reduction */
    r = r - n * 1.42860677e-06f;
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r * r + r; /* expm1(r) */
    int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale); /* 2^n */
    return expm1 ? scale * p + (scale - 1.0f) : scale * p + scale;
}

static inline float sigmoid(float x) {
    float e = exp_neg(-__builtin_fabsf(x), 0); /* exp(-|x|) in (0, 1] */
    float s = 1.0f / (1.0f + e);                      /* sigmoid(|x|) */
    return x >= 0.0f ? s : (x != x ? x : e * s);      /* sigmoid(-|x|) = e sigmoid(|x|) */
}

static inline float tanh_f(float x) {
    float m = exp_neg(-2.0f * __builtin_fabsf(x), 1); /* expm1(-2|x|), in (-1, 0] */
    float t = -m / (m + 2.0f);                        /* tanh(|x|) */
    return x >= 0.0f ? t : (x != x ? x : -t);
}

static inline float f32_id(float f) { return f; }

/* dst[j] = src[j] rounded to bf16, for the copy of h the next bf16 matmul reads. */
static inline void round_to_bf16(const float *restrict src, bf16 *restrict dst, int64_t n) {
    for (int64_t j = 0; j < n; ++j) dst[j] = f32_to_bf16(src[j]);
}

#endif
