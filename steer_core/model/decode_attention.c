/* Attention for one decoding position per row, over the positions each row's mask admits and no others.

   A view's batch pads its short rows on the left to its longest prompt (a Compare's few-shot row), and SDPA reads
   every position of every row: for the Compare that was most of what it cost beyond one reply, in MKL's small
   products. Here a row reads its own positions only (from its first admitted position to its last), and its result
   does not depend on the batch, its place in it or the thread count: each (row, query head) is one thread's work in
   one fixed order, and each position's arithmetic is the same wherever the position falls.

   For one query head: the score of each position, q . k (16 lanes accumulate d = j (mod 16) with fused multiply-adds,
   a fixed tree adds the lanes, the last dim % 16 products follow one by one), times the scale plus the mask (one
   fused multiply-add); 16 positions' lanes are added by one tree across them, the same tree as one position's
   (lanes_sum). The largest score; each admitted position's exp(score - largest), 16 at a time (exp16); then, in
   position order, their sum one by one and each one's multiple of v added to the output, each of the head's
   dimensions on its own; last, the output divided by the sum.

   Speed, bench's shapes (30 layers, 3 key heads of 64, 9 query heads; experiments/attention_cost.py) on an Intel Xeon
   of 2 cores: a Compare's 4 rows (one of 622 positions) 3.16 -> 2.11 ms a step, the ladder's 7 rows 3.93 -> 2.41,
   against one position's score and one expf at a time and the key heads handed out in row order. Then the values'
   sums of a key head's query heads held at once (values_together) and the exponentials without a copy of each 16:
   the Compare's 30 layers 2.51 -> 2.09 ms, the ladder's 2.05 -> 1.61, the caches pushed out of the CPU's caches
   before each step (experiments/attention_ab.py, results/attention_ab_2026-12-06.jsonl). Prefetching the values
   while the scores are worked out, or the keys further ahead, made no difference there.

   Rows that were given the same prompt hold copies of its keys and values. Told so (prompt_rows), a row reads its
   prompt's positions from the one row that holds them for all: the same values, so the same bits, but a ladder's
   seven rows read their prompt from memory once instead of seven times.

   q: (rows, kv_heads, groups, dim), groups query heads a key head; keys, values: (rows, kv_heads, len, dim), the
   cache; mask: (rows, len) float, -inf where a position is not read (a row admits at least one); out like q;
   prompt_rows: NULL, or each row's row whose cache holds the same keys and values below position prompt_len. */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

typedef float v16 __attribute__((vector_size(64), aligned(4)));
typedef int32_t i16 __attribute__((vector_size(64), aligned(4)));
typedef float v8 __attribute__((vector_size(32), aligned(4)));
typedef float v4 __attribute__((vector_size(16), aligned(4)));

#define MAX_CHUNKS 16 /* the output's 16-float pieces a query head holds in registers: dims up to 256 */

static inline float lanes_sum(v16 a) {
    v8 h = __builtin_shufflevector(a, a, 0, 1, 2, 3, 4, 5, 6, 7) +
           __builtin_shufflevector(a, a, 8, 9, 10, 11, 12, 13, 14, 15);
    v4 q = __builtin_shufflevector(h, h, 0, 1, 2, 3) + __builtin_shufflevector(h, h, 4, 5, 6, 7);
    return (q[0] + q[2]) + (q[1] + q[3]);
}

/* lanes_sum of a[0] .. a[15], the 16 sums side by side: each level of lanes_sum's tree for several vectors at once
   (the same additions of the same values, so the same bits as 16 lanes_sum calls). */
