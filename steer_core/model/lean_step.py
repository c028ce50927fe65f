"""One decoding step of a Llama model without transformers' per-module machinery, the same arithmetic bit for bit.

A decoding step of the default model makes about 5,000 small ATen calls, and on a CPU most of its time outside
the matrix products is the Python around them: keyword plumbing, decorators, a dispatch per attention call.
Here the same operations run in the same order on the same values (transformers' mask and rotary table, SDPA on
the same packed query heads, the few-row kernel's products), so the logits are those of `model(...)` bit for bit.
The interactive views ask for attention over each row's own positions instead (own_positions: attention_kernel.py),
which agrees with SDPA to float32 rounding.

The layers run in C++ (lean_layers.cpp) where it built and a batch has at most eleven rows; a steering edit (a
forward hook on a layer's query or output) is called back from there. A layer with any other hook runs its
operations here in Python, calling hooked Linear modules as modules; a hook on the layer's attention, MLP or norms,
or any global module hook, sends the layer through transformers as before.
"""

from __future__ import annotations

import ctypes
import functools
from pathlib import Path

import torch
from torch.nn import functional as F
from torch.nn.modules import module as nn_module

from .. import native
from .attention_kernel import PROMPT_COPIES, attention_kernel
from .families import LLAMA_LINEARS
from .hooks import LEAVE, active_edits, edit_identity, planned_edit
from .rows_kernel import rows_kernel
from .small_batch import KERNEL_ROWS, _kernel_takes, _packed

SOURCE = Path(__file__).with_name("lean_layers.cpp")
FIELDS = 19  # int64 values describing a layer (lean_layers.cpp's FIELDS; checked when the library loads)


def takes(model: torch.nn.Module) -> bool:
    """Whether `model` is a plain Llama causal LM this step reproduces (its attention is SDPA, its activation
    SiLU, nothing reassigned on its layers); asked once a model, the answer kept on it."""
    implementation = getattr(getattr(model, "config", None), "_attn_implementation", None)
    known = model.__dict__.get("_lean_step")
    if known is None or known[0] != implementation:
        known = model.__dict__["_lean_step"] = (implementation, _takes(model))
    return known[1]


def _takes(model: torch.nn.Module) -> bool:
    cfg = getattr(model, "config", None)
    if cfg is None or cfg.model_type != "llama" or type(model).__name__ != "LlamaForCausalLM":
        return False
    if cfg._attn_implementation != "sdpa" or cfg.hidden_act != "silu" or getattr(cfg, "mlp_bias", False):
        return False
    inner = model.model
    return all(
        type(layer).__name__ == "LlamaDecoderLayer" and type(layer.mlp.act_fn).__name__ in ("SiLUActivation", "SiLU")
        for layer in inner.layers
    )


def _rms_norm(norm: torch.nn.Module, h: torch.Tensor) -> torch.Tensor:
    """LlamaRMSNorm.forward's operations (its casts to and from float32 are no-ops on float32)."""
    if h.dtype != torch.float32:
        return norm(h)
    x = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)
    return norm.weight * x


def _linear(module: torch.nn.Module):
    """The module itself where a hook may act on it, else its forward (no hooks to run around it)."""
    return module if (module._forward_hooks or module._forward_pre_hooks) else module.forward


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """apply_rotary_pos_emb's operations on one of q and k."""
    half = x.shape[-1] // 2
    return (x * cos) + (torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin)


def _attention(attn, q, k, v, mask, kernel, prompts=None) -> torch.Tensor:
    """sdpa_attention_forward's operations for one query position under a float mask: the query heads that share
    a key head packed as that head's positions (its pack_gqa), then SDPA, or `kernel` (attention_kernel: each row
    over its own positions) where given. Returns (rows, 1, heads x dim)."""
    rows, heads, _, dim = q.shape
    groups = attn.num_key_value_groups
    if groups > 1:
        q = q.reshape(rows, heads // groups, groups, dim)
    if kernel is not None:
        out = kernel(q, k, v, mask, attn.scaling, prompts)
    else:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.0, scale=attn.scaling)
    return out.reshape(rows, -1, 1, dim).transpose(1, 2).contiguous().reshape(rows, 1, -1).contiguous()


