"""Fluency: the perplexity of a reply under the unsteered model, given the base prompt (what every table and
the strength sweep read steering's cost in)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .prompts import DEFAULT_STYLE, messages, render


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
