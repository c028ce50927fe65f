/* Decoder layers of a Llama model for one decoding position, lean_step.py's _layer without Python: the hidden
   states bit for bit those of the Python layer (checked when the library loads, and by tests/test_lean_step.py).

   What is exact IEEE arithmetic (the norms' scaling, rotary embedding, residual additions, the MLP's product, the
   cache's copies) runs as plain loops that round each operation as ATen does, in the same order; this file is
   built with -ffp-contract=off, so no multiply and add are fused into one rounding. What is not (the norm's mean,
   its summation order; SiLU, its exponential; attention) calls ATen itself on the same values and shapes (the
   interactive views' attention: the attention kernel, decode_attention.c, by its address). The
   products go through the few-row kernel (rows_linear.c) by its address. The default model's 30 layers for one
   row, products aside, take about 1.5 ms (2 CPU cores).

   A layer is described by FIELDS int64 values (lean_step.Plan writes them): the addresses of its two norm
   weights, its seven packed weights and their biases (0 for none), its cache's keys, values and length. A layer
   whose query or output has forward hooks (a steering edit) calls back into Python there, with the value in a
   buffer Python owns: Python runs the hooks and writes their result back. A query edit that adds a fixed vector
   (lean_step.Plan.sites: SHIFT) is added here instead, without the callback. */
#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <stdexcept>
#include <vector>

using rows_fn = int (*)(const float *, const float *, const float *, float *, std::ptrdiff_t, std::ptrdiff_t, int,
                         int);
using attend_fn = int (*)(const float *, const float *, const float *, const float *, float *, int, int, int,
                          std::ptrdiff_t, std::ptrdiff_t, float, int, const int32_t *, std::ptrdiff_t);

enum Field { NORM1, NORM2, Q, K, V, O, GATE, UP, DOWN, BIAS = 9, KEYS = 16, VALUES, LENGTH, FIELDS };

extern "C" int lean_layers_fields(void) { return FIELDS; }

using hook_fn = int (*)(int layer, int where);  /* nonzero: the hook raised (Python keeps the exception) */
enum Where { QUERY = 1, OUTPUT = 2 };           /* a layer's flags: which of its sites call back */
enum { SHIFT = 4 }; /* a layer's flag: a fixed vector (rows x queries, at shifts[layer]) is added to its query */
enum Buffer { X, QUERY_OUT, H_IN, H_OUT, BUFFERS };

struct Shape {
    int64_t rows, hidden, heads, kv_heads, dim, inter, cache_len;
    double scaling;
    rows_fn product;
    int threads;
    hook_fn hook;
    const int64_t *buffers;
    attend_fn attend;      /* the attention kernel, or null for SDPA */
    const int64_t *shifts; /* each layer's fixed query shift (SHIFT), by address */
    const int32_t *prompt_rows; /* the attention kernel's: each row's row holding its prompt (or null) */
    int64_t prompt_len;         /* and that prompt's width */
};

static at::Tensor blob(const void *address, at::IntArrayRef shape, at::ScalarType type = at::kFloat) {
    return at::from_blob(const_cast<void *>(address), shape, at::TensorOptions().dtype(type));
}

/* One call's values, rows x each width, row after row. */
struct Work {
    std::vector<float> h, x, q, k, v, a, gate, up;
    explicit Work(const Shape &s)
        : h(s.rows * s.hidden), x(s.rows * s.hidden), q(s.rows * s.heads * s.dim), k(s.rows * s.kv_heads * s.dim),
          v(s.rows * s.kv_heads * s.dim), a(s.rows * s.hidden), gate(s.rows * s.inter), up(s.rows * s.inter) {}
};

/* small_batch._linear through the kernel: y (rows, out) = x (rows, in) W^T (+ b). */
static void linear(const Shape &s, const int64_t *f, int which, const float *x, int64_t in, float *y, int64_t out) {
    if (s.product(reinterpret_cast<const float *>(f[which]), x, reinterpret_cast<const float *>(f[BIAS + which - Q]), y,
                  out, in, static_cast<int>(s.rows), s.threads))
        throw std::runtime_error("the few-row kernel could not allocate its sums' scratch");
}

/* LlamaRMSNorm: weight * (h * rsqrt(mean(h^2) + eps)). The mean is ATen's (its summation order); the rest is
   exact IEEE arithmetic in the same order (1 / sqrt: ATen's rsqrt; eps rounded to float, as ATen adds it). */
