"""Fluency: the perplexity of a reply under the unsteered model, given the base prompt (what every table and
the strength sweep read steering's cost in)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.nn import functional as F

from .prefix_cache import cache_over, prefix_kv
from .prompts import DEFAULT_STYLE, messages, pad_right, render, shared_prefix


@torch.no_grad()
def perplexity(lm, question: str, student_answer: str, token_ids: Sequence[int], style: str = DEFAULT_STYLE) -> float:
    """Perplexity of generated tokens under the unsteered model, given the base prompt."""
    if not token_ids:
        return float("nan")
    prompt, _ = render(lm.tokenizer, messages(question, student_answer, style))
    ids = torch.tensor([prompt + list(token_ids)], device=lm.device)
    logits = lm.model(input_ids=ids, use_cache=False).logits[0, len(prompt) - 1 : -1].float()
    nll = torch.nn.functional.cross_entropy(logits, ids[0, len(prompt) :])
    return float(torch.exp(nll))


POSITIONS = 512  # reply tokens a batch reads: its logits and their log-softmax, 2 x 4 bytes x vocabulary each
# (about 200 MB for the default model's 49,152 words)


@torch.no_grad()
def perplexities(
    lm, question: str, student_answer: str, replies: Sequence[Sequence[int]], style: str = DEFAULT_STYLE
) -> list[float]:
    """perplexity() of each of several replies to one prompt (nan for an empty one): the prompt read once, after
    its shared prefix's cached keys and values (prefix_cache), and the replies together after it, right-padded (a
    reply's tokens see the prompt and their own reply's earlier tokens only). What a ladder or a sweep shows of its
    seven or more replies, in about half the time of one forward each. The same values to the rounding of the
    model's dtype (float32 as models load here), not bit for bit (the same products in other shapes and parts):
    evaluation keeps perplexity(), whose values its recorded rows hold."""
    from transformers import DynamicCache

    out = [float("nan")] * len(replies)
    live = [i for i, r in enumerate(replies) if len(r)]
    if not live:
        return out
    msgs = messages(question, student_answer, style)
    prompt, _ = render(lm.tokenizer, msgs)
    cut = shared_prefix(lm.tokenizer, msgs, prompt)
    start = cache_over(prefix_kv(lm, tuple(prompt[:cut])), 1) if cut else DynamicCache()
    read = lm.model(
        input_ids=torch.tensor([prompt[cut:]], device=lm.device), past_key_values=start, use_cache=True,
        logits_to_keep=1,
    )  # fmt: skip
    first = read.logits[:, -1].float()  # what predicts each reply's first token
    kv = tuple((layer.keys, layer.values) for layer in read.past_key_values.layers)
    per_batch = max(1, POSITIONS // max(len(replies[i]) for i in live))
    for c in range(0, len(live), per_batch):
        rows = live[c : c + per_batch]
        tokens, real, _ = (t.to(lm.device) for t in pad_right([(list(replies[i]), 0) for i in rows], 0))
        logits = lm.model(input_ids=tokens, past_key_values=cache_over(kv, len(rows)), use_cache=True).logits
        # token t + 1 is predicted at position t (the first token at the prompt's last position); a reply's last
        # position and its padding predict nothing (-100: cross_entropy's ignored target)
        following = torch.full_like(tokens, -100)
        following[:, :-1] = tokens[:, 1:].masked_fill(~real[:, 1:], -100)
        lengths = real.sum(1)
        nll = F.cross_entropy(logits.flatten(0, 1).float(), following.flatten(), reduction="none")
        nll = nll.view(len(rows), -1).sum(1) + F.cross_entropy(
            first.expand(len(rows), -1), tokens[:, 0], reduction="none"
        )
        for i, value in zip(rows, torch.exp(nll / lengths).tolist()):
            out[i] = value
    return out
