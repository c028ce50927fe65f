/* One decoding step's matrix products for a few rows: y[r, o] = W[o, :] . x[r, :] (+ b[o]).

   A decoding step multiplies one to eleven rows by every weight matrix, so it is bound by reading the
   weights. MKL's one-row product runs on one core (about a third of the machine's read bandwidth on
   2 cores), and its few-row product is slower per row than one row. Here every weight row is read once
   for all rows of the batch, and the weight rows are shared between the threads.

   Each output is one thread's work in one fixed order: 16 lanes accumulate k = j (mod 16) with fused
   multiply-adds, a fixed tree adds the lanes, the tail and the bias follow. An output is therefore the
   same whatever the batch it is in, the thread count or the vector width the compiler picks (a fused
   multiply-add is exact IEEE arithmetic on every machine that has one). */
#include <stddef.h>

typedef float v16 __attribute__((vector_size(64), aligned(4)));
typedef float v8 __attribute__((vector_size(32), aligned(4)));
typedef float v4 __attribute__((vector_size(16), aligned(4)));

static inline float lanes_sum(v16 a) {
    v8 h = __builtin_shufflevector(a, a, 0, 1, 2, 3, 4, 5, 6, 7) +
           __builtin_shufflevector(a, a, 8, 9, 10, 11, 12, 13, 14, 15);
    v4 q = __builtin_shufflevector(h, h, 0, 1, 2, 3) + __builtin_shufflevector(h, h, 4, 5, 6, 7);
    return (q[0] + q[2]) + (q[1] + q[3]);
}

/* Output o for R <= 8 rows of x (row stride K). */
static inline __attribute__((always_inline)) void output(const float *W, const float *x, const float *b, float *y,
                                                         ptrdiff_t O, ptrdiff_t K, int R, ptrdiff_t o) {
    const float *w = W + o * K;
    v16 acc[8];
    _Pragma("GCC unroll 8") for (int r = 0; r < R; r++) acc[r] = (v16){0};
    ptrdiff_t k = 0;
    for (; k + 16 <= K; k += 16) {
        v16 wv = *(const v16 *)(w + k);
        _Pragma("GCC unroll 8") for (int r = 0; r < R; r++) acc[r] += wv * *(const v16 *)(x + r * K + k);
    }
    _Pragma("GCC unroll 8") for (int r = 0; r < R; r++) {
        float s = lanes_sum(acc[r]);
        for (ptrdiff_t t = k; t < K; t++) s += w[t] * x[r * K + t];
        if (b) s += b[o];
        y[r * O + o] = s;
    }
}

#define ROWS(n)                                                                 \
    case n:                                                                     \
        _Pragma("omp parallel for schedule(static) num_threads(threads)")       \
        for (ptrdiff_t o = 0; o < O; o++) output(W, xs, b, ys, O, K, n, o);     \
        break;

/* x: (R, K) and y: (R, O), both contiguous; W: (O, K) contiguous; b: (O,) or NULL. */
void rows_linear(const float *W, const float *x, const float *b, float *y, ptrdiff_t O, ptrdiff_t K, int R,
                 int threads) {
    for (int r0 = 0; r0 < R; r0 += 8) {
        int n = R - r0 < 8 ? R - r0 : 8;
        const float *xs = x + r0 * K;
        float *ys = y + r0 * O;
        switch (n) { ROWS(1) ROWS(2) ROWS(3) ROWS(4) ROWS(5) ROWS(6) ROWS(7) ROWS(8) }
    }
}
