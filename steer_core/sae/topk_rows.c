/* The k largest values of each row, for training TopK SAEs: torch's CPU top-k spent about 40% of a training step
   on rows of a few hundred pre-activations.

   A bar no higher than the k-th largest is read first: the least of the maxima of k equal groups (the k groups
   hold k values at least that large). Only values at or above it can be among the k largest, usually a few
   dozen of a row, and those go through a small sorted insertion. The k largest come out in descending order,
   equal values in the order of their index. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define MAX_K 64

/* x: (n, d) contiguous; vals: (n, k); idx: (n, k); k <= MAX_K and k <= d. Returns how many values were NaN (the
   caller then ranks with torch, which puts NaN first). */
long topk_rows(const float *x, ptrdiff_t n, ptrdiff_t d, int k, float *vals, int64_t *idx, int threads) {
    long nans = 0;
    _Pragma("omp parallel for schedule(static) num_threads(threads) reduction(+ : nans)")
    for (ptrdiff_t r = 0; r < n; r++) {
        const float *row = x + r * d;
        float v[MAX_K];
        int64_t at[MAX_K];
        int m = 0;
        float bar = -__builtin_inff();
        ptrdiff_t g = d / k;
        if (d % k == 0) {
            bar = __builtin_inff();
            for (int t = 0; t < k; t++) {
                float mx = row[t * g];
                for (ptrdiff_t j = 1; j < g; j++) mx = row[t * g + j] > mx ? row[t * g + j] : mx;
                bar = mx < bar ? mx : bar;
            }
        }
        for (ptrdiff_t j = 0; j < d; j++) {
            float a = row[j];
            if (!(a >= bar)) {
                nans += a != a;
                continue;
            }
            if (m == k && !(a > v[k - 1])) continue;
            int p = m < k ? m++ : k - 1;
            while (p > 0 && a > v[p - 1]) {
                v[p] = v[p - 1];
                at[p] = at[p - 1];
                p--;
            }
            v[p] = a;
            at[p] = j;
        }
        memcpy(vals + r * k, v, k * sizeof(float));
        memcpy(idx + r * k, at, k * sizeof(int64_t));
    }
    return nans;
}
