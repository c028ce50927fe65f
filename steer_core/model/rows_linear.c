/* One decoding step's matrix products for a few rows: y[r, o] = W[o, :] . x[r, :] (+ b[o]).

   A decoding step multiplies one to eleven rows by every weight matrix, so it is bound by reading the
   weights. MKL's one-row product runs on one core (about a third of the machine's read bandwidth on
   2 cores), and its few-row product is slower per row than one row. Here every weight row is read once
   for all rows of the batch, and the weight rows are shared between the threads.

   The weight is read in a packed copy (rows_kernel.pack): blocks of BLOCK outputs, and within a block
   the outputs' 16-float pieces side by side, piece after piece, then the outputs' last K % 16 floats.
   So the weight is still one sequential stream, and each piece of x loaded serves BLOCK outputs. All
   the default model's weights for 4 rows: 17 ms against 21.6 ms in the weight's own layout, 7 rows
   28.5 ms against 31.7, one row 14.0 against 15.2 (docs/performance.md). Reading BLOCK rows of the
   weight's own layout side by side was slower than one: the hardware prefetcher follows one stream.

   Each output is one thread's work in one fixed order: 16 lanes accumulate k = j (mod 16) with fused
   multiply-adds, a fixed tree adds the lanes, the last K % 16 products and the bias follow one by one
   (fused too). An output is therefore the same whatever the batch it is in, its place in a block, the
   thread count or the vector width the compiler picks (a fused multiply-add is exact IEEE arithmetic on
   every machine that has one). */
#include <stddef.h>

#define BLOCK 4 /* outputs a packed block holds; rows_kernel.BLOCK says the same */
/* The weight is prefetched twice: PREFETCH_FAR floats (12 KB) ahead into the L2 cache (hint 2), and PREFETCH floats
   (2 KB) ahead into every level (hint 3). The hardware prefetcher alone falls behind once a block's arithmetic is
   long, and with the near prefetch alone 4 and 7 rows still read the weights well below one row's pace. All the
   default model's weights (experiments/kernel_ab.py), on an Intel Xeon with 2 MB of L2 a core, in ms for 1 / 4 / 7
   rows: the near one alone 22.0 / 25.1 / 26.5, both 21.6 / 21.9 / 23.6; in another run the near one alone
   23.4 / 25.6 / 27.7, none 23.7 / 26.6 / 33.4. (An earlier near prefetch with hint 0 from 5 rows on took 7 rows from
   25.7 to 20.7 ms on an AMD EPYC, Zen 4; on the Xeon hint 0 was slower
   than none at 5 and 7 rows.) */
#define PREFETCH 512
#define PREFETCH_FAR 3072
/* Up to HARDWARE_ROWS rows, no software prefetch at all, on an AMD Zen 4 (AVX-512 and GCC's znver3 or znver4: GCC 12
   knows no znver4 and calls the EPYC measured znver3 under -march=native, while its -march=znver3 alone defines no
   __AVX512F__, which leaves a plain Zen 3 out). There the hardware prefetcher alone streams a few
   rows' weights faster. experiments/kernel_variants.py (results/kernel_variants_2026-12-07.jsonl, 21 rounds, the
   builds and row counts taking turns), all the default model's weights, ms for 1 / 2 / 3 rows: 18.15 / 17.94 / 18.33
   with prefetches, 15.75 / 16.19 / 17.68 without; 6 and 7 rows were 53-56% slower with none at all. Whole
   generations (experiments/kernel_batches_ab.py): one reply 1416 -> 1297 ms, a Compare clicked again (2 rows) 1568
   -> 1482, the same replies. On the Xeon, one row with no prefetch was not faster (above). */
#if defined(__AVX512F__) && (defined(__znver3__) || defined(__znver4__))
#define HARDWARE_ROWS 3
#else
#define HARDWARE_ROWS 0
#endif

/* Left to itself, GCC loads a piece of x or of the weight again for nearly every multiply-add (a memory operand),
   and up to 6 rows the loads, not the multiply-adds, set the pace: about 55 GFLOPS a core at 4 rows, against 103
   with each piece loaded once into a register (experiments/kernel_hot.py, the weight in the cache; the core's
   peak is about 117). An empty asm that takes the value in a register keeps it there. From 7 rows the
   accumulators would leave too few registers for the rows' pieces: more rows are two passes (TWO_PASSES). */