def _layer(layer, h, mask, cos, sin, kv, at, kernel=None, prompts=None) -> torch.Tensor:
    """LlamaDecoderLayer.forward's operations for one decoding position; kv: the layer's StaticLayer, `at` the
    cache position the step writes, kernel: the attention kernel or None for SDPA (_attention), prompts: the
    kernel's rows sharing a prompt (attention_kernel.PromptCopies)."""
    attn = layer.self_attn
    shape = (h.shape[0], 1, -1, attn.head_dim)
    x = _rms_norm(layer.input_layernorm, h)
    q = _rope(_linear(attn.q_proj)(x).view(shape).transpose(1, 2), cos, sin)
    k = _rope(_linear(attn.k_proj)(x).view(shape).transpose(1, 2), cos, sin)
    v = _linear(attn.v_proj)(x).view(shape).transpose(1, 2)
    kv.cumulative_length.add_(1)  # StaticLayer.update's bookkeeping and copies
    kv.keys.index_copy_(2, at, k)
    kv.values.index_copy_(2, at, v)
    h = h + _linear(attn.o_proj)(_attention(attn, q, kv.keys, kv.values, mask, kernel, prompts))
    mlp = layer.mlp
    x = _rms_norm(layer.post_attention_layernorm, h)
    return h + _linear(mlp.down_proj)(F.silu(_linear(mlp.gate_proj)(x)) * _linear(mlp.up_proj)(x))


def _bare(layer) -> bool:
    """No hook on the modules _layer does not call (its attention, MLP, norms), and none on the layer but plain forward
    hooks (which _hooked_layer runs as the module would)."""
    parts = (layer.self_attn, layer.mlp, layer.input_layernorm, layer.post_attention_layernorm)
    if any(m._forward_hooks or m._forward_pre_hooks for m in parts):
        return False
    return not (layer._forward_pre_hooks or layer._forward_hooks_with_kwargs)


def _hooked_layer(layer, h, *args) -> torch.Tensor:
    """_layer(layer, h, *args), then the layer's forward hooks on it, as calling the module runs them (the C++
    layers' OUTPUT callback does the same), so a hooked layer keeps the lean step's attention."""
    out = _layer(layer, h, *args)
    for hook in tuple(layer._forward_hooks.values()):
        changed = hook(layer, (h,), out)
        if changed is not None:
            out = changed
    return out


def _lean_cache(cache, layers: int) -> bool:
    """A StaticCache whose layers are all filled to the same length (one decoding step writes each once)."""
    kvs = getattr(cache, "layers", None)
    if type(cache).__name__ != "StaticCache" or kvs is None or len(kvs) < layers:
        return False
    if not all(type(kv).__name__ == "StaticLayer" and kv.is_initialized for kv in kvs[:layers]):
        return False
    first, last = int(kvs[0].cumulative_length), int(kvs[layers - 1].cumulative_length)
    return first == last < kvs[0].max_cache_len


def _linears(layer) -> list[torch.nn.Module]:
    """A decoder layer's seven Linear modules, in LLAMA_LINEARS' order (lean_layers.cpp's Q to DOWN)."""
    attn, mlp = layer.self_attn, layer.mlp
    return [getattr(attn if name in ("q_proj", "k_proj", "v_proj", "o_proj") else mlp, name) for name in LLAMA_LINEARS]


def _modules(layer) -> list[torch.nn.Module]:
    """A decoder layer's modules that a hook could act on: the layer, its query, then the rest."""
    query, *rest = _linears(layer)
    return [layer, query, layer.self_attn, layer.mlp, layer.input_layernorm, layer.post_attention_layernorm, *rest]


QUERY, OUTPUT = 1, 2  # a layer's sites whose hooks the C++ layers call back for (lean_layers.cpp's Where)
SHIFT = 4  # the query's hooks add a fixed vector, which the C++ layers add themselves (hooks.planned_edit)
PYTHON = -1  # a layer with hooks the C++ layers cannot run (on other modules, pre-hooks, hooks taking kwargs)
_HOOK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_int)
_CPU = torch.device("cpu")