static inline v16 lanes_sums(const v16 a[16]) {
    v16 h[8], q[4], r[2];
    for (int i = 0; i < 8; i++) /* [a0 .. a7 + a8 .. a15] of two vectors */
        h[i] = __builtin_shufflevector(a[2 * i], a[2 * i + 1], 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23) +
               __builtin_shufflevector(a[2 * i], a[2 * i + 1], 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29,
                                       30, 31);
    for (int i = 0; i < 4; i++) /* [h0 .. h3 + h4 .. h7] of four */
        q[i] = __builtin_shufflevector(h[2 * i], h[2 * i + 1], 0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26,
                                       27) +
               __builtin_shufflevector(h[2 * i], h[2 * i + 1], 4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30,
                                       31);
    for (int i = 0; i < 2; i++) /* [q0 + q2, q1 + q3] of eight */
        r[i] = __builtin_shufflevector(q[2 * i], q[2 * i + 1], 0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21, 24, 25, 28,
                                       29) +
               __builtin_shufflevector(q[2 * i], q[2 * i + 1], 2, 3, 6, 7, 10, 11, 14, 15, 18, 19, 22, 23, 26, 27, 30,
                                       31);
    return __builtin_shufflevector(r[0], r[1], 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30) +
           __builtin_shufflevector(r[0], r[1], 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
}

/* One position's score before scale and mask. */
static inline __attribute__((always_inline)) float dot(const float *a, const float *b, ptrdiff_t dim) {
    const ptrdiff_t body = dim / 16 * 16;
    v16 acc = {0};
    for (ptrdiff_t d = 0; d < body; d += 16) acc += *(const v16 *)(a + d) * *(const v16 *)(b + d);
    float s = lanes_sum(acc);
    for (ptrdiff_t d = body; d < dim; d++) s = __builtin_fmaf(a[d], b[d], s);
    return s;
}

/* 16 consecutive positions' scores before scale and mask, each as dot() makes it. */
static inline __attribute__((always_inline)) v16 dots16(const float *q, const float *k, ptrdiff_t dim) {
    const ptrdiff_t body = dim / 16 * 16;
    v16 acc[16];
    for (int j = 0; j < 16; j++) {
        v16 a = {0};
        for (ptrdiff_t d = 0; d < body; d += 16) a += *(const v16 *)(q + d) * *(const v16 *)(k + j * dim + d);
        acc[j] = a;
    }
    v16 s = lanes_sums(acc);
    if (body < dim)
        for (int j = 0; j < 16; j++)
            for (ptrdiff_t d = body; d < dim; d++) s[j] = __builtin_fmaf(q[d], k[j * dim + d], s[j]);
    return s;
}

/* e^x for x <= 0, 16 at a time: Cephes' expf (x = n ln 2 + r, ln 2 in two parts; a degree-6 polynomial in r; times
   2^n by its exponent bits), within 1 ulp of e^x rounded to float (every x from -87 to 0 in steps of 1e-6); x below
   -87 is taken as -87 (e^-87 is 1.6e-38, nothing beside the largest score's 1). The same operations in the same
   order whatever the lane or the position. */
static inline v16 exp16(v16 x) {
    const v16 floor_x = (v16){0} - 87.0f;
    const i16 low = x < floor_x;
    x = (v16)(((i16)x & ~low) | ((i16)floor_x & low));
    const v16 t = x * 1.44269504088896341f + 0.5f;
    i16 n = __builtin_convertvector(t, i16); /* toward zero; t < 0 rounds up, so down by one where it did */
    n += (i16)(__builtin_convertvector(n, v16) > t);
    const v16 nf = __builtin_convertvector(n, v16);
    const v16 r = (x - nf * 0.693359375f) - nf * -2.12194440e-4f;
    v16 p = r * 1.9875691500e-4f + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;
    return p * (v16)((n + 127) << 23);
}

static inline int admitted(float m) { return !(isinf(m) && m < 0); }

#define SPAN 64 /* positions whose values are added for each query head in turn, while they are in the cache */

/* The largest of s[lo .. hi) (an exact operation: any order gives it). */
static inline float largest_of(const float *s, ptrdiff_t lo, ptrdiff_t hi) {
    v16 big = (v16){0} - INFINITY;
    ptrdiff_t n = lo;
    for (; n + 16 <= hi; n += 16) {
        const v16 x = *(const v16 *)(s + n);
        const i16 above = x > big;
        big = (v16)(((i16)x & above) | ((i16)big & ~above));
    }
    float m = -INFINITY;
    for (int j = 0; j < 16; j++) m = big[j] > m ? big[j] : m;
    for (; n < hi; n++) m = s[n] > m ? s[n] : m;
    return m;
}

/* s[lo .. hi) = exp(s - largest), 16 at a time (the last piece through a copy: the same exp16 on every position). */
static inline void exponentials(float *s, ptrdiff_t lo, ptrdiff_t hi, float largest) {
    ptrdiff_t n = lo;
    for (; n + 16 <= hi; n += 16) *(v16 *)(s + n) = exp16(*(const v16 *)(s + n) - largest);
    if (n < hi) {
        v16 x = (v16){0} - INFINITY;
        for (ptrdiff_t j = 0; j < hi - n; j++) x[j] = s[n + j];
        const v16 p = exp16(x - largest);
        for (ptrdiff_t j = 0; j < hi - n; j++) s[n + j] = p[j];
    }
}

/* The scores of positions from .. to of one key head's `groups` query heads (keys k, len x dim) into scratch
   (groups x len). */
static inline __attribute__((always_inline)) void scores(const float *restrict q, const float *restrict k,
                                                         const float *restrict mask, float *restrict scratch,
                                                         int groups, ptrdiff_t from, ptrdiff_t to, ptrdiff_t len,
                                                         ptrdiff_t dim, float scale) {
    ptrdiff_t n = from;
    for (; n + 16 <= to; n += 16)
        for (int g = 0; g < groups; g++) /* fused: one rounding, as the scalar fmaf below */
            *(v16 *)(scratch + g * len + n) = dots16(q + g * dim, k + n * dim, dim) * scale + *(const v16 *)(mask + n);
    for (; n < to; n++)
        for (int g = 0; g < groups; g++)
            scratch[g * len + n] = __builtin_fmaf(dot(q + g * dim, k + n * dim, dim), scale, mask[n]);
}

#define TOGETHER 4 /* query heads a key head whose values' sums values_together holds at once */

/* head's sums of values for dims of 64 and up to TOGETHER query heads, out = sum_n p[n] v[n] / sum_n p[n]: every
   query head's accumulators held in registers at once, so each position's value is read once for all of them and
   their chains of multiply-adds run side by side instead of one head's waiting on its own last. Each accumulator
   adds the same products in the same order as head's loop, so the bits are the same. */
static inline __attribute__((always_inline)) void values_together(const float *restrict p, const float *v,
                                                                  const float *vs, ptrdiff_t split,
                                                                  const float *restrict mask, float *restrict out,
                                                                  float *restrict sum, int groups, ptrdiff_t lo,
                                                                  ptrdiff_t hi, ptrdiff_t len) {
    v16 acc[TOGETHER][4];
    float total[TOGETHER];
    for (int g = 0; g < groups; g++) {
        total[g] = 0.0f;
        for (int c = 0; c < 4; c++) acc[g][c] = (v16){0};
    }
    for (ptrdiff_t n = lo; n < hi; n++) {
        if (!admitted(mask[n])) continue;
        const float *vn = (n < split ? vs : v) + n * 64;
        const v16 v0 = *(const v16 *)vn, v1 = *(const v16 *)(vn + 16), v2 = *(const v16 *)(vn + 32),
                  v3 = *(const v16 *)(vn + 48);
        for (int g = 0; g < groups; g++) { /* fused, as head's loop */
            const float w = p[g * len + n];
            total[g] += w;
            acc[g][0] += w * v0, acc[g][1] += w * v1, acc[g][2] += w * v2, acc[g][3] += w * v3;
        }
    }
    for (int g = 0; g < groups; g++) {
        sum[g] = total[g];
        for (int c = 0; c < 4; c++) *(v16 *)(out + g * 64 + c * 16) = acc[g][c];
        for (ptrdiff_t d = 0; d < 64; d++) out[g * 64 + d] = out[g * 64 + d] / sum[g];
    }
}

/* One key head of one row over positions lo .. hi of its cache k, v (len x dim): its `groups` query heads q, each
   key and value read from memory once for all of them. Positions below `shared` are read from ks, vs instead (the
   same values, in another row's cache). out: groups x dim. scratch: groups x (len + 1) floats (the scores, then
   each query head's sum). */
static inline __attribute__((always_inline)) void head(const float *restrict q, const float *k, const float *v,
                                                       const float *ks, const float *vs, ptrdiff_t shared,
                                                       const float *restrict mask, float *restrict out, int groups,
                                                       ptrdiff_t lo, ptrdiff_t hi, ptrdiff_t len, ptrdiff_t dim,
                                                       float scale, float *restrict scratch) {
    float *sum = scratch + (ptrdiff_t)groups * len;
    const ptrdiff_t split = shared < lo ? lo : shared > hi ? hi : shared;
    scores(q, ks, mask, scratch, groups, lo, split, len, dim, scale);
    scores(q, k, mask, scratch, groups, split, hi, len, dim, scale);
    for (int g = 0; g < groups; g++) {
        float *s = scratch + g * len;
        exponentials(s, lo, hi, largest_of(s, lo, hi));
        sum[g] = 0.0f;
    }
    if (dim == 64 && groups <= TOGETHER) {
        values_together(scratch, v, vs, split, mask, out, sum, groups, lo, hi, len);
        return;
    }
    const ptrdiff_t chunks = dim / 16, body = chunks * 16;
    for (ptrdiff_t i = 0; i < (ptrdiff_t)groups * dim; i++) out[i] = 0.0f;
    for (ptrdiff_t from = lo; from < hi; from += SPAN) {
        const ptrdiff_t to = hi - from < SPAN ? hi : from + SPAN;
        for (int g = 0; g < groups; g++) {
            const float *p = scratch + g * len;
            float *o = out + g * dim, total = sum[g];
            v16 acc[MAX_CHUNKS];
            for (ptrdiff_t c = 0; c < chunks; c++) acc[c] = *(const v16 *)(o + c * 16);
            for (ptrdiff_t n = from; n < to; n++) {
                if (!admitted(mask[n])) continue;
                const float *vn = (n < split ? vs : v) + n * dim;
                total += p[n];
                for (ptrdiff_t c = 0; c < chunks; c++) acc[c] += p[n] * *(const v16 *)(vn + c * 16); /* fused */
                for (ptrdiff_t d = body; d < dim; d++) o[d] = __builtin_fmaf(p[n], vn[d], o[d]);
            }
            for (ptrdiff_t c = 0; c < chunks; c++) *(v16 *)(o + c * 16) = acc[c];
            sum[g] = total;
        }
    }
    for (int g = 0; g < groups; g++)
        for (ptrdiff_t d = 0; d < dim; d++) out[g * dim + d] = out[g * dim + d] / sum[g];
}

/* Each row's admitted positions lo .. hi (from its first to its last), and the rows longest first: their key heads
   are handed out in that order, so that the long rows' work is not left for one thread at the end. */
static void spans(const float *mask, int rows, ptrdiff_t len, ptrdiff_t *lo, ptrdiff_t *hi, int *order) {
    for (int r = 0; r < rows; r++) {
        const float *m = mask + (ptrdiff_t)r * len;
        ptrdiff_t a = 0, b = len;
        while (a < len - 1 && !admitted(m[a])) a++;
        while (b > a + 1 && !admitted(m[b - 1])) b--;
        lo[r] = a, hi[r] = b;
        int i = r; /* insertion, longest first */
        while (i > 0 && hi[order[i - 1]] - lo[order[i - 1]] < b - a) order[i] = order[i - 1], i--;
        order[i] = r;
    }
}

/* Returns 0, or 1 where memory could not be had or dim is over 16 x MAX_CHUNKS (out is then not written). */
int decode_attention(const float *q, const float *keys, const float *values, const float *mask, float *out, int rows,
                     int kv_heads, int groups, ptrdiff_t len, ptrdiff_t dim, float scale, int threads,
                     const int32_t *prompt_rows, ptrdiff_t prompt_len) {
    if (dim > 16 * MAX_CHUNKS) return 1;
    ptrdiff_t *lo = malloc(sizeof(ptrdiff_t) * 2 * (size_t)rows);
    int *order = malloc(sizeof(int) * (size_t)rows);
    if (lo == NULL || order == NULL) {
        free(lo), free(order);
        return 1;
    }
    ptrdiff_t *hi = lo + rows;
    spans(mask, rows, len, lo, hi, order);
    int failed = 0;
#pragma omp parallel num_threads(threads) reduction(| : failed)
    {
        float *scratch = malloc(sizeof(float) * (size_t)(len + 1) * (size_t)groups);
        failed = scratch == NULL;
#pragma omp for schedule(dynamic, 1)
        for (int item = 0; item < rows * kv_heads; item++) {
            if (scratch == NULL) continue;
            const int r = order[item / kv_heads], h = item % kv_heads, row_head = r * kv_heads + h;
            const int from = prompt_rows == NULL ? r : prompt_rows[r]; /* the row that holds its prompt */
            const ptrdiff_t at = (ptrdiff_t)row_head * groups * dim, cache = (ptrdiff_t)row_head * len * dim;
            const ptrdiff_t prompt = ((ptrdiff_t)from * kv_heads + h) * len * dim, shared = from == r ? 0 : prompt_len;
            const float *m = mask + (ptrdiff_t)r * len;
            if (dim == 64 && groups == 3) /* the default model's: its loops unrolled, the output in registers */
                head(q + at, keys + cache, values + cache, keys + prompt, values + prompt, shared, m, out + at, 3,
                     lo[r], hi[r], len, 64, scale, scratch);
            else if (dim == 64)
                head(q + at, keys + cache, values + cache, keys + prompt, values + prompt, shared, m, out + at, groups,
                     lo[r], hi[r], len, 64, scale, scratch);
            else
                head(q + at, keys + cache, values + cache, keys + prompt, values + prompt, shared, m, out + at, groups,
                     lo[r], hi[r], len, dim, scale, scratch);
        }
        free(scratch);
    }
    free(lo), free(order);
    return failed;
}
