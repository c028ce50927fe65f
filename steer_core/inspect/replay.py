"""One replay of a reply through the steering that wrote it, shared by the views that look inside it.

The prompt and the reply are teacher-forced as generation's two phases, with generation's own row
groups and layer edits, and at one layer the query that reached the steering edit and the one it
returned are kept, with the key/value cache: what the latent view (codes before and after) and the
attention view (where the reply looks) both need. An unsteered replay of the same reply gives the
attention view its baseline.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..generation import Request
from ..model.hooks import StopForward, query_edits, stop_above
from ..model.recording import RowRecording, recorder
from ..prefix_cache import prefix_queries
from ..prompts import render
from ..steering.assets import steering_groups
from ..steering.edits import layer_edits


@dataclass
class Replay:
    """What one replay saw at `layer`: queries (positions, heads x dim) as they reached the steering edit and as
    the edit returned them, over prompt then reply; which config steered each position (None: unsteered);
    the cache (every position's keys); the steering groups (empty for an unsteered replay)."""

    request: Request
    prompt: list[int]
    reply: list[int]
    layer: int
    q_in: torch.Tensor
    q_out: torch.Tensor
    steered_by: list
    cache: object
    groups: dict
    # (the cache after the prompt, the prompt's recorded queries), kept when asked (replay_at's keep_prompt) where no
    # steering reached the prompt: an unsteered replay of the same reply starts from it (replay_pair)
    prompt_state: tuple | None = None

    @property
    def group(self):
        """This layer's row group of the request (None: the layer is not steered)."""
        gs = self.groups.get(self.layer)
        return gs[0] if gs else None


def replay(
    lm, prompt: Sequence[int], reply: Sequence[int], phase_edits, upto: int | None = None, start=None, after_prompt=None
):
    """Teacher-force a prompt and a reply as generation's two phases (the prompt's forward, then the
    reply's), with phase_edits(phase) -> {site: edit} active in each, so that a view of a reply sees
    exactly the steering that wrote it. upto: the last layer the caller reads; the layers above it do not
    run (nothing up to it depends on them). start: a cache that already holds the prompt, read that way: only
    the reply runs, on a copy of it. after_prompt(cache): called between the phases. Returns the cache (the keys
    of every position, up to `upto`)."""
    from transformers import DynamicCache

    stop = {} if upto is None else stop_above(lm, upto)
    cache = DynamicCache() if start is None else copy.deepcopy(start)
    for phase, ids in (("prompt", list(prompt)), ("generated", list(reply))):
        if phase == "generated" and after_prompt is not None:
            after_prompt(cache)
        if not ids or (phase == "prompt" and start is not None):
            continue
        with query_edits(lm, {**phase_edits(phase), **stop}):  # the stop wins: nothing reads the layer above
            try:  # logits_to_keep=1: no view reads the logits
                ids_t = torch.tensor([ids], device=lm.device)
                lm.model(input_ids=ids_t, past_key_values=cache, use_cache=True, logits_to_keep=1)
            except StopForward:
                pass
    return cache


@torch.no_grad()
def replay_at(
    lm,
    req: Request,
    reply_ids: list[int],
    layer: int,
    steered: bool = True,
    start: tuple | None = None,
    keep_prompt: bool = False,
) -> Replay:
    """Replay `req`'s prompt and `reply_ids` through the steering that wrote them (or none), recording `layer`.
    start: an unsteered prompt's state (Replay.prompt_state) to begin from instead of reading the prompt;
    keep_prompt: keep this replay's prompt state where no steering reached the prompt."""
    groups = steering_groups(lm, [req]) if steered else {}
    cfg = req.steer if steered else None
    prompt, _ = render(lm.tokenizer, req.messages())
    seen: dict[str, list] = {"prompt": [], "generated": []}  # each phase's recorded (q_in, q_out) at `layer`
    steered_by: list = []
    kept: list = []
    keep_prompt = keep_prompt and not (groups and layer_edits(lm, groups, "prompt"))
    if start is not None:
        seen["prompt"].append(start[1])
        steered_by.extend([None] * len(prompt))

    def phase_edits(phase):
        n = len(prompt) if phase == "prompt" else len(reply_ids)
        edits = layer_edits(lm, groups, phase) if groups else {}
        steered_by.extend(_configs(cfg if layer in edits else None, phase, n))
        return recorder(edits, layer, 0, seen[phase])

    def keep(cache):  # the prompt's state, for an unsteered replay of the same reply
        if seen["prompt"]:
            kept.append((copy.deepcopy(cache), seen["prompt"][0]))

    cache = replay(
        lm, prompt, reply_ids, phase_edits, layer, None if start is None else start[0], keep if keep_prompt else None
    )
    q_in, q_out = (torch.cat([pair[i] for p in ("prompt", "generated") for pair in seen[p]]) for i in (0, 1))
    state = kept[0] if kept else None
    return Replay(req, prompt, list(reply_ids), layer, q_in, q_out, steered_by, cache, groups, state)


def _configs(cfg, phase: str, n: int) -> list:
    """Which config steered each of a phase's n positions (None: none; cfg None: the layer is not steered)."""
    by_pos = [None] * n
    if cfg is not None:
        for a, b, seg in cfg.segments(phase):
            end = n if b is None else min(n, b)
            by_pos[a:end] = [seg] * max(0, end - min(a, n))
    return by_pos


def replay_pair(lm, req: Request, reply_ids: list[int], layer: int) -> tuple[Replay, Replay]:
    """replay_at's steered and unsteered replays of a reply. Where no steering reached the prompt, both read it the
    same way, so the unsteered one starts from the steered one's prompt instead of reading it again: the same
    operations on the same values, the same replays, in about half the time of the second."""
    steered = replay_at(lm, req, reply_ids, layer, keep_prompt=True)
    return steered, replay_at(lm, req, reply_ids, layer, steered=False, start=steered.prompt_state)


def _row_cache(rec: RowRecording, end: int):
    """The recorded row's keys and values of its first `end` positions, as a cache of its own."""
    from transformers import DynamicCache

    cache = DynamicCache()
    for n, (k, v) in enumerate(rec.kv):
        cache.update(k[:, :, :end], v[:, :, :end], n)
    return cache


def _run_recording(lm, ids: list[int], cache, edits: dict, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Run `ids` over `cache` (extended in place) up to `layer` under `edits`; the (input, output) queries there."""
    kept: list = []
    with query_edits(lm, {**recorder(edits, layer, 0, kept), **stop_above(lm, layer)}):
        try:
            lm.model(
                input_ids=torch.tensor([ids], device=lm.device), past_key_values=cache, use_cache=True, logits_to_keep=1
            )
        except StopForward:
            pass
    return kept[0]


@torch.no_grad()
def recorded_pair(lm, req: Request, reply_ids: list[int], rec: RowRecording) -> tuple[Replay, Replay]:
    """replay_pair's two replays from what generation recorded of the reply's row (model/recording.py). The
    steered one is the queries and keys generation ran, with the queries of the prompt's cached prefix and of
    the last reply token, which generation ran through no layer, run here; the unsteered one starts from
    generation's prompt cache where no steering reached the prompt. They agree with replay_pair's to float32
    rounding (generation read the prompt in two parts and the reply a token at a time), in about a third of
    its time. A recording that does not hold every position (RowRecording.whole) gets replay_pair's replays."""
    from transformers import DynamicCache

    if not rec.whole:
        return replay_pair(lm, req, list(reply_ids), rec.layer)

    layer, groups, cfg = rec.layer, steering_groups(lm, [req]), req.steer
    prompt, _ = render(lm.tokenizer, req.messages())
    P, fed = len(prompt), min(len(reply_ids), len(rec.steps))
    prompt_edits = layer_edits(lm, groups, "prompt")
    pieces = [rec.prompt]
    if rec.prefix:  # the cached prefix's queries (read without steering), which the prefill did not run
        prefix = tuple(prompt[: rec.prefix])

        def read():
            return _run_recording(lm, list(prefix), DynamicCache(), {}, layer)

        pieces.insert(0, prefix_queries(lm, prefix, layer, read))
    pieces += [(torch.cat([q for q, _ in rec.steps[:fed]]), torch.cat([q for _, q in rec.steps[:fed]]))] if fed else []
    cache = _row_cache(rec, P + fed)
    if fed < len(reply_ids):  # the last token, which generation chose but did not run
        edits = layer_edits(lm, groups, "generated", start=fed)
        pieces.append(_run_recording(lm, list(reply_ids[fed:]), cache, edits, layer))
    q_in, q_out = (torch.cat([p[i] for p in pieces]) for i in (0, 1))
    steered_by = _configs(cfg if layer in prompt_edits else None, "prompt", P)
    steered_by += _configs(cfg if layer in layer_edits(lm, groups, "generated") else None, "generated", len(reply_ids))
    steered = Replay(req, prompt, list(reply_ids), layer, q_in, q_out, steered_by, cache, groups)
    start = None if prompt_edits else (_row_cache(rec, P), (q_in[:P], q_out[:P]))
    return steered, replay_at(lm, req, list(reply_ids), layer, steered=False, start=start)
