/* Attention for one decoding position per row, over the positions each row's mask admits and no others.

   A view's batch pads its short rows on the left to its longest prompt (a Compare's few-shot row), and SDPA reads
   every position of every row: for the Compare that was most of what it cost beyond one reply, in MKL's small
   products. Here a row reads its own positions only, and its result does not depend on the batch, its place in it
   or the thread count: each (row, key head) is one thread's work in one fixed order. For each query head that
   shares the key head, in position order: the score q . k (16 lanes accumulate d = j (mod 16) with fused
   multiply-adds, a fixed tree adds the lanes, the last dim % 16 products follow one by one), times the scale, plus
   the mask; the largest score; then exp(score - largest) summed one by one and its multiple of v added to the output
   one by one, each of the head's dimensions on its own; last, the output divided by the sum.

   q: (rows, kv_heads, groups, dim), groups query heads a key head; keys, values: (rows, kv_heads, len, dim), the
   cache; mask: (rows, len) float, -inf where a position is not read (a row admits at least one); out like q. */
#include <math.h>
#include <stddef.h>
#include <stdlib.h>

typedef float v16 __attribute__((vector_size(64), aligned(4)));
typedef float v8 __attribute__((vector_size(32), aligned(4)));
typedef float v4 __attribute__((vector_size(16), aligned(4)));

static inline float lanes_sum(v16 a) {
    v8 h = __builtin_shufflevector(a, a, 0, 1, 2, 3, 4, 5, 6, 7) +
           __builtin_shufflevector(a, a, 8, 9, 10, 11, 12, 13, 14, 15);
    v4 q = __builtin_shufflevector(h, h, 0, 1, 2, 3) + __builtin_shufflevector(h, h, 4, 5, 6, 7);
    return (q[0] + q[2]) + (q[1] + q[3]);
}

static inline float dot(const float *a, const float *b, ptrdiff_t dim) {
    const ptrdiff_t body = dim / 16 * 16;
    v16 acc = {0};
    for (ptrdiff_t d = 0; d < body; d += 16) acc += *(const v16 *)(a + d) * *(const v16 *)(b + d);
    float s = lanes_sum(acc);
    for (ptrdiff_t d = body; d < dim; d++) s = __builtin_fmaf(a[d], b[d], s);
    return s;
}

/* out[d] += p v[d], each d one fused multiply-add (a vector's lanes are each one too) */
static inline void add_multiple(float *restrict out, float p, const float *restrict v, ptrdiff_t dim) {
    const ptrdiff_t body = dim / 16 * 16;
    const v16 pv = {p, p, p, p, p, p, p, p, p, p, p, p, p, p, p, p};
    for (ptrdiff_t d = 0; d < body; d += 16) *(v16 *)(out + d) = *(v16 *)(out + d) + pv * *(const v16 *)(v + d);
    for (ptrdiff_t d = body; d < dim; d++) out[d] = __builtin_fmaf(p, v[d], out[d]);
}

/* One key head of one row: its `groups` query heads, each position's key and value read once for all of them.
   scratch: groups x (len + 2) floats (the scores, then each query head's largest score and sum). */
static void head(const float *q, const float *k, const float *v, const float *mask, float *out, int groups,
                 ptrdiff_t len, ptrdiff_t dim, float scale, float *scratch) {
    float *scores = scratch, *largest = scratch + groups * len, *sum = largest + groups;
    for (int g = 0; g < groups; g++) largest[g] = -INFINITY, sum[g] = 0.0f;
    for (ptrdiff_t n = 0; n < len; n++) {
        if (isinf(mask[n]) && mask[n] < 0) continue;
        for (int g = 0; g < groups; g++) {
            const float s = dot(q + g * dim, k + n * dim, dim) * scale + mask[n];
            scores[g * len + n] = s;
            largest[g] = s > largest[g] ? s : largest[g];
        }
    }
    for (ptrdiff_t i = 0; i < groups * dim; i++) out[i] = 0.0f;
    for (ptrdiff_t n = 0; n < len; n++) {
        if (isinf(mask[n]) && mask[n] < 0) continue;
        const float *vn = v + n * dim;
        for (int g = 0; g < groups; g++) {
            const float p = expf(scores[g * len + n] - largest[g]);
            float *og = out + g * dim;
            sum[g] += p;
            add_multiple(og, p, vn, dim);
        }
    }
    for (int g = 0; g < groups; g++)
        for (ptrdiff_t d = 0; d < dim; d++) out[g * dim + d] = out[g * dim + d] / sum[g];
}

/* Returns 0, or 1 where scratch memory could not be had (out is then not written). */
int decode_attention(const float *q, const float *keys, const float *values, const float *mask, float *out, int rows,
                     int kv_heads, int groups, ptrdiff_t len, ptrdiff_t dim, float scale, int threads) {
    int failed = 0;
#pragma omp parallel num_threads(threads) reduction(| : failed)
    {
        float *scratch = malloc(sizeof(float) * (size_t)(len + 2) * (size_t)groups);
        failed = scratch == NULL;
#pragma omp for schedule(dynamic, 1)
        for (int item = 0; item < rows * kv_heads; item++) {
            if (scratch == NULL) continue;
            const ptrdiff_t at = (ptrdiff_t)item * groups * dim, cache = (ptrdiff_t)item * len * dim;
            head(q + at, keys + cache, values + cache, mask + (ptrdiff_t)(item / kv_heads) * len, out + at, groups,
                 len, dim, scale, scratch);
        }
        free(scratch);
    }
    return failed;
}
