/* Decoder layers of a Llama model for one decoding position, the operations of lean_step.py's _layer called from
   C++: the same ATen operations on the same tensors in the same order, and the same few-row kernel for the
   products, so the hidden states are those of the Python layer bit for bit. What it saves is the Python around
   some 70 operations a layer (about 4 ms of a 26 ms step of the default model on 2 cores).

   A layer is described by FIELDS int64 values (lean_step.Plan writes them): the addresses of its two norm
   weights, its seven packed weights and their biases (0 for none), its cache's keys, values and length. A layer
   whose query or output has forward hooks (a steering edit) calls back into Python there, with the value in a
   buffer Python owns: Python runs the hooks and writes their result back. */
#include <ATen/ATen.h>

#include <cstddef>
#include <cstdint>

using rows_fn = void (*)(const float *, const float *, const float *, float *, std::ptrdiff_t, std::ptrdiff_t, int,
                         int);

enum Field { NORM1, NORM2, Q, K, V, O, GATE, UP, DOWN, BIAS = 9, KEYS = 16, VALUES, LENGTH, FIELDS };

extern "C" int lean_layers_fields(void) { return FIELDS; }

using hook_fn = int (*)(int layer, int where);  /* nonzero: the hook raised (Python keeps the exception) */
enum Where { QUERY = 1, OUTPUT = 2 };           /* a layer's flags: which of its sites call back */
enum Buffer { X, QUERY_OUT, H_IN, H_OUT, BUFFERS };

struct Shape {
    int64_t rows, hidden, heads, kv_heads, dim, inter, cache_len;
    double scaling;
    rows_fn product;
    int threads;
    hook_fn hook;
    const int64_t *buffers;
};

static at::Tensor blob(int64_t address, at::IntArrayRef shape, at::ScalarType type = at::kFloat) {
    return at::from_blob(reinterpret_cast<void *>(address), shape, at::TensorOptions().dtype(type));
}

/* small_batch._linear through the kernel: x (rows, 1, in) -> (rows, 1, out). */
static at::Tensor linear(const Shape &s, const int64_t *f, int which, const at::Tensor &x, int64_t out) {
    const int64_t k = x.size(-1), rows = x.numel() / k;
    at::Tensor xc = x.reshape({rows, k}).contiguous();
    at::Tensor y = at::empty({rows, out}, at::kFloat);
    s.product(reinterpret_cast<const float *>(f[which]), xc.data_ptr<float>(),
              reinterpret_cast<const float *>(f[BIAS + which - Q]), y.data_ptr<float>(), out, k, static_cast<int>(rows),
              s.threads);
    return y.reshape({x.size(0), x.size(1), out});
}

static at::Tensor rms_norm(const at::Tensor &h, const at::Tensor &weight, double eps) {
    return weight * (h * at::rsqrt(h.pow(2).mean({-1}, true) + eps));
}

static at::Tensor rope(const at::Tensor &x, const at::Tensor &cos, const at::Tensor &sin) {
    const int64_t half = x.size(-1) / 2;
    return (x * cos) + (at::cat({-x.slice(-1, half), x.slice(-1, 0, half)}, -1) * sin);
}

/* Hands `value` to Python's hooks of `where` through its buffer; the buffer, as they left it, replaces it. */
static bool call_back(const Shape &s, int idx, int where, at::Tensor &value, Buffer out, const at::Tensor &input,
                      Buffer in) {
    blob(s.buffers[in], input.sizes()).copy_(input);
    at::Tensor kept = blob(s.buffers[out], value.sizes());
    kept.copy_(value);
    if (s.hook(idx, where) != 0) return false;
    value = kept.clone();
    return true;
}

/* One layer; false where a hook raised. */
static bool layer(const Shape &s, int idx, int flags, const int64_t *f, const double *eps, at::Tensor &h,
                  const at::Tensor &mask, const at::Tensor &cos, const at::Tensor &sin, const at::Tensor &at) {
    const int64_t groups = s.heads / s.kv_heads;
    const at::Tensor h_in = h;
    at::Tensor x = rms_norm(h, blob(f[NORM1], {s.hidden}), eps[0]);
    at::Tensor q = linear(s, f, Q, x, s.heads * s.dim);
    if ((flags & QUERY) && !call_back(s, idx, QUERY, q, QUERY_OUT, x, X)) return false;
    q = rope(q.view({s.rows, 1, -1, s.dim}).transpose(1, 2), cos, sin);
    at::Tensor k = rope(linear(s, f, K, x, s.kv_heads * s.dim).view({s.rows, 1, -1, s.dim}).transpose(1, 2), cos, sin);
    at::Tensor v = linear(s, f, V, x, s.kv_heads * s.dim).view({s.rows, 1, -1, s.dim}).transpose(1, 2);
    blob(f[LENGTH], {}, at::kLong).add_(1);
    at::Tensor keys = blob(f[KEYS], {s.rows, s.kv_heads, s.cache_len, s.dim});
    at::Tensor values = blob(f[VALUES], {s.rows, s.kv_heads, s.cache_len, s.dim});
    keys.index_copy_(2, at, k);
    values.index_copy_(2, at, v);
    if (groups > 1) q = q.reshape({s.rows, s.heads / groups, groups, s.dim});
    at::Tensor a = at::scaled_dot_product_attention(q, keys, values, mask, 0.0, false, s.scaling);
    a = a.reshape({s.rows, -1, 1, s.dim}).transpose(1, 2).contiguous().reshape({s.rows, 1, -1}).contiguous();
    h = h + linear(s, f, O, a, s.hidden);
    x = rms_norm(h, blob(f[NORM2], {s.hidden}), eps[1]);
    h = h + linear(s, f, DOWN, at::silu(linear(s, f, GATE, x, s.inter)) * linear(s, f, UP, x, s.inter), s.hidden);
    return !(flags & OUTPUT) || call_back(s, idx, OUTPUT, h, H_OUT, h_in, H_IN);
}

/* Runs layers first..last-1 (fields: FIELDS values a layer, eps: 2, flags: 1 each, all indexed from layer 0) on h
   (rows, 1, hidden), in place. mask: (rows, 1, 1, cache_len) float, cos and sin (rows, 1, 1, dim), at: the cache
   position written. Returns the layer whose hook raised, or -1. */
extern "C" int lean_layers(rows_fn product, int threads, hook_fn hook, const int64_t *buffers, const int64_t *fields,
                           const double *eps, const int *flags, int first, int last, float *h_out, const float *mask_p,
                           const float *cos_p, const float *sin_p, int64_t at_pos, const int64_t *dims,
                           double scaling) {
    const Shape s{dims[0], dims[1], dims[2], dims[3], dims[4], dims[5], dims[6], scaling, product, threads, hook,
                  buffers};
    at::Tensor out = blob(reinterpret_cast<int64_t>(h_out), {s.rows, 1, s.hidden});
    at::Tensor mask = blob(reinterpret_cast<int64_t>(mask_p), {s.rows, 1, 1, s.cache_len});
    at::Tensor cos = blob(reinterpret_cast<int64_t>(cos_p), {s.rows, 1, 1, s.dim});
    at::Tensor sin = blob(reinterpret_cast<int64_t>(sin_p), {s.rows, 1, 1, s.dim});
    at::Tensor at = at::full({1}, at_pos, at::kLong);
    at::Tensor h = out;
    for (int i = first; i < last; i++)
        if (!layer(s, i, flags[i], fields + i * FIELDS, eps + 2 * i, h, mask, cos, sin, at)) return i;
    out.copy_(h);
    return -1;
}

extern "C" int lean_layers_buffers(void) { return BUFFERS; }
