"""Where reply tokens look: each head's attention over the prompt's parts (the rubric's level lines,
the question, the student's answer), steered or not.

A query edit only changes which earlier tokens a head reads, so this is the direct view of what
steering does. The weights are recomputed from the queries the model actually used (after the
steering edit, read at q_proj by the same edits generation installs) and the keys it cached, so
they are exact for any attention kernel and need no global switch to eager attention.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from ..bloom import LEVELS
from ..errors import UserError
from ..model.hooks import QueryEdit, query_edits
from ..prompts import DEFAULT_STYLE, FEEDBACK_TOKENS, pad_replies


@dataclass
class PromptParts:
    """Named token spans [start, end) of a rendered prompt."""

    names: list[str]
    spans: list[tuple[int, int]]

    def mass(self, weights: torch.Tensor) -> torch.Tensor:
        """Attention mass on each part: weights (..., keys) -> (..., parts)."""
        return torch.stack([weights[..., a:b].sum(-1) for a, b in self.spans], dim=-1)


def prompt_parts(tokenizer, prompt_ids: Sequence[int], texts: Mapping[str, str]) -> PromptParts:
    """Token spans of named pieces of text inside the rendered prompt (first occurrence of each).

    Spans are found by decoding the prompt token by token and matching character offsets, so any
    tokenizer works; a piece that is not in the prompt is an error (the caller named the wrong style)."""
    pieces = [tokenizer.decode([t]) for t in prompt_ids]
    ends, pos = [], 0
    for p in pieces:
        pos += len(p)
        ends.append(pos)
    full = "".join(pieces)
    names, spans = [], []
    for name, text in texts.items():
        at = full.find(text)
        if at < 0:
            raise UserError(f"prompt part {name!r} is not in the prompt")
        first = next(i for i, e in enumerate(ends) if e > at)
        last = next(i for i, e in enumerate(ends) if e >= at + len(text))
        names.append(name)
        spans.append((first, last + 1))
    return PromptParts(names, spans)


def rubric_parts(tokenizer, prompt_ids: Sequence[int], question: str, student_answer: str) -> PromptParts:
    """The six rubric lines (named by level), the question and the student's answer."""
    from ..prompts import rubric_line

    texts = {lv: rubric_line(lv) for lv in LEVELS}
    texts.update({"question": question.strip(), "student answer": student_answer.strip()})
    return prompt_parts(tokenizer, prompt_ids, texts)


def _record_queries(lm, layers: Sequence[int], edits: Mapping[int, QueryEdit], store: dict) -> dict:
    """Edits that apply the steering edit (if any) and keep the query the model then uses."""

    def wrap(layer):
        edit = edits.get(layer)

        def fn(q):
            out = edit(q) if edit is not None else None
            store.setdefault(layer, []).append((q if out is None else out).detach())
            return out

        return fn

    wrapped = dict(edits)
    wrapped.update({layer: wrap(layer) for layer in layers})
    return wrapped


def _reply_weights(lm, q: torch.Tensor, cache, layer: int, P: int) -> torch.Tensor:
    """Attention of each reply token over all earlier tokens at `layer`, (heads, reply, prompt + reply), from the
    reply's queries as the model used them (R, heads x dim; after any steering edit, before rotary) and the cache's
    (rotated) keys, computed as the model's family computes it (families.py: rotary, scaling, soft-capping, window)."""
    return _batch_reply_weights(lm, q[None], cache, layer, P)[0]


def _batch_reply_weights(lm, q: torch.Tensor, cache, layer: int, P: int) -> torch.Tensor:
    """_reply_weights for a batch of replies after the same P prompt tokens: q (B, R, heads x dim) and a cache of B
    rows -> (B, heads, R, P + R)."""
    from ..model.families import attention_weights, rotate

    B, R = q.shape[:2]
    positions = torch.arange(P, P + R, device=lm.device)[None]
    q = rotate(lm.model, layer, q.view(B, R, lm.n_heads, lm.head_dim).transpose(1, 2), positions)  # (B, H, R, D)
    return attention_weights(lm.model, layer, q, cache.layers[layer].keys, P)


