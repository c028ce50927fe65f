/* Stands in for rows_linear.c in experiments/decode_split.py: the output of the right shape, zeros, no arithmetic. */
#include <stddef.h>
#include <string.h>

void rows_zero(const float *P, const float *x, const float *b, float *y, ptrdiff_t O, ptrdiff_t K, int R, int threads) {
    (void)P, (void)x, (void)b, (void)K, (void)threads;
    memset(y, 0, sizeof(float) * (size_t)O * (size_t)R);
}
