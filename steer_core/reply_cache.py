"""Replies of the rows that do not steer (a Compare's unsteered and few-shot columns), kept for the next click that
asks for them again: a teacher who tries other layers, heads or strengths on one question and level then waits only
for the rows that changed.

The reply of a row that does not steer depends only on the model, its prompt's tokens and the decoding settings. In
the interactive views' decoding a row's reply is also the same in any batch: the few-row kernel, the C++ layers and
the attention kernel compute each row on its own (tests/test_real_model.py checks a Compare's rows against each row
alone). So a kept reply is the one the row would get again, token for token, and the rows generated beside fewer
others are the ones they would be in the whole batch. Where those kernels are not what decodes (no compiler,
STEER_KERNEL=off, a GPU, more than 11 rows), or when sampling, nothing is kept or reused.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import replace

from .caches import BoundedCache, model_serial
from .errors import UserError
from .generation import REPLY_TOKENS, Output, Request, stream_batch
from .model import lean_step
from .model.attention_kernel import attention_kernel
from .model.recording import RowRecording
from .prompts import render

REPLY_CACHE_ENV = "STEER_REPLY_CACHE"
DEFAULT_REPLIES = 256  # a reply is a few hundred bytes of text and token ids


def _budget() -> int:
    raw = os.environ.get(REPLY_CACHE_ENV, "").strip()
    try:
        return max(int(raw), 0) if raw else DEFAULT_REPLIES
    except ValueError:
        raise UserError(f"{REPLY_CACHE_ENV} must be a whole number of replies, not {raw!r}") from None


REPLIES = BoundedCache("replies", _budget(), lambda _: 1)  # its budget counts replies


def reuses(lm, rows: int, decoding: dict) -> bool:
    """Whether a batch of `rows` decoded with these stream_batch settings computes each row on its own (see above)."""
    if decoding.get("temperature", 0.0) > 0 or not decoding.get("own_positions"):
        return False
    if lm.device.type != "cpu" or not lean_step.takes(lm.model):
        return False
    if attention_kernel() is None or lean_step.lean_layers() is None:
        return False
    return lean_step.Plan.qualifies(lm.model, rows)


def _key(lm, req: Request, max_new_tokens: int, decoding: dict) -> tuple:
    ids, _ = render(lm.tokenizer, req.messages())
    reading = (bool(decoding.get("prefix_cache")), bool(decoding.get("ignore_stop")))
    return (model_serial(lm.model), lm.key, str(lm.device), tuple(ids), max_new_tokens, reading)


def stream_reusing(
    lm,
    requests: Sequence[Request],
    max_new_tokens: int = REPLY_TOKENS,
    record: RowRecording | None = None,
    **decoding,
) -> Iterator[list[Output]]:
    """stream_batch, but a row that does not steer and was generated before with the same prompt and settings is not
    generated again: its kept reply is shown whole from the first yield, and the rows generated are kept once the
    batch ends; the rows run also take, and keep, the prompt reads kept by earlier batches (stream_batch's
    keep_prompts). record: as stream_batch's (its row always runs; `record.row` is renumbered among the rows run)."""
    keys: list[tuple | None] = [None] * len(requests)
    if reuses(lm, len(requests), decoding):
        keys = [None if r.steer is not None else _key(lm, r, max_new_tokens, decoding) for r in requests]
    kept = {i: o for i, k in enumerate(keys) if k is not None and (o := REPLIES.peek(k)) is not None}
    if record is not None:
        kept.pop(record.row, None)
    run = [i for i in range(len(requests)) if i not in kept]
    outs = {i: replace(o, seconds=0.0, token_ids=list(o.token_ids)) for i, o in kept.items()}
    if not run:
        yield [outs[i] for i in range(len(requests))]
        return
    if record is not None:
        record.row = run.index(record.row)
    decoding = {**decoding, "keep_prompts": True}
    for sub in stream_batch(lm, [requests[i] for i in run], max_new_tokens=max_new_tokens, record=record, **decoding):
        outs.update(zip(run, sub))
        for i in kept:  # shown as long as the batch has run
            outs[i].seconds = sub[0].seconds
        yield [outs[i] for i in range(len(requests))]
    for i in run:  # reached only when the batch ended, not when its reader stopped early
        if keys[i] is not None:
            REPLIES.put(keys[i], replace(outs[i], token_ids=list(outs[i].token_ids)))