@torch.no_grad()
def reply_attention(
    lm, prompt_ids: Sequence[int], reply_ids: Sequence[int], layers: Sequence[int], phase_edits=None
) -> torch.Tensor:
    """Attention of each reply token over all earlier tokens: (layers, heads, reply, prompt + reply).

    phase_edits(phase) -> {layer: QueryEdit} for "prompt" and "generated" (generation's own
    `layer_edits`); None for unsteered. The prompt and the reply run as the two phases generation has."""
    from .replay import replay

    layers = [lm.check_layer(layer) for layer in layers]
    if not reply_ids:
        raise UserError("no reply tokens to look at")
    stores: dict[str, dict] = {"prompt": {}, "generated": {}}  # the queries of each phase's forward

    def recorded(phase):
        return _record_queries(lm, layers, phase_edits(phase) if phase_edits else {}, stores[phase])

    cache = replay(lm, prompt_ids, reply_ids, recorded, upto=max(layers))
    store = stores["generated"]
    return torch.stack([_reply_weights(lm, store[layer][0][0], cache, layer, len(prompt_ids)) for layer in layers])


@torch.no_grad()
def rubric_line_lift(
    lm, rows, layers: Sequence[int], max_feedback_tokens: int = FEEDBACK_TOKENS, progress: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Which heads read the level they are writing: teacher-force each train feedback under the rubric
    prompt and measure its tokens' attention on each level's rubric line.

    Returns (lift (layers, heads), mass (6 feedback levels, 6 lines, layers, heads)). lift is, averaged
    over levels L, how much more level-L feedback reads line L than other levels' feedback reads it
    (0.5 = 50% more); these heads have something to find when steered toward a level. The feedbacks
    that share a prompt (a scenario's six) are read as one batch after one forward of the prompt."""
    from tqdm.auto import tqdm

    if not rows:
        raise UserError("no feedbacks to measure")
    layers = [lm.check_layer(layer) for layer in layers]
    mass = torch.zeros(len(LEVELS), len(LEVELS), len(layers), lm.n_heads)
    count = torch.zeros(len(LEVELS))
    bar = tqdm(total=len(rows), desc="attention to rubric lines", disable=not progress)
    for (prompt, question, answer), group in _rubric_groups(lm.tokenizer, rows, max_feedback_tokens).items():
        parts = rubric_parts(lm.tokenizer, prompt, question, answer)
        levels = torch.tensor([lv for lv, _ in group])
        mass.index_add_(0, levels, _line_mass(lm, list(prompt), [reply for _, reply in group], layers, parts))
        count.index_add_(0, levels, torch.ones(len(group)))
        bar.update(len(group))
    bar.close()
    if bool((count == 0).any()):
        raise UserError("measuring the lift needs feedbacks of all six levels")
    mass = mass / count[:, None, None, None]
    return line_lift(mass), mass


def _rubric_groups(tokenizer, rows, max_feedback_tokens: int) -> dict[tuple, list[tuple[int, list[int]]]]:
    """Each feedback rendered under the rubric prompt, grouped by its prompt: (prompt ids, question, answer) ->
    [(level index, the reply's first max_feedback_tokens ids)], in the rows' order."""
    from ..prompts import messages, render

    groups: dict[tuple, list[tuple[int, list[int]]]] = {}
    for r in rows:
        ids, start = render(tokenizer, messages(r.question, r.student_answer, "rubric"), r.feedback)
        reply = list(ids[start:][:max_feedback_tokens])
        if not reply:
            raise UserError(f"feedback of scenario {getattr(r, 'scenario_id', '?')} has no tokens")
        key = (tuple(ids[:start]), r.question, r.student_answer)
        groups.setdefault(key, []).append((LEVELS.index(r.level), reply))
    return groups


def _line_mass(lm, prompt: list[int], replies: list[list[int]], layers: list[int], parts: PromptParts) -> torch.Tensor:
    """Mean attention of each reply's tokens on each rubric line: (replies, 6 lines, layers, heads). The prompt runs
    once and its cache is repeated for the replies, which run as one right-padded batch (padding comes after every
    real token, so it changes no real token's attention); padded positions are left out of the mean."""
    from transformers import DynamicCache

    n, P = len(replies), len(prompt)
    cache = DynamicCache()
    lm.model(input_ids=torch.tensor([prompt], device=lm.device), past_key_values=cache, use_cache=True)
    cache.batch_repeat_interleave(n)
    ids, real = (t.to(lm.device) for t in pad_replies(replies, lm.tokenizer.pad_token_id or 0))
    seen: dict[int, torch.Tensor] = {}

    def keep(layer):
        def fn(q):
            seen[layer] = q.detach()

        return fn

    attention = torch.cat([torch.ones((n, P), dtype=torch.long, device=lm.device), real.long()], dim=1)
    with query_edits(lm, {layer: keep(layer) for layer in layers}):
        lm.model(input_ids=ids, attention_mask=attention, past_key_values=cache, use_cache=True)
    share = real.float() / real.sum(1, keepdim=True)  # (replies, tokens): each real token's weight in the mean
    per_layer = []
    for layer in layers:
        w = _batch_reply_weights(lm, seen[layer], cache, layer, P)  # (replies, heads, tokens, P + tokens)
        lines = parts.mass(w)[..., : len(LEVELS)]  # (replies, heads, tokens, 6 lines)
        per_layer.append(torch.einsum("bhtl,bt->blh", lines.float(), share))
    return torch.stack(per_layer, dim=2).cpu()  # (replies, 6 lines, layers, heads)


def line_lift(mass: torch.Tensor) -> torch.Tensor:
    """mass (feedback levels, lines, ...) -> (...): mean over levels L of mass[L, L] over the mean of
    mass[M, L] for the other levels M, minus 1."""
    n = mass.shape[0]
    own = torch.diagonal(mass, dim1=0, dim2=1).movedim(-1, 0)  # (lines, ...): line L read by level L
    others = (mass.sum(0) - own) / (n - 1)
    return (own / others.clamp_min(1e-9) - 1).mean(0)


@dataclass
class AttentionView:
    """What steering changed in where the reply looks, at one layer, averaged over the chosen heads and
    the reply's tokens. Both passes read the same reply tokens (the steered reply), so the difference
    is the steering's alone."""

    layer: int
    heads: list[int]
    tokens: list[str]  # the prompt's tokens
    unsteered: torch.Tensor  # (prompt tokens,) share of the reply's attention on each prompt token
    steered: torch.Tensor
    parts: PromptParts

    @property
    def change(self) -> torch.Tensor:
        return self.steered - self.unsteered

    def part_shares(self) -> tuple[list[str], list[float], list[float]]:
        """(part names, unsteered shares, steered shares)."""
        return (
            self.parts.names,
            self.parts.mass(self.unsteered).tolist(),
            self.parts.mass(self.steered).tolist(),
        )


def steering_attention(
    lm,
    question: str,
    student_answer: str,
    level: str,
    cfg,
    reply_ids: Sequence[int],
    layer: int | None = None,
    heads: Sequence[int] | None = None,
    style: str = DEFAULT_STYLE,
    files=None,
) -> AttentionView:
    """Attention of the steered reply over its prompt at `layer` (default: the middle steered layer), with
    generation's own steering edits and without (two replays; the Compare run shares the steered one); files: the
    folders it steered with (a SteerFiles; None: the model's own)."""
    from ..generation import Request
    from ..steering.files import MODEL_OWN
    from .replay import replay_pair

    layer = cfg.middle_layer if layer is None else lm.check_layer(layer)
    req = Request(question, student_answer, "sae", level, steer=cfg, files=files or MODEL_OWN, style=style)
    return attention_view(lm, *replay_pair(lm, req, list(reply_ids), layer), heads)


def attention_view(lm, steered, plain, heads: Sequence[int] | None = None) -> AttentionView:
    """Where the reply looks at a replay's layer, steered (`steered`, a Replay) and not (`plain`, the unsteered
    replay of the same reply), averaged over `heads` (default: the steered heads) and the reply's tokens."""
    from ..prompts import SYSTEM

    if not steered.reply:
        raise UserError("no reply tokens to look at")
    req, layer, prompt = steered.request, steered.layer, steered.prompt
    if heads is None:
        chosen = req.steer.heads_at(layer)
        heads = lm.check_heads("all" if chosen is None else list(chosen))
    else:
        heads = lm.check_heads(list(heads))
    P = len(prompt)

    def share(rep):  # mean over the chosen heads and the reply's tokens, prompt tokens only
        w = _reply_weights(lm, rep.q_out[P:], rep.cache, layer, P)
        return w[heads, :, :P].mean(dim=(0, 1)).float().cpu()

    if req.style == "rubric":
        parts = rubric_parts(lm.tokenizer, prompt, req.question, req.student_answer)
    else:
        texts = {"instructions": SYSTEM, "question": req.question.strip(), "student answer": req.student_answer.strip()}
        parts = prompt_parts(lm.tokenizer, prompt, texts)
    tokens = [lm.tokenizer.decode([t]) for t in prompt]
    return AttentionView(layer, list(heads), tokens, share(plain), share(steered), parts)
