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

    def read():
        ids = torch.tensor([list(prompt)], device=device)
        return model(input_ids=ids, past_key_values=DynamicCache(), use_cache=True)

    if memo is None or torch.is_grad_enabled():
        out = read()
        out.past_key_values.batch_repeat_interleave(n)
        return out, out.past_key_values
    if tuple(prompt) not in memo:
        out = read()
        kv = tuple((layer.keys, layer.values) for layer in out.past_key_values.layers)
        memo[tuple(prompt)] = (SimpleNamespace(logits=out.logits), kv)
    out, kv = memo[tuple(prompt)]
    return out, cache_over(kv, n)


def replies_loglik(first: torch.Tensor, logits: torch.Tensor, ids: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Summed log-likelihood of each reply after its prompt: ids (R, T) of which `real` (R, T) count, token 0 read
    from `first` (R, V), the log-probabilities at the prompt's last position, token t from logits[:, t - 1]
    (R, T - 1, V). Returns (R,)."""
    lp = torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    return (lp * real[:, 1:]).sum(-1) + first.gather(-1, ids[:, :1]).squeeze(-1)
