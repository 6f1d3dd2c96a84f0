/* One time step of the LSTM's elementwise work, forward and backward, fused.
 *
 * Built and loaded by lstmlm/native.py (plain C, no Python or torch headers, called
 * through ctypes). The matmuls stay in torch; per time step the Python loop makes one
 * matmul call and one call here instead of seven or eight small torch ops.
 *
 * Layout: row-major (B, 4H) gate rows in PyTorch's order [i, f, g, o]; (B, H) states.
 * Arithmetic is fp32; the recurrent product and the matmul copies may be bf16 (see
 * step_common.h).
 */
#include "step_common.h"

/* The row loops, written once as macros and instantiated per matmul dtype (MM_T with its
 * LOAD / STORE conversions to and from fp32): with the element types fixed at compile
 * time the compiler vectorizes every loop (gcc 12 -O3 -march=native: AVX-512). */

#define FORWARD_ROWS(NAME, MM_T, LOAD, STORE_H)                                              \
    static void NAME(int64_t B, int64_t H, const MM_T *restrict x_proj,                     \
                     const MM_T *restrict rec, const float *restrict bias,                   \
                     const float *restrict c_prev, float *restrict acts, float *restrict c,  \
                     float *restrict tanh_c, float *restrict h, bf16 *restrict h_bf16) {    \
        for (int64_t b = 0; b < B; ++b) {                                                    \
            const MM_T *xp = x_proj + b * 4 * H, *rp = rec + b * 4 * H;                      \
            const float *cp = c_prev + b * H;                                                \
            float *restrict a_i = acts + b * 4 * H, *restrict a_f = a_i + H;                 \
            float *restrict a_g = a_i + 2 * H, *restrict a_o = a_i + 3 * H;                  \
            float *restrict cb = c + b * H, *restrict tb = tanh_c + b * H;                   \
            float *restrict hb = h + b * H;                                                  \
            _Pragma("GCC ivdep") /* outputs never overlap inputs */                       \
            for (int64_t j = 0; j < H; ++j) {                                                \
                float i = sigmoid(LOAD(xp[j]) + LOAD(rp[j]) + bias[j]);                      \
                float f = sigmoid(LOAD(xp[H + j]) + LOAD(rp[H + j]) + bias[H + j]);          \
                float g = tanh_f(LOAD(xp[2 * H + j]) + LOAD(rp[2 * H + j]) + bias[2 * H + j]); \
                float o = sigmoid(LOAD(xp[3 * H + j]) + LOAD(rp[3 * H + j]) + bias[3 * H + j]); \
                float cn = f * cp[j] + i * g;                                                \
                float tc = tanh_f(cn);                                                       \
                a_i[j] = i;                                                                    \
                a_f[j] = f;                                                                  \
                a_g[j] = g;                                                                  \
                a_o[j] = o;                                                                  \
                cb[j] = cn;                                                                  \
                tb[j] = tc;                                                                  \
                hb[j] = o * tc;                                                              \
            }                                                                                \
            if (STORE_H && h_bf16 != NULL) round_to_bf16(hb, h_bf16 + b * H, H);              \
        }                                                                                    \
    }

