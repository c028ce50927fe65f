"""`train`: capture queries on the train split, fit the per-head SAEs of each layer, compute the
level prototypes, save everything (SAELens layout + manifest)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..bloom import LEVELS, load_dataset
from ..model.hooks import StopForward, capture_queries, query_edits, stop_above
from ..prompts import DEFAULT_STYLE, messages, pad_right, render
from ..sae.layer_files import save_layer
from ..sae.module import SAETrainConfig, report_json, train_head_saes
from ..sae.prototypes import compute_prototypes
from ..sae.store import STORE, user_root
from .shared_prompt import replies_loglik


@dataclass
class Captured:
    """Queries of the train split per layer (each distinct prompt once, every feedback token), plus bookkeeping."""

    queries: dict[int, torch.Tensor]  # layer -> (tokens, heads, head_dim), float16 on CPU
    example_ids: torch.Tensor  # (tokens,)
    is_feedback: torch.Tensor  # (tokens,) bool: token belongs to the assistant's feedback
    example_levels: torch.Tensor  # (examples,)
    style: str
    positions: torch.Tensor | None = None  # (tokens,) each token's position in its example's rendered ids
    # (examples,) the unsteered log-likelihood of each feedback's first `score_tokens` tokens, when asked for: the
    # offsets fit's reference, read in the same forward
    reply_logprobs: torch.Tensor | None = None


@torch.no_grad()
def capture_train_queries(
    lm, layers: list[int], style: str = DEFAULT_STYLE, progress: bool = True, rows=None, score_tokens: int | None = None
) -> Captured:
    """A scenario's six feedbacks share one prompt, whose queries are the same six times over (attention is
    causal): each distinct prompt is read once, its keys and values shared by the feedbacks that follow it, and
    recorded once (by the first row that has it); every feedback token is recorded. The SAEs see every distinct
    query once, and the forward reads each prompt once instead of six times (about 3x fewer tokens).
    score_tokens: also the unsteered log-likelihood of each feedback's first that many tokens (the forward then
    runs through every layer), which `prepare` hands to the offsets fit instead of reading the replies again."""
    rows = rows if rows is not None else load_dataset(split="train")
    encoded = [render(lm.tokenizer, messages(r.question, r.student_answer, style), r.feedback) for r in rows]
    groups: dict[tuple[int, ...], list[int]] = {}
    for j, (ids, n_prompt) in enumerate(encoded):
        groups.setdefault(tuple(ids[:n_prompt]), []).append(j)
    record = _QueryRecorder(lm, layers, whole=score_tokens is not None)
    scores = torch.zeros(len(rows))
    for prompt, members in tqdm(groups.items(), desc="capturing queries", disable=not progress):
        cache = record(torch.tensor([prompt]), torch.ones(1, len(prompt), dtype=torch.bool), cache=None)
        first = record.logits
        record.keep(members[0], torch.arange(len(prompt)), offset=0, feedback=False)
        replies = [encoded[j][0][len(prompt) :] for j in members]
        ids, real, _ = pad_right([(r, 0) for r in replies], lm.tokenizer.pad_token_id)
        cache.batch_repeat_interleave(len(members))
        scored = min(ids.shape[1], score_tokens or 1)
        record(ids, real, cache=cache, start=len(prompt), logits_at=torch.arange(scored - 1))
        if score_tokens is not None:
            first_lp = torch.log_softmax(first[0, -1].float(), -1).expand(len(members), -1)
            logits, dev = record.logits.float(), record.logits.device
            scores[members] = replies_loglik(first_lp, logits, ids[:, :scored].to(dev), real[:, :scored].to(dev)).cpu()
        for i, j in enumerate(members):
            record.keep(j, torch.arange(len(replies[i])), offset=len(prompt), feedback=True, row=i)
    return Captured(
        {layer: torch.cat(c) for layer, c in record.chunks.items()},
        torch.cat(record.example_ids),
        torch.cat(record.is_feedback),
        torch.tensor([LEVELS.index(r.level) for r in rows]),
        style,
        torch.cat(record.positions),
        scores if score_tokens is not None else None,
    )


class _QueryRecorder:
    """Reads token batches through the layers up to the last one recorded (the forward stops there) and keeps
    chosen tokens' queries, in the order kept (an example's tokens contiguous, as Captured needs)."""

    def __init__(self, lm, layers: list[int], whole: bool = False):
        self.lm, self.layers = lm, layers
        self.top = lm.n_layers - 1 if whole else max(layers)  # whole: through every layer, to the logits
        self.logits = None
        self.chunks: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
        self.example_ids, self.is_feedback, self.positions = [], [], []

    def __call__(self, ids: torch.Tensor, real: torch.Tensor, cache, start: int = 0, logits_at=1):
        """Read ids (rows, T) after `cache` (None: a fresh one) holding `start` tokens; returns the cache. When the
        forward runs to the end, self.logits holds the logits at `logits_at` (the last position by default)."""
        from transformers import DynamicCache

        lm, dev = self.lm, self.lm.device
        cache = DynamicCache() if cache is None else cache
        mask = torch.cat([torch.ones(len(ids), start, dtype=torch.bool), real], 1).long().to(dev)
        pos = (start + torch.arange(ids.shape[1]))[None].expand(len(ids), -1).to(dev)
        logits_at = logits_at.to(dev) if isinstance(logits_at, torch.Tensor) else logits_at

        with capture_queries(lm, self.layers) as store:
            try:
                with query_edits(lm, stop_above(lm, self.top)):
                    self.logits = lm.model(
                        input_ids=ids.to(dev), attention_mask=mask, position_ids=pos, past_key_values=cache,
                        use_cache=True, logits_to_keep=logits_at,
                    ).logits  # fmt: skip
            except StopForward:
                self.logits = None
        self.read = {layer: store[layer][0] for layer in self.layers}
        return cache

    def keep(self, example: int, at: torch.Tensor, offset: int, feedback: bool, row: int = 0) -> None:
        """Keep the last read's tokens `at` of `row`, which stand at `offset + at` in the example's ids."""
        for layer in self.layers:
            self.chunks[layer].append(self.read[layer][row, at.to(self.lm.device)].to("cpu", torch.float16))
        self.example_ids.append(torch.full((len(at),), example))
        self.is_feedback.append(torch.full((len(at),), feedback))
        self.positions.append(offset + at)


def position_in_example(example_ids: torch.Tensor) -> torch.Tensor:
    """0, 1, 2, ... within each run of equal example ids (an example's tokens are contiguous)."""
    idx = torch.arange(len(example_ids))
    starts = torch.ones(len(example_ids), dtype=torch.bool)
    starts[1:] = example_ids[1:] != example_ids[:-1]
    first = torch.cummax(torch.where(starts, idx, torch.zeros_like(idx)), 0).values
    return idx - first


def feedback_prototypes(
    sae, x: torch.Tensor, captured: Captured, device, first_tokens: int | None = None
) -> dict[str, torch.Tensor]:
    """Level prototypes of one layer from its captured queries x (tokens, heads, dim): feedback tokens
    only, or only each feedback's first `first_tokens` (its opening names the task, the rest the topic)."""
    keep = captured.is_feedback
    if first_tokens is not None:
        keep = keep.clone()
        keep[keep.clone()] = position_in_example(captured.example_ids[keep]) < first_tokens
    return compute_prototypes(
        sae, x[keep.to(device)], captured.example_ids[keep].to(device), captured.example_levels.to(device)
    )


def train_layers(
    lm,
    layers: list[int],
    root: Path,
    cfg: SAETrainConfig | None = None,
    style: str = DEFAULT_STYLE,
    progress: bool = True,
    captured: Captured | None = None,
    dtype: str = "float16",
) -> dict[int, dict]:
    """Train and save SAEs + prototypes for each layer (a loaded copy of each is dropped from the SAE store,
    so the next request reads the new files); returns each layer's metrics."""
    cfg = cfg or SAETrainConfig()
    layers = [lm.check_layer(layer) for layer in layers]
    captured = captured or capture_train_queries(lm, layers, style, progress=progress)
    style = captured.style  # prototypes belong to the prompt format the queries were read under
    results = {}
    for layer in tqdm(layers, desc="training SAEs", disable=not progress or len(layers) == 1):
        t0 = time.time()
        x = captured.queries[layer].to(lm.device).float()
        sae, report = train_head_saes(x, cfg, progress=progress, desc=f"SAE layer {layer}")
        protos = feedback_prototypes(sae, x, captured, lm.device)
        metrics = report_json(report, cfg)
        metrics["train_seconds"] = round(time.time() - t0, 2)
        settings = {
            "prompt_style": style,
            "n_examples": len(captured.example_levels),
            "n_tokens": len(x),
            "n_feedback_tokens": int(captured.is_feedback.sum()),
        }
        save_layer(root, lm, layer, sae, protos, metrics, settings, dtype=dtype)
        STORE.forget(lm, layer, style)  # the one place a loaded copy is dropped: the next get reads these files
        results[layer] = metrics["summary"] | {"seconds": metrics["train_seconds"]}
    return results


def ensure_trained(lm, layers, style: str = DEFAULT_STYLE, progress: bool = True) -> dict:
    """The layers' SAEs + prototypes, training first (in one capture pass) those that are missing or whose
    cached copy is corrupt: the explicit build step that loading never takes itself."""
    todo = STORE.missing(lm, layers, style)
    if todo:
        train_layers(lm, todo, user_root(lm, style), style=style, progress=progress)
    return STORE.get_many(lm, layers, style)


def refit_prototypes(
    lm,
    banks: dict,
    rows,
    root: Path,
    style: str = DEFAULT_STYLE,
    progress: bool = True,
    first_tokens: int | None = None,
) -> Path:
    """Copy the model's trained SAEs of `layers` to `root` with prototypes computed from `rows` only
    (cross-writer validation fits prototypes and offsets without the writers it is scored on), or from
    each feedback's first tokens only. banks: layer -> the LayerSAEs whose SAEs are copied."""
    layers = list(banks)
    captured = capture_train_queries(lm, list(layers), style, progress=progress, rows=list(rows))
    for layer in layers:
        bank = banks[layer]
        protos = feedback_prototypes(
            bank.sae, captured.queries[layer].to(lm.device).float(), captured, lm.device, first_tokens
        )
        settings = dict(
            bank.meta.get("settings", {}),
            prototype_rows=len(rows),
            prototype_scenarios=sorted({r.scenario_id for r in rows}),
        )
        if first_tokens is not None:
            settings["prototype_tokens"] = f"first {first_tokens} feedback tokens"
        save_layer(root, lm, layer, bank.sae, protos, bank.meta.get("metrics", {}), settings)
    return Path(root)
