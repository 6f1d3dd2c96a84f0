/* One time step of the GRU's elementwise work, forward and backward, fused.
 *
 * The GRU counterpart of lstm_step.c, same conventions (see there and step_common.h).
 * Layout: row-major (B, 3H) gate rows in PyTorch's order [r, z, n]; (B, H) states.
 *   r = sigmoid(x_r + b_ir + W_hr h + b_hr)        z likewise
 *   n = tanh(x_n + b_in + r * (W_hn h + b_hn))     h' = n + z (h - n)
 * Unlike the LSTM, the recurrent part of n is scaled by r, so the gradient that flows
 * into W_hh h (d_hp) differs from the one into the input projection (d_x) in n's block.
 */
#include "step_common.h"

#define GRU_FORWARD_ROWS(NAME, MM_T, LOAD, STORE_H)                                          \
    static void NAME(int64_t B, int64_t H, const MM_T *restrict x_proj,                     \
                     const MM_T *restrict rec, const float *restrict b_ih,                   \
                     const float *restrict b_hh, const float *restrict h_prev,               \
                     float *restrict acts, float *restrict h_n, float *restrict h,           \
                     bf16 *restrict h_bf16) {                                                \
        for (int64_t b = 0; b < B; ++b) {                                                    \
            const MM_T *xp = x_proj + b * 3 * H, *rp = rec + b * 3 * H;                      \
            const float *hp = h_prev + b * H;                                                \
            float *restrict a_r = acts + b * 3 * H, *restrict a_z = a_r + H;                 \
            float *restrict a_n = a_r + 2 * H;                                               \
            float *restrict hnb = h_n + b * H, *restrict hb = h + b * H;                     \
            _Pragma("GCC ivdep") /* outputs never overlap inputs */                       \
            for (int64_t j = 0; j < H; ++j) {                                                \
                float r = sigmoid(LOAD(xp[j]) + b_ih[j] + LOAD(rp[j]) + b_hh[j]);            \
                float z = sigmoid(LOAD(xp[H + j]) + b_ih[H + j] + LOAD(rp[H + j]) + b_hh[H + j]); \
                float hn = LOAD(rp[2 * H + j]) + b_hh[2 * H + j];                            \
                float n = tanh_f(LOAD(xp[2 * H + j]) + b_ih[2 * H + j] + r * hn);            \
                a_r[j] = r;                                                                  \
                a_z[j] = z;                                                                  \
                a_n[j] = n;                                                                  \
                hnb[j] = hn;                                                                 \
                hb[j] = n + z * (hp[j] - n);                                                 \
            }                                                                                \
            if (STORE_H && h_bf16 != NULL) round_to_bf16(hb, h_bf16 + b * H, H);              \
        }                                                                                    \
    }

#define GRU_BACKWARD_ROWS(NAME, MM_T, LOAD, STORE)                                           \
    static void NAME(int64_t B, int64_t H, const MM_T *restrict dh_rec,                     \
                     const float *restrict d_out, const float *restrict acts,                \
                     const float *restrict h_n, const float *restrict h_prev,                \
                     float *restrict dh_carry, MM_T *restrict d_x, MM_T *restrict d_hp,      \
                     float *restrict db_ih, float *restrict db_hh) {                         \
        float *restrict dbi_r = db_ih, *restrict dbi_z = db_ih + H;                          \
        float *restrict dbi_n = db_ih + 2 * H, *restrict dbh_r = db_hh;                      \
        float *restrict dbh_z = db_hh + H, *restrict dbh_n = db_hh + 2 * H;                  \
        for (int64_t b = 0; b < B; ++b) {                                                    \
            const MM_T *restrict dr = dh_rec + b * H;                                        \
            const float *restrict dout = d_out + b * H, *restrict a = acts + b * 3 * H;      \
            const float *restrict hnb = h_n + b * H, *restrict hp = h_prev + b * H;          \
            float *restrict carry = dh_carry + b * H;                                        \
            MM_T *restrict dx_r = d_x + b * 3 * H, *restrict dx_z = dx_r + H;                \
            MM_T *restrict dx_n = dx_r + 2 * H;                                              \
            MM_T *restrict dh_r = d_hp + b * 3 * H, *restrict dh_z = dh_r + H;               \
            MM_T *restrict dh_n = dh_r + 2 * H;                                              \
            _Pragma("GCC ivdep") /* the arrays never overlap */                           \
            for (int64_t j = 0; j < H; ++j) {                                                \
                float dh = carry[j] + LOAD(dr[j]) + dout[j];                                 \
                float r = a[j], z = a[H + j], n = a[2 * H + j];                              \
                float d_n = dh * (1.0f - z) * (1.0f - n * n);                                \
                float d_z = dh * (hp[j] - n) * z * (1.0f - z);                               \
                float d_r = d_n * hnb[j] * r * (1.0f - r);                                   \
                float d_hn = d_n * r;                                                        \
                MM_T q_r = STORE(d_r), q_z = STORE(d_z);                                     \
                dx_r[j] = q_r;                                                               \
                dx_z[j] = q_z;                                                               \
                dx_n[j] = STORE(d_n);                                                        \
                dh_r[j] = q_r;                                                               \
                dh_z[j] = q_z;                                                               \
                dh_n[j] = STORE(d_hn);                                                       \
                dbi_r[j] += d_r;                                                             \
                dbi_z[j] += d_z;                                                             \
                dbi_n[j] += d_n;                                                             \
                dbh_r[j] += d_r;                                                             \
                dbh_z[j] += d_z;                                                             \
                dbh_n[j] += d_hn;                                                            \
                carry[j] = dh * z;                                                           \
            }                                                                                \
        }                                                                                    \
    }