#define MAX_PASS_ROWS 6
#if defined(__x86_64__)
#define IN_REGISTER(v) __asm__("" : "+v"(v))
#else
#define IN_REGISTER(v) ((void)0)
#endif

typedef float v16 __attribute__((vector_size(64), aligned(4)));

/* Built with -DWEIGHT_BF16 (experiments/bf16_weights.py only; the app never builds it): the packed weight holds
   bfloat16 values, half the bytes to read, each widened to float32 exactly (its 16 bits shifted up) before the same
   arithmetic. The products then differ from float32 weights' in their bits (the weights are rounded to bfloat16). */
#ifdef WEIGHT_BF16
typedef unsigned short weight_t;
typedef unsigned short u16x16 __attribute__((vector_size(32), aligned(2)));
typedef unsigned int u32x16 __attribute__((vector_size(64)));
static inline v16 load_w(const weight_t *p) {
    return (v16)(__builtin_convertvector(*(const u16x16 *)p, u32x16) << 16);
}
static inline float widen(weight_t w) {
    union { unsigned int u; float f; } c = {(unsigned int)w << 16};
    return c.f;
}
#undef PREFETCH
#undef PREFETCH_FAR
#define PREFETCH 1024     /* the same bytes ahead as float32's */
#define PREFETCH_FAR 6144
#else
typedef float weight_t;
#define load_w(p) (*(const v16 *)(p))
#define widen(w) (w)
#endif
#define LINE (64 / (int)sizeof(weight_t)) /* weight values a cache line holds */
typedef float v8 __attribute__((vector_size(32), aligned(4)));
typedef float v4 __attribute__((vector_size(16), aligned(4)));

static inline float lanes_sum(v16 a) {
    v8 h = __builtin_shufflevector(a, a, 0, 1, 2, 3, 4, 5, 6, 7) +
           __builtin_shufflevector(a, a, 8, 9, 10, 11, 12, 13, 14, 15);
    v4 q = __builtin_shufflevector(h, h, 0, 1, 2, 3) + __builtin_shufflevector(h, h, 4, 5, 6, 7);
    return (q[0] + q[2]) + (q[1] + q[3]);
}

/* The outputs of packed block q for R <= MAX_PASS_ROWS rows of x (row stride K). pass: ONE_PASS, ONE_PASS_BARE (one
   pass without software prefetches: HARDWARE_ROWS), or which of the TWO_PASSES over the block this is (the second
   reads the block from the cache). The far prefetch runs at the same pace through the time both passes take: each
   pass prefetches half the block's lines, so memory is not left idle in the second. */