static void rms_norm(const Shape &s, const float *h, const float *weight, double eps, float *out) {
    at::Tensor mean = blob(h, {s.rows, 1, s.hidden}).pow(2).mean({-1}, true).contiguous();
    const float *m = mean.data_ptr<float>();
    for (int64_t r = 0; r < s.rows; r++) {
        const float inv = 1.0f / std::sqrt(m[r] + static_cast<float>(eps));
        for (int64_t i = 0; i < s.hidden; i++) {
            const float scaled = h[r * s.hidden + i] * inv;
            out[r * s.hidden + i] = weight[i] * scaled;
        }
    }
}

/* apply_rotary_pos_emb on x (rows, heads, dim) in place: x * cos + rotate_half(x) * sin, rounded as ATen rounds
   its four operations (this file is built without fused multiply-adds). */
static void rope(const Shape &s, float *x, int64_t heads, const float *cos, const float *sin) {
    const int64_t half = s.dim / 2;
    std::vector<float> old(s.dim);
    for (int64_t r = 0; r < s.rows; r++)
        for (int64_t hd = 0; hd < heads; hd++) {
            float *p = x + (r * heads + hd) * s.dim;
            const float *c = cos + r * s.dim, *sn = sin + r * s.dim;
            std::copy(p, p + s.dim, old.begin());
            for (int64_t d = 0; d < s.dim; d++) {
                const float rotated = d < half ? -old[d + half] : old[d - half];
                const float a = old[d] * c[d];
                const float b = rotated * sn[d];
                p[d] = a + b;
            }
        }
}

/* Hands `value` (n floats a row) to Python's hooks of `where` through its buffer, with the site's input; the
   buffer, as they left it, replaces the value. */
static bool call_back(const Shape &s, int idx, int where, float *value, int64_t n, Buffer out, const float *input,
                      int64_t in_n, Buffer in) {
    std::copy(input, input + s.rows * in_n, reinterpret_cast<float *>(s.buffers[in]));
    float *kept = reinterpret_cast<float *>(s.buffers[out]);
    std::copy(value, value + s.rows * n, kept);
    if (s.hook(idx, where) != 0) return false;
    std::copy(kept, kept + s.rows * n, value);
    return true;
}

/* sdpa_attention_forward (the query heads that share a key head as its positions: pack_gqa), or the attention
   kernel (decode_attention.c, by its address) where given. Returns (rows, heads x dim). */
static at::Tensor attention(const Shape &s, const Work &w, const float *keys, const float *values, const float *mask) {
    const int64_t groups = s.heads / s.kv_heads;
    if (s.attend != nullptr) {
        at::Tensor out = at::empty({s.rows, s.heads * s.dim}, at::kFloat);
        if (s.attend(w.q.data(), keys, values, mask, out.data_ptr<float>(), static_cast<int>(s.rows),
                     static_cast<int>(s.kv_heads), static_cast<int>(groups), s.cache_len, s.dim,
                     static_cast<float>(s.scaling), s.threads, s.prompt_rows, s.prompt_len) != 0)
            throw std::runtime_error("the attention kernel could not have its scratch memory");
        return out;
    }
    const std::vector<int64_t> cache_shape{s.rows, s.kv_heads, s.cache_len, s.dim};
    at::Tensor q = groups > 1 ? blob(w.q.data(), {s.rows, s.kv_heads, groups, s.dim})
                              : blob(w.q.data(), {s.rows, s.heads, 1, s.dim});
    at::Tensor a = at::scaled_dot_product_attention(q, blob(keys, cache_shape), blob(values, cache_shape),
                                                    blob(mask, {s.rows, 1, 1, s.cache_len}), 0.0, false, s.scaling);
    return a.reshape({s.rows, s.heads * s.dim}).contiguous();
}