GRU_FORWARD_ROWS(gru_forward_rows_bf16, bf16, bf16_to_f32, 1)
GRU_FORWARD_ROWS(gru_forward_rows_f32, float, f32_id, 0)
GRU_BACKWARD_ROWS(gru_backward_rows_bf16, bf16, bf16_to_f32, f32_to_bf16)
GRU_BACKWARD_ROWS(gru_backward_rows_f32, float, f32_id, f32_id)

/* Forward step.
 * x_proj (B, 3H): x_t W_ih^T; rec (B, 3H): h_{t-1} W_hh^T; both in the matmul dtype
 * (bf16 when mm_bf16, else fp32). b_ih, b_hh (3H,) fp32; h_prev (B, H) fp32. Writes acts
 * (B, 3H) = [r, z, n], h_n (B, H) = W_hn h_{t-1} + b_hn and h (B, H), all fp32, and with
 * bf16 matmuls h rounded to bf16 into h_bf16 for the next matmul. */
void gru_forward_step(int64_t B, int64_t H, const void *x_proj, const void *rec, int mm_bf16,
                      const float *b_ih, const float *b_hh, const float *h_prev, float *acts,
                      float *h_n, float *h, bf16 *h_bf16) {
    if (mm_bf16)
        gru_forward_rows_bf16(B, H, x_proj, rec, b_ih, b_hh, h_prev, acts, h_n, h, h_bf16);
    else
        gru_forward_rows_f32(B, H, x_proj, rec, b_ih, b_hh, h_prev, acts, h_n, h, NULL);
}

/* Backward step (BPTT through one step).
 * dh_rec (B, H): d_hp_{t+1} W_hh in the matmul dtype (zeros for the last step, whose
 * d h_T the caller adds to d_out); d_out (B, H): gradient reaching h_t from above;
 * acts, h_n, h_prev as in the forward; dh_carry (B, H): in, z_{t+1} d h_{t+1} (the part
 * of d h_t that skips the matmul); out, z_t d h_t. Writes, in the matmul dtype, d_x
 * (B, 3H) = [d r_pre, d z_pre, d n_pre] (the input projection's gradient) and d_hp
 * (B, 3H) = [d r_pre, d z_pre, r d n_pre] (the gradient of W_hh h + b_hh), and adds each,
 * in fp32, over the batch into db_ih / db_hh (3H,). */
void gru_backward_step(int64_t B, int64_t H, const void *dh_rec, int mm_bf16,
                       const float *d_out, const float *acts, const float *h_n,
                       const float *h_prev, float *dh_carry, void *d_x, void *d_hp,
                       float *db_ih, float *db_hh) {
    if (mm_bf16)
        gru_backward_rows_bf16(B, H, dh_rec, d_out, acts, h_n, h_prev, dh_carry, d_x, d_hp,
                               db_ih, db_hh);
    else
        gru_backward_rows_f32(B, H, dh_rec, d_out, acts, h_n, h_prev, dh_carry, d_x, d_hp,
                              db_ih, db_hh);
}
