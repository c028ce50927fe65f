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
#include <omp.h>
#include <stddef.h>
#include <stdlib.h>

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
   -> 1482, the same replies. On the Xeon, one row with no prefetch was not faster (above). Since a wide weight is
   read in chunks (below), four rows too (the Compare's): results/kernel_variants_2026-12-07c.jsonl, 4 rows 15.84 ms
   with prefetches, 14.35 without; 6 rows were 51% slower without, and 5 rows (a throwaway timing) the same. */
#if defined(__AVX512F__) && (defined(__znver3__) || defined(__znver4__))
#define HARDWARE_ROWS 4
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

/* A wide weight is read in chunks of its inputs: every block's first chunk, then every block's second, and so on, so
   that the rows' pieces of x a chunk reads stay in the L1 cache while the weight streams past them. Read whole, the
   default model's MLP down projection (1536 inputs) held 24 KB of x at 4 rows and 43 KB at 7, beside its weight's
   stream through the 32 KB L1 cache, and more rows cost it far more than the 576-input weights: on an AMD EPYC (Zen
   4), all its weights (300 MB) in ms for 1 / 3 / 4 / 7 rows, 11.34 / 13.04 / 11.03 / 13.48 read whole against
   10.49 / 10.03 / 10.39 / 10.50 as three weights of 512 inputs (throwaway timing). In whole generations, with four
   rows bare (HARDWARE_ROWS), against 5cf9d92 (experiments/chunks_ab.py, results/chunks_ab_2026-12-07.jsonl, two
   runs of 9 rounds, the same replies): the Compare 1853 -> 1793 and 1742 -> 1695 ms, the ladder 1717 -> 1669 and
   1616 -> 1567, one reply 1555 -> 1541 and 1374 -> 1397. A chunk's sums are kept, 16 lanes
   an output and row, in each thread's scratch until the next chunk: the same fused multiply-adds in the same order,
   so the same bits as one pass over the whole width. Chunks hold at most MAX_CHUNK_PIECES pieces of 16, split as
   evenly as they go (rows_kernel.pack lays them out the same way: chunk after chunk, each block's part of a chunk
   after the last block's, the outputs' last K % 16 floats at the end of each block's last part). */
#ifndef MAX_CHUNK_PIECES /* set otherwise only by a test, with rows_kernel.MAX_CHUNK_PIECES to match */
#define MAX_CHUNK_PIECES 40
#endif

static inline ptrdiff_t chunk_count(ptrdiff_t pieces) {
    return pieces <= MAX_CHUNK_PIECES ? 1 : (pieces + MAX_CHUNK_PIECES - 1) / MAX_CHUNK_PIECES;
}
static inline ptrdiff_t chunk_first(ptrdiff_t pieces, ptrdiff_t n, ptrdiff_t c) { /* its first piece */
    return c * (pieces / n) + (c < pieces % n ? c : pieces % n);
}

/* One chunk (cp pieces from piece c0) of packed block q's outputs for R <= MAX_PASS_ROWS rows of x (row stride K),
   into acc. p: the block's part of the chunk. pass: ONE_PASS, ONE_PASS_BARE (one pass without software prefetches:
   HARDWARE_ROWS), or which of the TWO_PASSES over the part this is (the second reads it from the cache). The far
   prefetch runs at the same pace through the time both passes take: each pass prefetches half the part's lines, so
   memory is not left idle in the second. */
enum { ONE_PASS, ONE_PASS_BARE, FIRST_PASS, SECOND_PASS };
static inline __attribute__((always_inline)) void chunk(const weight_t *p, const float *x, ptrdiff_t K, ptrdiff_t c0,
                                                        ptrdiff_t cp, int R, int pass, v16 acc[BLOCK][MAX_PASS_ROWS]) {
    for (ptrdiff_t c = 0; c < cp; c++) {
        const weight_t *pc = p + c * BLOCK * 16;
        if (pass == ONE_PASS) _Pragma("GCC unroll 4") for (int j = 0; j < BLOCK * 16 / LINE; j++)
            __builtin_prefetch(pc + PREFETCH_FAR + j * LINE, 0, 2);
        else if (pass != ONE_PASS_BARE) {
            const weight_t *half = p + PREFETCH_FAR + (pass == SECOND_PASS ? cp : 0) * BLOCK * 8 + c * BLOCK * 8;
            _Pragma("GCC unroll 2") for (int j = 0; j < BLOCK * 8 / LINE; j++)
                __builtin_prefetch(half + j * LINE, 0, 2);
        }
        if (pass == ONE_PASS || pass == FIRST_PASS) _Pragma("GCC unroll 4") for (int j = 0; j < BLOCK * 16 / LINE; j++)
            __builtin_prefetch(pc + PREFETCH + j * LINE, 0, 3);
        v16 xv[MAX_PASS_ROWS]; /* the rows' pieces held in registers (IN_REGISTER): a load a row and one an output */
        _Pragma("GCC unroll 6") for (int r = 0; r < R; r++) {
            xv[r] = *(const v16 *)(x + r * K + (c0 + c) * 16);
            IN_REGISTER(xv[r]);
        }
        _Pragma("GCC unroll 4") for (int j = 0; j < BLOCK; j++) {
            v16 wv = load_w(pc + j * 16);
            IN_REGISTER(wv);
            _Pragma("GCC unroll 6") for (int r = 0; r < R; r++) acc[j][r] += wv * xv[r];
        }
    }
}

/* Block q's outputs from its lanes' sums: a fixed tree adds the lanes, then the last K % 16 products (pt: the block's
   K % 16 floats an output) and the bias, one by one. */
static inline __attribute__((always_inline)) void finish(const weight_t *pt, const float *x, const float *b, float *y,
                                                         ptrdiff_t O, ptrdiff_t K, int R, ptrdiff_t q,
                                                         v16 acc[BLOCK][MAX_PASS_ROWS]) {
    const ptrdiff_t tail = K % 16, body = K - tail, o0 = q * BLOCK;
    _Pragma("GCC unroll 8") for (int j = 0; j < BLOCK; j++) {
        if (o0 + j >= O) break; /* the last block's padding */
        _Pragma("GCC unroll 8") for (int r = 0; r < R; r++) {
            float s = lanes_sum(acc[j][r]);
            for (ptrdiff_t t = 0; t < tail; t++) s = __builtin_fmaf(widen(pt[j * tail + t]), x[r * K + body + t], s);
            if (b) s += b[o0 + j];
            y[r * O + o0 + j] = s;
        }
    }
}

/* One pass over block q's part p of a chunk (cp pieces from piece c0) for R rows of x, starting from the sums kept
   (later: not the chunk of the first pieces), keeping them again or (last: the chunk of the last pieces) finishing
   the outputs. keep: the block's sums, rows apart from one another by stride (16 floats an output and row). */
static inline __attribute__((always_inline)) void pass_over(const weight_t *p, const float *x, const float *b, float *y,
                                                            ptrdiff_t O, ptrdiff_t K, ptrdiff_t q, ptrdiff_t c0,
                                                            ptrdiff_t cp, int R, int pass, int later, int last,
                                                            v16 *keep, int stride) {
    v16 acc[BLOCK][MAX_PASS_ROWS];
    _Pragma("GCC unroll 8") for (int j = 0; j < BLOCK; j++)
        _Pragma("GCC unroll 8") for (int r = 0; r < R; r++) acc[j][r] = later ? keep[j * stride + r] : (v16){0};
    chunk(p, x, K, c0, cp, R, pass, acc);
    if (last)
        finish(p + BLOCK * 16 * cp, x, b, y, O, K, R, q, acc);
    else
        _Pragma("GCC unroll 8") for (int j = 0; j < BLOCK; j++)
            _Pragma("GCC unroll 8") for (int r = 0; r < R; r++) keep[j * stride + r] = acc[j][r];
}

/* Block q's part of a chunk for R rows: one pass, or (first: the first pass's rows) two. */
static inline __attribute__((always_inline)) void block(const weight_t *p, const float *x, const float *b, float *y,
                                                        ptrdiff_t O, ptrdiff_t K, ptrdiff_t q, ptrdiff_t c0,
                                                        ptrdiff_t cp, int R, int first, int pass, int later, int last,
                                                        v16 *keep) {
    const int R1 = first ? first : R;
    pass_over(p, x, b, y, O, K, q, c0, cp, R1, first ? FIRST_PASS : pass, later, last, keep, R);
    if (first)
        pass_over(p, x + R1 * K, b, y + R1 * O, O, K, q, c0, cp, R - R1, SECOND_PASS, later, last,
                  keep ? keep + R1 : NULL, R);
}

/* One thread's share of R rows (first: as block's) over a weight of several chunks: a fixed range of blocks, the same
   at every chunk, so that the thread's sums wait in its own scratch and no thread waits for another between chunks.
   Returns 1 where the scratch could not be had (its outputs are then not written). */
static inline __attribute__((always_inline)) int chunks(const weight_t *P, const float *x, const float *b, float *y,
                                                        ptrdiff_t O, ptrdiff_t K, int R, int first, int pass) {
    const ptrdiff_t nb = (O + BLOCK - 1) / BLOCK, pieces = K / 16, n = chunk_count(pieces);
    const int t = omp_get_thread_num(), T = omp_get_num_threads();
    const ptrdiff_t q0 = nb * t / T, q1 = nb * (t + 1) / T;
    v16 *kept = aligned_alloc(64, sizeof(v16) * (size_t)((q1 - q0) * BLOCK * R + 1));
    if (kept == NULL) return 1;
    for (ptrdiff_t c = 0; c < n; c++) {
        const ptrdiff_t c0 = chunk_first(pieces, n, c), cp = chunk_first(pieces, n, c + 1) - c0;
        const ptrdiff_t part = BLOCK * 16 * cp + (c == n - 1 ? BLOCK * (K % 16) : 0); /* a block's part */
        const weight_t *region = P + nb * BLOCK * 16 * c0;
        for (ptrdiff_t q = q0; q < q1; q++)
            block(region + q * part, x, b, y, O, K, q, c0, cp, R, first, pass, c > 0, c == n - 1,
                  kept + (q - q0) * BLOCK * R);
    }
    free(kept);
    return 0;
}

/* n rows, the blocks shared out between the threads: a weight of one chunk block by block, a wider one by `chunks`. n is
   written out in each case, inside the parallel region, so that the compiler builds each row count's loops. */
#define ROWS_N(n, first)                                                                                  \
    case n: {                                                                                             \
        const int pass = first ? FIRST_PASS : n <= HARDWARE_ROWS ? ONE_PASS_BARE : ONE_PASS;              \
        if (chunk_count(K / 16) == 1) {                                                                   \
            _Pragma("omp parallel for schedule(static) num_threads(threads)")                             \
            for (ptrdiff_t q = 0; q < blocks; q++)                                                        \
                block(P + q * BLOCK * K, x, b, y, O, K, q, 0, K / 16, n, first, pass, 0, 1, NULL);        \
            return 0;                                                                                     \
        }                                                                                                 \
        int failed = 0;                                                                                   \
        _Pragma("omp parallel num_threads(threads) reduction(| : failed)")                                \
        failed = chunks(P, x, b, y, O, K, n, first, pass);                                                \
        return failed;                                                                                    \
    }
#define ROWS(n) ROWS_N(n, 0)
/* From 7 rows: two passes over each block's part of a chunk, the second while it is still in the cache (the weight
   read once), so that each pass holds its rows' pieces in registers, and the far prefetch paced over both (chunk's
   pass). Against 7f32217's one pass of 7 or 8 rows (then the rest), all the default model's weights on an Intel
   Xeon of 2 cores (experiments/kernel_ab.py, results/kernel_ab_2026-12-06e, f and g): 8 rows 4 and 6% faster,
   10 rows 8 and 11%, 7 rows 0 to 3% (within the machine's noise). Two passes without the paced prefetch had been
   slower at 7 rows on an earlier day (docs/performance.md). */
#define TWO_PASSES(n, first) ROWS_N(n, first)

/* P: W (O, K) packed (O rounded up to a multiple of BLOCK); x: (R, K) and y: (R, O), both contiguous;
   b: (O,) or NULL; R from 1 to 11 (rows_kernel.MAX_ROWS). Returns 0, or 1 where memory could not be had. */
int rows_linear(const weight_t *P, const float *x, const float *b, float *y, ptrdiff_t O, ptrdiff_t K, int R,
                int threads) {
    const ptrdiff_t blocks = (O + BLOCK - 1) / BLOCK;
    switch (R) {
        ROWS(1) ROWS(2) ROWS(3) ROWS(4) ROWS(5) ROWS(6)
        TWO_PASSES(7, 4) TWO_PASSES(8, 4) TWO_PASSES(9, 5) TWO_PASSES(10, 5) TWO_PASSES(11, 6)
    }
    return 1;
}

int rows_linear_chunk_pieces(void) { return MAX_CHUNK_PIECES; }

int rows_linear_block(void) { return BLOCK; }