def _hook_dicts(layer_modules: list[torch.nn.Module]) -> tuple:
    """A layer's hook registries, read by _site_flags every step: (the layer's forward hooks, its query's, the
    registries of hooks the C++ layers cannot run: pre-hooks and hooks with keyword arguments on those two, any
    hook on the rest). Modules keep these dicts for life and register into them."""
    layer, query, *rest = layer_modules
    others = [d for m in rest for d in (m._forward_hooks, m._forward_pre_hooks)]
    others += [d for m in (layer, query) for d in (m._forward_pre_hooks, m._forward_hooks_with_kwargs)]
    return layer._forward_hooks, query._forward_hooks, others


def _site_flags(hooks: tuple) -> int:
    layer, query, others = hooks
    if any(others):
        return PYTHON
    return (QUERY if query else 0) | (OUTPUT if layer else 0)


class LeanLayers:
    """lean_layers.cpp: runs consecutive decoder layers for one position in C++, calling back for their hooks."""

    def __init__(self, path: Path):
        self.path = path
        ptr, i32 = ctypes.c_void_p, ctypes.c_int
        # lean_layers.cpp's lean_layers, argument for argument
        args = [ptr, i32, ptr, ptr, ptr, ptr, ptr, ptr, i32, i32, ptr, ptr, ptr, ptr, ctypes.c_int64, ptr]
        args += [ctypes.c_double, ptr, ptr, ctypes.c_int64]
        self._fn = native.c_function(path, "lean_layers", args, ctypes.c_int)
        self._failure = native.c_function(path, "lean_layers_failure", [], ctypes.c_char_p)
        fields = native.c_function(path, "lean_layers_fields", [], ctypes.c_int)()
        buffers = native.c_function(path, "lean_layers_buffers", [], ctypes.c_int)()
        if (fields, buffers) != (FIELDS, 4):
            raise AssertionError(f"the library's layout ({fields}, {buffers}) is not this module's ({FIELDS}, 4)")

    def __call__(self, plan: Plan, first: int, last: int, h, mask, cos, sin, at: int, kernel=None, prompts=None):
        """Layers first..last-1 on h (rows, 1, hidden), contiguous, in place; a hook's exception is raised here.
        kernel: the attention kernel, or None for SDPA; prompts: its rows sharing a prompt (PromptCopies)."""
        shared = (0, 0) if prompts is None else (prompts.holder.data_ptr(), prompts.width)
        failed = self._fn(
            plan.product, torch.get_num_threads(), plan.hook, plan.buffer_addresses.data_ptr(),
            plan.fields.data_ptr(), plan.eps.data_ptr(), plan.flags.data_ptr(), plan.shift_addresses.data_ptr(),
            first, last, h.data_ptr(),
            mask.data_ptr(), cos.data_ptr(), sin.data_ptr(), at, plan.dims.data_ptr(), plan.scaling,
            0 if kernel is None else kernel.address, *shared,
        )  # fmt: skip
        if failed == -2:
            raise RuntimeError(f"the C++ decoder layers failed: {self._failure().decode(errors='replace')}")
        if failed >= 0:
            error, plan.error = plan.error, None
            raise error

    def check(self) -> None:
        """Two layers of a tiny random Llama give the Python layers' logits bit for bit, with and without a hook on
        a query and on a layer's output, through SDPA and through the attention kernel; a hook's exception reaches
        the caller."""
        from transformers import LlamaConfig, LlamaForCausalLM, StaticCache

        from .small_batch import speed_up_small_batches

        cfg = LlamaConfig(
            vocab_size=64, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=64, attn_implementation="sdpa",
        )  # fmt: skip
        torch.manual_seed(0)
        model = LlamaForCausalLM(cfg).eval()
        speed_up_small_batches(model)
        ids = torch.randint(0, 64, (3, 6))

        def step(native_layers, own_positions=False):
            cache = StaticCache(config=cfg, max_cache_len=9)
            with torch.no_grad():
                model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
            mask, pos = torch.ones(3, 7, dtype=torch.long), torch.full((3, 1), 6)
            mask[1, :2] = 0  # a row padded on the left
            return decode_logits(model, ids[:, :1], mask, pos, cache, native_layers, own_positions)

        handles = []
        for hooks in range(3):
            for own in (False, True) if attention_kernel() is not None else (False,):
                if not torch.equal(step(None, own), step(self, own)):
                    raise AssertionError(f"the C++ layers differ from the Python layers ({len(handles)} hooks)")
            layers = model.model.layers
            site = layers[0].self_attn.q_proj if hooks == 0 else layers[1]
            handles.append(site.register_forward_hook(lambda m, i, out: out * 0.5 + 1.0))
        handles.append(layers[1].register_forward_hook(lambda m, i, out: 1 / 0))
        try:
            step(self)
            raise AssertionError("a hook's exception did not reach the caller")
        except ZeroDivisionError:
            pass
        finally:
            for handle in handles:
                handle.remove()


