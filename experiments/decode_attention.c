/* A what-if for experiments/attention_cost.py, not used by the app: attention for one query position per row that
   reads only the positions its mask admits (left padding and unwritten cache positions are skipped), each row in an
   order that does not depend on its batch. Not SDPA's bits (its blocks of 512 keys, its vectorised exponential and
   MKL's products set those), so the app may use something like it only with the evaluation re-measured.

   q: (rows, kv_heads, groups, dim); k, v: (rows, kv_heads, len, dim); mask: (rows, len) float, -inf where a position
   is not read; out: (rows, kv_heads, groups, dim); dim a multiple of 16. */
#include <math.h>
#include <stddef.h>
#include <stdlib.h>

typedef float v16 __attribute__((vector_size(64), aligned(4)));

static inline float dot(const float *a, const float *b, int dim) { /* dim a multiple of 16 */
    v16 acc = {0};
    for (int e = 0; e < dim; e += 16) acc += *(const v16 *)(a + e) * *(const v16 *)(b + e);
    float d = 0.0f;
    for (int l = 0; l < 16; l++) d += acc[l];
    return d;
}

static inline void add_scaled(float *o, float p, const float *x, int dim) {
    for (int e = 0; e < dim; e += 16) *(v16 *)(o + e) += p * *(const v16 *)(x + e);
}

void decode_attention(const float *q, const float *k, const float *v, const float *mask, float *out, int rows,
                      int kv_heads, int groups, ptrdiff_t len, int dim, float scale, int threads) {
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int item = 0; item < rows * kv_heads; item++) {
        const int r = item / kv_heads;
        const float *qi = q + (ptrdiff_t)item * groups * dim, *m = mask + (ptrdiff_t)r * len;
        const float *ki = k + (ptrdiff_t)item * len * dim, *vi = v + (ptrdiff_t)item * len * dim;
        float *oi = out + (ptrdiff_t)item * groups * dim;
        float *s = malloc(sizeof(float) * len * groups), best[16], sum[16];
        for (int g = 0; g < groups; g++) best[g] = -INFINITY, sum[g] = 0.0f;
        for (ptrdiff_t n = 0; n < len; n++) {
            if (isinf(m[n])) continue;
            for (int g = 0; g < groups; g++) {
                s[n * groups + g] = dot(qi + g * dim, ki + n * dim, dim) * scale + m[n];
                if (s[n * groups + g] > best[g]) best[g] = s[n * groups + g];
            }
        }
        for (int i = 0; i < groups * dim; i++) oi[i] = 0.0f;
        for (ptrdiff_t n = 0; n < len; n++) {
            if (isinf(m[n])) continue;
            for (int g = 0; g < groups; g++) {
                const float p = expf(s[n * groups + g] - best[g]);
                sum[g] += p;
                add_scaled(oi + g * dim, p, vi + n * dim, dim);
            }
        }
        for (int g = 0; g < groups; g++)
            for (int e = 0; e < dim; e++) oi[g * dim + e] /= sum[g];
        free(s);
    }
}