enum { ONE_PASS, ONE_PASS_BARE, FIRST_PASS, SECOND_PASS };
static inline __attribute__((always_inline)) void block(const weight_t *P, const float *x, const float *b, float *y,
                                                        ptrdiff_t O, ptrdiff_t K, int R, ptrdiff_t q, int pass) {
    const ptrdiff_t pieces = K / 16, tail = K % 16;
    const weight_t *p = P + q * BLOCK * K;
    v16 acc[BLOCK][MAX_PASS_ROWS];
    _Pragma("GCC unroll 8") for (int j = 0; j < BLOCK; j++)
        _Pragma("GCC unroll 8") for (int r = 0; r < R; r++) acc[j][r] = (v16){0};
    for (ptrdiff_t c = 0; c < pieces; c++) {
        const weight_t *pc = p + c * BLOCK * 16;
        if (pass == ONE_PASS) _Pragma("GCC unroll 4") for (int j = 0; j < BLOCK * 16 / LINE; j++)
            __builtin_prefetch(pc + PREFETCH_FAR + j * LINE, 0, 2);
        else if (pass != ONE_PASS_BARE) {
            const weight_t *half = p + PREFETCH_FAR + (pass == SECOND_PASS ? pieces : 0) * BLOCK * 8 + c * BLOCK * 8;
            _Pragma("GCC unroll 2") for (int j = 0; j < BLOCK * 8 / LINE; j++)
                __builtin_prefetch(half + j * LINE, 0, 2);
        }
        if (pass == ONE_PASS || pass == FIRST_PASS) _Pragma("GCC unroll 4") for (int j = 0; j < BLOCK * 16 / LINE; j++)
            __builtin_prefetch(pc + PREFETCH + j * LINE, 0, 3);
        v16 xv[MAX_PASS_ROWS]; /* the rows' pieces held in registers (IN_REGISTER): a load a row and one an output */
        _Pragma("GCC unroll 6") for (int r = 0; r < R; r++) {
            xv[r] = *(const v16 *)(x + r * K + c * 16);
            IN_REGISTER(xv[r]);
        }
        _Pragma("GCC unroll 4") for (int j = 0; j < BLOCK; j++) {
            v16 wv = load_w(pc + j * 16);
            IN_REGISTER(wv);
            _Pragma("GCC unroll 6") for (int r = 0; r < R; r++) acc[j][r] += wv * xv[r];
        }
    }
    const weight_t *pt = p + pieces * BLOCK * 16;
    const ptrdiff_t o0 = q * BLOCK;
    _Pragma("GCC unroll 8") for (int j = 0; j < BLOCK; j++) {
        if (o0 + j >= O) break; /* the last block's padding */
        _Pragma("GCC unroll 8") for (int r = 0; r < R; r++) {
            float s = lanes_sum(acc[j][r]);
            for (ptrdiff_t t = 0; t < tail; t++)
                s = __builtin_fmaf(widen(pt[j * tail + t]), x[r * K + pieces * 16 + t], s);
            if (b) s += b[o0 + j];
            y[r * O + o0 + j] = s;
        }
    }
}

#define ROWS(n)                                                                 \
    case n:                                                                     \
        _Pragma("omp parallel for schedule(static) num_threads(threads)")       \
        for (ptrdiff_t q = 0; q < blocks; q++)                                   \
            block(P, x, b, y, O, K, n, q, n <= HARDWARE_ROWS ? ONE_PASS_BARE : ONE_PASS); \
        break;
/* From 7 rows: two passes over each block, the second while the block is still in the cache (the weight read
   once), so that each pass holds its rows' pieces in registers, and the far prefetch paced over both (block's
   pass). Against 7f32217's one pass of 7 or 8 rows (then the rest), all the default model's weights on an Intel
   Xeon of 2 cores (experiments/kernel_ab.py, results/kernel_ab_2026-12-06e, f and g): 8 rows 4 and 6% faster,
   10 rows 8 and 11%, 7 rows 0 to 3% (within the machine's noise). Two passes without the paced prefetch had been
   slower at 7 rows on an earlier day (docs/performance.md). */
#define TWO_PASSES(n, first)                                                    \
    case n:                                                                     \
        _Pragma("omp parallel for schedule(static) num_threads(threads)")       \
        for (ptrdiff_t q = 0; q < blocks; q++) {                                \
            block(P, x, b, y, O, K, first, q, FIRST_PASS);                      \
            block(P, x + first * K, b, y + first * O, O, K, n - first, q, SECOND_PASS); \
        }                                                                       \
        break;

/* P: W (O, K) packed (O rounded up to a multiple of BLOCK); x: (R, K) and y: (R, O), both contiguous;
   b: (O,) or NULL; R from 1 to 11 (rows_kernel.MAX_ROWS). */
void rows_linear(const weight_t *P, const float *x, const float *b, float *y, ptrdiff_t O, ptrdiff_t K, int R,
                 int threads) {
    const ptrdiff_t blocks = (O + BLOCK - 1) / BLOCK;
    switch (R) {
        ROWS(1) ROWS(2) ROWS(3) ROWS(4) ROWS(5) ROWS(6)
        TWO_PASSES(7, 4) TWO_PASSES(8, 4) TWO_PASSES(9, 5) TWO_PASSES(10, 5) TWO_PASSES(11, 6)
    }
}

int rows_linear_block(void) { return BLOCK; }
