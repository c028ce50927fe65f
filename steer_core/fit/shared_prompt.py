"""One prompt read once for many replies that continue it: the fits score every level's reply (or every
instructed reply) of a scenario after the same prompt, so its forward is paid once."""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace

import torch


def shared_prompt(model, prompt: Sequence[int], n: int, device, memo: dict | None = None):
    """Run one prompt once and repeat its key/value cache for n rows that all continue it (the rows'
    replies then cost only their own tokens). Returns (the prompt's output, the repeated cache);
    gradients flow through the cache unless the caller disables them. memo: a dict the caller keeps across
    calls (a fit's passes over the same scenarios): a prompt read without gradients is then read once and its
    keys and values reused, with the same bits (the same forward, the same values repeated)."""
    from transformers import DynamicCache

    from ..prefix_cache import cache_over

    if memo is not None and not torch.is_grad_enabled():
        key = tuple(prompt)
        if key not in memo:
            out = model(input_ids=torch.tensor([list(prompt)], device=device), past_key_values=DynamicCache())
            kv = tuple((layer.keys, layer.values) for layer in out.past_key_values.layers)
            memo[key] = (SimpleNamespace(logits=out.logits), kv)
        out, kv = memo[key]
        return out, cache_over(kv, n)
    out = model(input_ids=torch.tensor([list(prompt)], device=device), past_key_values=DynamicCache(), use_cache=True)
    cache = out.past_key_values
    cache.batch_repeat_interleave(n)
    return out, cache
