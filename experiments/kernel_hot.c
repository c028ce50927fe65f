/* The few-row kernel's arithmetic alone: one thread, a weight small enough to stay in the cache (2048 x 576, 4.7 MB),
   GFLOPS for 1 to 8 rows, beside bare fused multiply-adds on registers (the core's peak). Built and run by
   experiments/kernel_hot.py with the checkout's rows_linear.c. Prints one JSON object. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

void rows_linear(const float *P, const float *x, const float *b, float *y, ptrdiff_t O, ptrdiff_t K, int R,
                 int threads);

typedef float v16 __attribute__((vector_size(64)));

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static double peak_gflops(void) {
    const long n = 20000000;
    v16 a[12], m = {0}, c = {0};
    for (int l = 0; l < 16; l++) m[l] = 1.0000001f, c[l] = 1e-7f;
    for (int i = 0; i < 12; i++) a[i] = m * (float)i;
    double t = now();
    for (long k = 0; k < n; k++)
        _Pragma("GCC unroll 12") for (int i = 0; i < 12; i++) a[i] = a[i] * m + c;
    t = now() - t;
    float s = 0;
    for (int i = 0; i < 12; i++) s += a[i][0];
    if (s == 12345.0f) printf("#");  /* keep the loop */
    return n * 12.0 * 16 * 2 / t / 1e9;
}

int main(void) {
    const ptrdiff_t O = 2048, K = 576;
    float *P = aligned_alloc(64, sizeof(float) * O * K), *x = aligned_alloc(64, sizeof(float) * 8 * K);
    float *y = aligned_alloc(64, sizeof(float) * 8 * O);
    for (ptrdiff_t i = 0; i < O * K; i++) P[i] = (float)(i % 97) * 1e-3f;
    for (ptrdiff_t i = 0; i < 8 * K; i++) x[i] = (float)(i % 13) * 1e-2f;
    printf("{\"peak_gflops\": %.1f", peak_gflops());
    for (int R = 1; R <= 8; R++) {
        double best = 1e9;
        for (int rep = 0; rep < 7; rep++) {
            double t = now();
            for (int it = 0; it < 200; it++) rows_linear(P, x, NULL, y, O, K, R, 1);
            t = now() - t;
            best = t < best ? t : best;
        }
        printf(", \"rows_%d_gflops\": %.1f", R, 200.0 * O * K * R * 2 / best / 1e9);
    }
    printf("}\n");
    return 0;
}