/* One layer on w.h; false where a hook raised. */
static bool layer(const Shape &s, Work &w, int idx, int flags, const int64_t *f, const double *eps, const float *mask,
                  const float *cos, const float *sin, int64_t at) {
    const int64_t H = s.hidden, QW = s.heads * s.dim, KW = s.kv_heads * s.dim;
    std::vector<float> h_in;
    if (flags & OUTPUT) h_in = w.h;
    rms_norm(s, w.h.data(), reinterpret_cast<const float *>(f[NORM1]), eps[0], w.x.data());
    linear(s, f, Q, w.x.data(), H, w.q.data(), QW);
    if ((flags & QUERY) && !call_back(s, idx, QUERY, w.q.data(), QW, QUERY_OUT, w.x.data(), H, X)) return false;
    if (flags & SHIFT) { /* the edit's q + shift, one rounding each */
        const float *d = reinterpret_cast<const float *>(s.shifts[idx]);
        for (int64_t i = 0; i < s.rows * QW; i++) w.q[i] = w.q[i] + d[i];
    }
    linear(s, f, K, w.x.data(), H, w.k.data(), KW);
    linear(s, f, V, w.x.data(), H, w.v.data(), KW);
    rope(s, w.q.data(), s.heads, cos, sin);
    rope(s, w.k.data(), s.kv_heads, cos, sin);
    /* StaticLayer.update: the length, then this position's keys and values */
    *reinterpret_cast<int64_t *>(f[LENGTH]) += 1;
    float *keys = reinterpret_cast<float *>(f[KEYS]), *values = reinterpret_cast<float *>(f[VALUES]);
    for (int64_t r = 0; r < s.rows; r++)
        for (int64_t hd = 0; hd < s.kv_heads; hd++) {
            const int64_t from = (r * s.kv_heads + hd) * s.dim, to = ((r * s.kv_heads + hd) * s.cache_len + at) * s.dim;
            std::copy(w.k.begin() + from, w.k.begin() + from + s.dim, keys + to);
            std::copy(w.v.begin() + from, w.v.begin() + from + s.dim, values + to);
        }
    at::Tensor flat = attention(s, w, keys, values, mask);
    linear(s, f, O, flat.data_ptr<float>(), QW, w.a.data(), H);
    for (int64_t i = 0; i < s.rows * H; i++) w.h[i] = w.h[i] + w.a[i];
    rms_norm(s, w.h.data(), reinterpret_cast<const float *>(f[NORM2]), eps[1], w.x.data());
    linear(s, f, GATE, w.x.data(), H, w.gate.data(), s.inter);
    linear(s, f, UP, w.x.data(), H, w.up.data(), s.inter);
    at::Tensor act = at::silu(blob(w.gate.data(), {s.rows, 1, s.inter})).contiguous();
    const float *g = act.data_ptr<float>();
    for (int64_t i = 0; i < s.rows * s.inter; i++) w.gate[i] = g[i] * w.up[i];
    linear(s, f, DOWN, w.gate.data(), s.inter, w.a.data(), H);
    for (int64_t i = 0; i < s.rows * H; i++) w.h[i] = w.h[i] + w.a[i];
    return !(flags & OUTPUT) || call_back(s, idx, OUTPUT, w.h.data(), H, H_OUT, h_in.data(), H, H_IN);
}

static thread_local char failure[512];

/* Runs layers first..last-1 (fields: FIELDS values a layer, eps: 2, flags and shifts: 1 each, all indexed from
   layer 0) on h (rows, 1, hidden), in place. mask: (rows, 1, 1, cache_len) float, cos and sin (rows, 1, 1, dim), at: the cache
   position written, attend: the attention kernel (decode_attention.c) or null for SDPA, prompt_rows and prompt_len:
   its rows sharing a prompt (decode_attention.c; null: none). Returns the layer whose
   hook raised, -2 where ATen or the kernel failed (lean_layers_failure says what), or -1. */
extern "C" int lean_layers(rows_fn product, int threads, hook_fn hook, const int64_t *buffers, const int64_t *fields,
                           const double *eps, const int *flags, const int64_t *shifts, int first, int last, float *h,
                           const float *mask, const float *cos, const float *sin, int64_t at, const int64_t *dims,
                           double scaling, attend_fn attend, const int32_t *prompt_rows, int64_t prompt_len) {
    const Shape s{dims[0], dims[1], dims[2], dims[3], dims[4], dims[5], dims[6], scaling, product, threads, hook,
                  buffers, attend, shifts, prompt_rows, prompt_len};
    try {
        Work w(s);
        std::copy(h, h + s.rows * s.hidden, w.h.begin());
        for (int i = first; i < last; i++)
            if (!layer(s, w, i, flags[i], fields + i * FIELDS, eps + 2 * i, mask, cos, sin, at)) return i;
        std::copy(w.h.begin(), w.h.end(), h);
        return -1;
    } catch (const std::exception &e) { /* never past the C boundary: the caller raises it */
        std::snprintf(failure, sizeof failure, "%s", e.what());
        return -2;
    }
}

extern "C" const char *lean_layers_failure(void) { return failure; }

extern "C" int lean_layers_buffers(void) { return BUFFERS; }