#define BACKWARD_ROWS(NAME, MM_T, LOAD, STORE)                                               \
    static void NAME(int64_t B, int64_t H, const MM_T *restrict dh_rec,                     \
                     const float *restrict d_out, const float *restrict acts,                \
                     const float *restrict c_prev, const float *restrict tanh_c,             \
                     float *restrict dc, MM_T *restrict d_gates, float *restrict d_bias) {   \
        /* One restrict pointer per gate block: the blocks never overlap, which the       \
         * compiler cannot see from offsets H apart when H is a run-time value. */        \
        float *restrict db_i = d_bias, *restrict db_f = d_bias + H;                         \
        float *restrict db_g = d_bias + 2 * H, *restrict db_o = d_bias + 3 * H;              \
        for (int64_t b = 0; b < B; ++b) {                                                    \
            const MM_T *restrict dr = dh_rec + b * H;                                        \
            const float *restrict dout = d_out + b * H, *restrict a = acts + b * 4 * H;      \
            const float *restrict cp = c_prev + b * H, *restrict tb = tanh_c + b * H;        \
            float *restrict dcb = dc + b * H;                                                \
            MM_T *restrict dg_i = d_gates + b * 4 * H, *restrict dg_f = dg_i + H;            \
            MM_T *restrict dg_g = dg_i + 2 * H, *restrict dg_o = dg_i + 3 * H;               \
            _Pragma("GCC ivdep") /* the arrays never overlap (see above) */               \
            for (int64_t j = 0; j < H; ++j) {                                                \
                float dh = LOAD(dr[j]) + dout[j];                                            \
                float i = a[j], f = a[H + j], g = a[2 * H + j], o = a[3 * H + j];            \
                float tc = tb[j];                                                            \
                float d_c = dcb[j] + dh * o * (1.0f - tc * tc);                              \
                float d_i = d_c * g * i * (1.0f - i);                                        \
                float d_f = d_c * cp[j] * f * (1.0f - f);                                    \
                float d_g = d_c * i * (1.0f - g * g);                                        \
                float d_o = dh * tc * o * (1.0f - o);                                        \
                dg_i[j] = STORE(d_i);                                                        \
                dg_f[j] = STORE(d_f);                                                        \
                dg_g[j] = STORE(d_g);                                                        \
                dg_o[j] = STORE(d_o);                                                        \
                db_i[j] += d_i;                                                              \
                db_f[j] += d_f;                                                              \
                db_g[j] += d_g;                                                              \
                db_o[j] += d_o;                                                              \
                dcb[j] = d_c * f;                                                            \
            }                                                                                \
        }                                                                                    \
    }

FORWARD_ROWS(forward_rows_bf16, bf16, bf16_to_f32, 1)
FORWARD_ROWS(forward_rows_f32, float, f32_id, 0)
BACKWARD_ROWS(backward_rows_bf16, bf16, bf16_to_f32, f32_to_bf16)
BACKWARD_ROWS(backward_rows_f32, float, f32_id, f32_id)

/* Forward step.
 * x_proj (B, 4H): the input projection x_t W_ih^T; rec (B, 4H): h_{t-1} W_hh^T; both in
 * the matmul dtype (bf16 when mm_bf16, else fp32). bias (4H,): b_ih + b_hh, fp32.
 * c_prev (B, H). Writes acts (B, 4H) = [sigmoid i, sigmoid f, tanh g, sigmoid o], c,
 * tanh_c and h (B, H each, fp32) and, with bf16 matmuls, h rounded to bf16 into h_bf16
 * for the next matmul. */
void lstm_forward_step(int64_t B, int64_t H, const void *x_proj, const void *rec, int mm_bf16,
                       const float *bias, const float *c_prev, float *acts, float *c,
                       float *tanh_c, float *h, bf16 *h_bf16) {
    if (mm_bf16)
        forward_rows_bf16(B, H, x_proj, rec, bias, c_prev, acts, c, tanh_c, h, h_bf16);
    else
        forward_rows_f32(B, H, x_proj, rec, bias, c_prev, acts, c, tanh_c, h, NULL);
}

/* Backward step (BPTT through one step).
 * dh_rec (B, H): d_gates_{t+1} W_hh, in the matmul dtype (zeros for the last step, whose
 * d h_T the caller adds to d_out); d_out (B, H): gradient reaching h_t from above, fp32;
 * acts, c_prev, tanh_c as the forward saved them; dc (B, H): in, d c_t; out, d c_{t-1}.
 * Writes d_gates (B, 4H), the pre-activation gradients, in the matmul dtype (the next
 * matmul reads them as they are) and adds them, in fp32, over the batch into d_bias (4H,). */
void lstm_backward_step(int64_t B, int64_t H, const void *dh_rec, int mm_bf16,
                        const float *d_out, const float *acts, const float *c_prev,
                        const float *tanh_c, float *dc, void *d_gates, float *d_bias) {
    if (mm_bf16)
        backward_rows_bf16(B, H, dh_rec, d_out, acts, c_prev, tanh_c, dc, d_gates, d_bias);
    else
        backward_rows_f32(B, H, dh_rec, d_out, acts, c_prev, tanh_c, dc, d_gates, d_bias);
}
