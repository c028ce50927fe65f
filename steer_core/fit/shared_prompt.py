"""One prompt read once for many replies that continue it: the fits score every level's reply (or every
instructed reply) of a scenario after the same prompt, so its forward is paid once."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def shared_prompt(model, prompt: Sequence[int], n: int, device):
    """Run one prompt once and repeat its key/value cache for n rows that all continue it (the rows'
    replies then cost only their own tokens). Returns (the prompt's output, the repeated cache);
    gradients flow through the cache unless the caller disables them."""
    from transformers import DynamicCache

    out = model(input_ids=torch.tensor([list(prompt)], device=device), past_key_values=DynamicCache(), use_cache=True)
    cache = out.past_key_values
    cache.batch_repeat_interleave(n)
    return out, cache
