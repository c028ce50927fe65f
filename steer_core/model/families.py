"""One seam for a model family: where its decoder layers are, which module's output is the query before
rotary (after the query norm, where the family has one) and how that output holds it, and what the
attention view needs to recompute attention (rotary, scaling, soft-capping, sliding windows) and the
adapter to fit (its target modules). Every other module asks this one.

Query layouts of the module whose output is hooked (steering edits always see (batch, seq, heads x dim)):
  flat         (batch, seq, heads x dim): Llama, Mistral, Qwen2, Gemma 2 (q_proj); OLMo 2 (q_norm over it)
  heads        (batch, seq, heads, dim): Qwen3 (a per-head q_norm on q_proj's view)
  heads_first  (batch, heads, seq, dim): Gemma 3 (q_norm after the transpose)
  fused        (batch, seq, (heads + 2 kv heads) x dim), the query the first heads x dim columns: Phi-3 (qkv_proj)
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass

import torch

from ..errors import ModelLoadError

LAYOUTS = ("flat", "heads", "heads_first", "fused")
LLAMA_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class Family:
    name: str
    model_types: tuple[str, ...]  # transformers' config.model_type values
    query_module: str  # the attention module's child whose output is the query before rotary
    layout: str  # how that output holds the query (LAYOUTS)
    adapter_targets: tuple[str, ...] = LLAMA_LINEARS

    @property
    def query_norm(self) -> bool:
        """A norm follows q_proj (the query is read after it, as attention uses it)."""
        return self.query_module == "q_norm"


FAMILIES = (
    Family("llama", ("llama",), "q_proj", "flat"),
    Family("mistral", ("mistral",), "q_proj", "flat"),
    Family("qwen2", ("qwen2",), "q_proj", "flat"),
    Family("qwen3", ("qwen3",), "q_norm", "heads"),
    Family("gemma2", ("gemma2",), "q_proj", "flat"),
    Family("gemma3", ("gemma3_text", "gemma3"), "q_norm", "heads_first"),
    Family("olmo2", ("olmo2",), "q_norm", "flat"),
    Family("phi3", ("phi3",), "qkv_proj", "fused", ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")),
)
BY_TYPE = {t: f for f in FAMILIES for t in f.model_types}


def family_of(model: torch.nn.Module) -> Family:
    """The family of a transformers causal LM, or a ModelLoadError that names what is missing."""
    model_type = getattr(model.config, "model_type", None)
    fam = BY_TYPE.get(model_type)
    if fam is None:
        known = ", ".join(f.name for f in FAMILIES)
        raise ModelLoadError(
            f"model type {model_type!r} is not one of the supported families ({known}); steering needs to know its "
            "decoder layers, the module whose output is the query before rotary, and its attention's layout "
            "(steer_core/model/families.py)"
        )
    try:
        attn = decoder_layers(model)[0].self_attn
        getattr(attn, fam.query_module)
    except (AttributeError, IndexError, TypeError):
        raise ModelLoadError(
            f"{model_type}: expected model.model.layers[i].self_attn.{fam.query_module}; this model has no such module"
        ) from None
    return fam


def decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    return model.model.layers


def query_module(model: torch.nn.Module, fam: Family, layer: int) -> torch.nn.Module:
    """The module whose output is `layer`'s query before rotary."""
    return getattr(decoder_layers(model)[layer].self_attn, fam.query_module)


def to_flat(out: torch.Tensor, fam: Family, n_heads: int, head_dim: int) -> torch.Tensor:
    """The query site's output as (batch, seq, heads x dim)."""
    if fam.layout == "flat":
        return out
    if fam.layout == "heads":
        return out.reshape(*out.shape[:-2], n_heads * head_dim)
    if fam.layout == "heads_first":
        return out.transpose(1, 2).reshape(out.shape[0], out.shape[2], n_heads * head_dim)
    return out[..., : n_heads * head_dim]


def from_flat(q: torch.Tensor, out: torch.Tensor, fam: Family, n_heads: int, head_dim: int) -> torch.Tensor:
    """An edited (batch, seq, heads x dim) query back in the site's own layout (`out`: the site's output)."""
    if fam.layout == "flat":
        return q
    if fam.layout == "heads":
        return q.view(*q.shape[:-1], n_heads, head_dim)
    if fam.layout == "heads_first":
        return q.view(q.shape[0], q.shape[1], n_heads, head_dim).transpose(1, 2)
    return torch.cat([q, out[..., n_heads * head_dim :]], dim=-1)


def query_features(model: torch.nn.Module, fam: Family, n_heads: int, head_dim: int) -> int:
    """The query's width as the site's module declares it (checked against heads x dim at load)."""
    q = query_module(model, fam, 0)
    if fam.layout == "fused":
        return n_heads * head_dim if q.out_features >= n_heads * head_dim else q.out_features
    if fam.query_norm:
        return n_heads * head_dim  # a norm keeps the width of what it normalises
    return q.out_features


def _modeling(model: torch.nn.Module):
    return importlib.import_module(type(model).__module__)


def rotate(model: torch.nn.Module, layer: int, q: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """q (batch, heads, seq, dim) rotated as the model rotates `layer`'s queries at `positions` (1, seq)."""
    rotary = model.model.rotary_emb
    params = inspect.signature(rotary.forward).parameters
    if "layer_type" in params:  # Gemma 3: local and global rotary by the layer's type
        cos, sin = rotary(q, positions, model.config.layer_types[layer])
    else:
        cos, sin = rotary(q, positions)
    rotated, _ = _modeling(model).apply_rotary_pos_emb(q, q, cos, sin)
    return rotated


def _sliding_window(model: torch.nn.Module, attn: torch.nn.Module) -> int | None:
    """The layer's sliding window: its own (Qwen, Gemma: None on full-attention layers), else the config's where
    every layer slides (Mistral, Phi-3)."""
    if hasattr(attn, "sliding_window"):
        return attn.sliding_window
    return getattr(model.config, "sliding_window", None)


def attention_weights(model: torch.nn.Module, layer: int, q: torch.Tensor, keys: torch.Tensor, P: int) -> torch.Tensor:
    """Softmax attention of rotated queries q (1, heads, R, dim) of the R tokens after the first P over the cached,
    rotated keys (1, kv heads, P + R, dim), as `layer`'s attention computes it: its scaling, logit soft-capping
    and sliding window, causal. Returns (1, heads, R, P + R)."""
    attn = decoder_layers(model)[layer].self_attn
    k = _modeling(model).repeat_kv(keys, q.shape[1] // keys.shape[1])
    scores = (q.float() @ k.float().transpose(-1, -2)) * attn.scaling
    softcap = getattr(attn, "attn_logit_softcapping", None)
    if softcap:
        scores = torch.tanh(scores / softcap) * softcap
    R, S = q.shape[2], k.shape[2]
    query_pos = torch.arange(P, P + R, device=q.device)[:, None]
    key_pos = torch.arange(S, device=q.device)[None]
    hidden = key_pos > query_pos
    window = _sliding_window(model, attn)
    if window:
        hidden = hidden | (key_pos <= query_pos - window)
    return torch.softmax(scores.masked_fill(hidden, float("-inf")), dim=-1)
