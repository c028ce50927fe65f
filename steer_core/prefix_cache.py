"""The keys and values of the prompt text every question shares: the system turn, and for the few-shot
prompt its worked examples (most of its length). Kept per model and per token prefix (so per level, prompt
style and examples), a Compare or a ladder reads only its question and answer.

A prompt read in two parts (its prefix, then the rest over the prefix's cache) gives the same replies up
to float32 rounding, not bit for bit, as reading it whole: the parts are multiplied in other blocks. So
the interactive views ask for it (`generation.VIEWS`), and they always read in two parts, cached or not,
so a click gives the same reply every time; the evaluation, whose rows are recorded token for token, reads
prompts whole.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch

from .caches import BoundedCache, model_serial
from .errors import UserError

PREFIX_CACHE_ENV = "STEER_PREFIX_CACHE_MB"
DEFAULT_MB = 256  # a few-shot prefix of the default model is about 20 MB (422 tokens)


def _budget_bytes() -> int:
    raw = os.environ.get(PREFIX_CACHE_ENV, "").strip()
    try:
        mb = float(raw) if raw else DEFAULT_MB
    except ValueError:
        raise UserError(f"{PREFIX_CACHE_ENV} must be a number of megabytes, not {raw!r}") from None
    return int(max(mb, 0) * 2**20)


def _kv_bytes(kv: tuple) -> int:
    return sum(t.numel() * t.element_size() for layer in kv for t in layer)


PREFIXES = BoundedCache("prompt prefixes", _budget_bytes(), _kv_bytes)


@dataclass(frozen=True)
class PromptRead:
    """What reading one whole prompt gave (generation._read_prompts, one row): each layer's (keys, values), shape
    (1, kv_heads, len, head_dim), the last position's logits (1, vocab), and the queries recorded at a layer when an
    inspection asked ({layer: (q_in, q_out)}, the prompt's positions after its prefix). Never written once kept."""

    kv: tuple
    logits: torch.Tensor
    queries: dict = field(default_factory=dict)


def _read_bytes(read: PromptRead) -> int:
    queries = sum(t.numel() * t.element_size() for pair in read.queries.values() for t in pair)
    return _kv_bytes(read.kv) + read.logits.numel() * read.logits.element_size() + queries


# A Compare clicked again with the same question reads no prompt: its plain prompt's read is kept, the very tensors,
# so a reply from a kept read is the one a fresh read gives, bit for bit. A quarter of the prefixes' budget: the
# default model's plain prompt is about 4.5 MB, a few-shot prompt about 23.
READS = BoundedCache("prompt reads", _budget_bytes() // 4, _read_bytes)


def read_key(lm, tokens, cut: int) -> tuple:
    """A prompt read's key: the model object, its device, the prompt's tokens and where its cached prefix ends (a
    prompt read in other parts has other bits)."""
    return (model_serial(lm.model), lm.key, str(lm.device), tuple(tokens), cut)


@torch.no_grad()
def prefix_kv(lm, prefix: tuple[int, ...]) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
    """Each layer's (keys, values) of `prefix`, shape (1, kv_heads, len, head_dim), read without steering."""
    from transformers import DynamicCache

    def read():
        ids = torch.tensor([prefix], device=lm.device)
        out = lm.model(input_ids=ids, past_key_values=DynamicCache(), use_cache=True, logits_to_keep=1)
        return tuple((layer.keys.clone(), layer.values.clone()) for layer in out.past_key_values.layers)

    return PREFIXES.get((lm.key, str(lm.device), prefix), read)


def cache_over(kv: tuple, rows: int):
    """A fresh DynamicCache holding `kv` for `rows` rows; the cached tensors are never written (the next
    forward appends by concatenation)."""
    from transformers import DynamicCache

    cache = DynamicCache()
    for layer, (k, v) in enumerate(kv):
        cache.update(k.expand(rows, -1, -1, -1), v.expand(rows, -1, -1, -1), layer)
    return cache


def prefix_queries(lm, prefix: tuple[int, ...], layer: int, read) -> tuple[torch.Tensor, torch.Tensor]:
    """The queries `layer` saw over `prefix` as read() returns them ((positions, heads x dim), as they reached the
    steering edit and as it returned them), kept beside the prefix's keys and values: the views of a reply read
    them (inspect/replay.recorded_pair), and they are the same for every question."""
    return PREFIXES.get((lm.key, str(lm.device), prefix, "queries", layer), lambda: (read(),))[0]