@functools.cache
def lean_layers() -> LeanLayers | None:
    """The checked C++ layers, or None (STEER_KERNEL=off, no C++ compiler or torch headers, no few-row kernel, or
    the build or its check failed)."""
    if rows_kernel() is None:
        return None
    return native.load_checked(SOURCE, LeanLayers, "C++ decoder layers", "decoding runs its layers in Python")


class Plan:
    """What the C++ layers read, for one generation's cache: every layer's weights (their packed copies, held
    here), norms and cache tensors as addresses, the buffers its hooks read and write, and the callback that runs
    them. Made at the generation's first step (a weight changed during a generation is not seen until the next)."""

    def __init__(self, model, cache, rows: int):
        inner, cfg = model.model, model.config
        self.product = ctypes.cast(rows_kernel()._fn, ctypes.c_void_p).value
        self.kept, fields, eps = [], [], []
        self.modules = [_modules(layer) for layer in inner.layers]
        self.hooks = [_hook_dicts(modules) for modules in self.modules]
        for layer, kv in zip(inner.layers, cache.layers):
            linears = _linears(layer)
            norms = (layer.input_layernorm, layer.post_attention_layernorm)
            packed = [_packed(m, m.weight) for m in linears]
            biases = [m.bias for m in linears]
            self.kept += packed
            fields.append(
                [n.weight.data_ptr() for n in norms] + [p.data_ptr() for p in packed]
                + [0 if b is None else b.data_ptr() for b in biases]
                + [kv.keys.data_ptr(), kv.values.data_ptr(), kv.cumulative_length.data_ptr()]
            )  # fmt: skip
            eps.append([n.variance_epsilon for n in norms])
        self.fields = torch.tensor(fields, dtype=torch.int64)
        self.eps = torch.tensor(eps, dtype=torch.float64)
        self.flags = torch.zeros(len(fields), dtype=torch.int32)
        self._flags_view = self.flags.numpy()  # written at every step without making a tensor
        attn = inner.layers[0].self_attn
        hidden, queries = cfg.hidden_size, cfg.num_attention_heads * attn.head_dim
        dims = [rows, hidden, cfg.num_attention_heads, cfg.num_key_value_heads, attn.head_dim]
        self.dims = torch.tensor(dims + [cfg.intermediate_size, cache.layers[0].max_cache_len], dtype=torch.int64)
        self.scaling = float(attn.scaling)
        # lean_layers.cpp's Buffer order: the query's input and output, the layer's input and output
        self.buffers = [torch.empty(rows, 1, n) for n in (hidden, queries, hidden, hidden)]
        self.rows, self.shift_shape = rows, (rows, 1, queries)
        self.shifts: dict[int, torch.Tensor] = {}  # this step's fixed query shifts (SHIFT), by layer
        self.shift_addresses = torch.zeros(len(fields), dtype=torch.int64)
        self._addresses_view = self.shift_addresses.numpy()
        self._planned: dict[tuple[int, int], tuple] = {}  # (layer, site) -> (edit_identity, its planned answer)
        self.buffer_addresses = torch.tensor([b.data_ptr() for b in self.buffers], dtype=torch.int64)
        self.error: BaseException | None = None
        self.hook = _HOOK(self._run_hooks)

    @staticmethod
    def qualifies(model, rows: int) -> bool:
        """Every Linear of every layer goes through the few-row kernel at this many rows (the kernel itself, not a
        stand-in an experiment put there), norms in float32."""
        kernel = rows_kernel()
        if rows not in KERNEL_ROWS or kernel is None:
            return False
        x = torch.empty(0)
        for layer in model.model.layers:
            if any(
                getattr(m, "_rows_kernel", None) is not kernel or not _kernel_takes(m.weight, m.bias, x)
                for m in _linears(layer)
            ):
                return False
            norms = (layer.input_layernorm, layer.post_attention_layernorm)
            if any(n.weight.dtype != torch.float32 or not n.weight.is_contiguous() for n in norms):
                return False
        return True

    def sites(self) -> list[int]:
        """Each layer's flags this step (QUERY, SHIFT, OUTPUT, or PYTHON), written where the C++ layers read them. A
        query whose hooks only add a fixed vector (a steering edit's usual form) or leave it as it is
        (hooks.planned_edit) is not called back for: a callback costs about 50 us, 1.5 ms a step when every layer
        is steered. Nor is a layer's output whose hooks leave it as it is (a dispatcher held with no edit in this
        context). The vector's address goes where the C++ layers read it, the tensor is kept until the next step.
        A site whose hooks and edit are the objects of the last step keeps the last step's answer (_planned_site):
        working it out again took about 0.2 ms a step for 30 steered layers."""
        flags = [_site_flags(hooks) for hooks in self.hooks]
        self.shifts, addresses, edits = {}, [0] * len(flags), active_edits()
        for idx, flag in enumerate(flags):
            if flag != PYTHON and flag & OUTPUT and self._planned_site(idx, 0, edits) is LEAVE:
                flag = flags[idx] = flag & ~OUTPUT
            if flag != PYTHON and flag & QUERY:
                planned = self._planned_site(idx, 1, edits)
                if planned is LEAVE:
                    flags[idx] = flag & ~QUERY
                elif planned is not None:
                    flags[idx] = (flag & ~QUERY) | SHIFT
                    self.shifts[idx] = planned
                    addresses[idx] = planned.data_ptr()
        self._flags_view[:] = flags
        self._addresses_view[:] = addresses
        return flags

    def _planned_site(self, idx: int, which: int, edits):
        """planned_edit of layer idx's output (which 0) or query (1) under `edits` (hooks.active_edits()): LEAVE, a
        fixed shift the C++ layers can add (_fits), or None (call the hooks back)."""
        module = self.modules[idx][which]
        identity = edit_identity(module, edits)
        if identity is None:  # a hook that is not a dispatcher: call the hooks back
            return None
        kept = self._planned.get((idx, which))
        if kept is not None and kept[0] == identity:
            return kept[1]
        planned = planned_edit(module, self.rows, torch.float32, _CPU, identity)
        if which == 1 and planned is not None and planned is not LEAVE and not _fits(planned, self.shift_shape):
            planned = None
        self._planned[(idx, which)] = (identity, planned)
        return planned

    def _run_hooks(self, idx: int, where: int) -> int:
        """The callback: a site's forward hooks, run as its module would run them, on a fresh copy of the value in
        its buffer (a hook may keep what it is given, as it may keep a module's output), the result written back."""
        try:
            x, query, h_in, h_out = self.buffers
            module, inputs, out = (
                (self.modules[idx][1], x, query) if where == QUERY else (self.modules[idx][0], h_in, h_out)
            )
            args, result = (inputs.clone(),), out.clone()
            for hook in tuple(module._forward_hooks.values()):
                changed = hook(module, args, result)
                if changed is not None:
                    result = changed
            if result.shape != out.shape:
                raise ValueError(f"a hook on layer {idx} changed its output's shape to {tuple(result.shape)}")
            out.copy_(result)
            return 0
        except BaseException as e:  # noqa: BLE001 - handed to the caller (ctypes would only print it)
            self.error = e
            return 1


def _fits(shift: torch.Tensor, shape: tuple) -> bool:
    """A fixed query shift the C++ layers can read: float32, on the CPU, contiguous, one vector a row."""
    return shift.shape == shape and shift.dtype == torch.float32 and shift.device == _CPU and shift.is_contiguous()


def _plan(model, cache, rows: int) -> Plan | None:
    plan = getattr(cache, "_lean_plan", False)
    if plan is False:
        plan = cache._lean_plan = Plan(model, cache, rows) if Plan.qualifies(model, rows) else None
    return plan


def _step_mask(inner, h, attention_mask, cache, position_ids, lean: bool) -> torch.Tensor | None:
    """create_causal_mask's mask; for the lean step (lean) as SDPA converts it (0 where attended, -inf elsewhere).
    A decoding step's mask is the last step's with one more position attended (generation's 2D mask grew by a
    column of ones, the new token's), so that column is written into the last step's mask, kept on the cache,
    instead of the mask being made again (0.3 ms a step, about 1.5% of one reply's). Anything else: made again."""
    from transformers.masking_utils import create_causal_mask

    kept = getattr(cache, "_lean_mask", None) if lean else None
    if kept is not None:
        last_2d, float_mask = kept
        width = last_2d.shape[1]
        if (
            attention_mask is not None
            and attention_mask.shape == (last_2d.shape[0], width + 1)
            and width < float_mask.shape[-1]
            and int(cache.layers[0].cumulative_length) == width
            and bool((attention_mask[:, width] == 1).all())
            and torch.equal(attention_mask[:, :width], last_2d)
        ):
            float_mask[..., width] = 0.0
            cache._lean_mask = (attention_mask, float_mask)
            return float_mask
    mask = create_causal_mask(
        config=inner.config, inputs_embeds=h, attention_mask=attention_mask, cache=cache, position_ids=position_ids
    )
    if not lean or mask is None:
        return mask
    # SDPA's own conversion of a boolean mask, once a step, not once a layer
    mask = torch.zeros_like(mask, dtype=h.dtype).masked_fill_(mask.logical_not(), float("-inf")).contiguous()
    if attention_mask is not None and attention_mask.dim() == 2 and mask.shape[0] == attention_mask.shape[0]:
        cache._lean_mask = (attention_mask, mask)
    return mask


_DEFAULT = object()


@torch.no_grad()
def decode_logits(
    model, input_ids, attention_mask, position_ids, cache, native_layers=_DEFAULT, own_positions: bool = False
) -> torch.Tensor:
    """model(input_ids, attention_mask, position_ids, cache, use_cache=True, logits_to_keep=1).logits[:, -1, :]
    for a model `takes` accepts, one position per row, over a filled StaticCache. native_layers: the C++ layers
    (default: lean_layers(), None where they are not available), or None for Python layers only. own_positions:
    attention through the attention kernel (each row over its own positions, in an order of its own: transformers'
    logits to float32 rounding, not bit for bit), where it built; SDPA otherwise."""
    inner = model.model
    n = inner.config.num_hidden_layers
    h = inner.embed_tokens(input_ids)
    lean = h.dtype == torch.float32 and _lean_cache(cache, n)
    mask = _step_mask(inner, h, attention_mask, cache, position_ids, lean)
    lean = lean and mask is not None
    table = inner.rotary_emb(h, position_ids=position_ids)
    hooked = bool(nn_module._global_forward_hooks or nn_module._global_forward_pre_hooks)
    plan = None
    if lean:
        cos, sin = table[0].unsqueeze(1).contiguous(), table[1].unsqueeze(1).contiguous()
        kernel = attention_kernel() if own_positions else None
        prompts = getattr(cache, PROMPT_COPIES, None) if kernel is not None else None
        at = cache.layers[0].cumulative_length.reshape(1).clone()
        if native_layers is _DEFAULT:
            native_layers = lean_layers()
        if native_layers is not None and not hooked:
            plan = _plan(model, cache, h.shape[0])
    sites = plan.sites() if plan is not None else [PYTHON] * n
    idx = 0
    while idx < n:
        layer = inner.layers[idx]
        if sites[idx] != PYTHON:
            end = idx + 1
            while end < n and sites[end] != PYTHON:
                end += 1
            h = h.contiguous()
            native_layers(plan, idx, end, h, mask, cos, sin, int(at), kernel, prompts)
            idx = end
            continue
        if lean and not hooked and _bare(layer):
            h = _hooked_layer(layer, h, mask, cos, sin, cache.layers[idx], at, kernel, prompts)
        else:
            h = layer(h, attention_mask=mask, position_embeddings=table, position_ids=position_ids, cache=cache)
        idx += 1
    h = _rms_norm(inner.norm, h)
    return model.lm_head(h[:, -1:, :])[:, -1, :]
