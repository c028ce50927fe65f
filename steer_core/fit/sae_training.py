"""`train`: capture queries on the train split, fit the per-head SAEs of each layer, compute the
level prototypes, save everything (SAELens layout + manifest)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..bloom import LEVELS, load_dataset
from ..model.hooks import StopForward, capture_queries, query_edits
from ..prompts import DEFAULT_STYLE, messages, pad_right, render
from ..sae.layer_files import save_layer
from ..sae.module import SAETrainConfig, report_json, train_head_saes
from ..sae.prototypes import compute_prototypes
from ..sae.store import STORE, user_root


@dataclass
class Captured:
    """Queries of the train split per layer (each distinct prompt once, every feedback token), plus bookkeeping."""

    queries: dict[int, torch.Tensor]  # layer -> (tokens, heads, head_dim), float16 on CPU
    example_ids: torch.Tensor  # (tokens,)
    is_feedback: torch.Tensor  # (tokens,) bool: token belongs to the assistant's feedback
    example_levels: torch.Tensor  # (examples,)
    style: str
    positions: torch.Tensor | None = None  # (tokens,) each token's position in its example's rendered ids


@torch.no_grad()
def capture_train_queries(
    lm, layers: list[int], style: str = DEFAULT_STYLE, batch_size: int = 16, progress: bool = True, rows=None
) -> Captured:
    rows = rows if rows is not None else load_dataset(split="train")
    encoded = [render(lm.tokenizer, messages(r.question, r.student_answer, style), r.feedback) for r in rows]
    order = sorted(range(len(rows)), key=lambda i: len(encoded[i][0]))
    top = max(layers)
    chunks: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
    ex_ids, fb, at = [], [], []

    def stop(q):
        raise StopForward

    # A scenario's six feedbacks share one prompt, whose queries are then the same six times over (attention is
    # causal): keep each prompt's tokens once, so the SAEs see every distinct query once and train on about half
    # the tokens (about 2x faster); each feedback keeps all of its own.
    prompt_of = [tuple(ids[:n_prompt]) for ids, n_prompt in encoded]
    first_with_prompt: dict[tuple[int, ...], int] = {}
    for j in order:
        first_with_prompt.setdefault(prompt_of[j], j)
    for i in tqdm(range(0, len(order), batch_size), desc="capturing queries", disable=not progress):
        idx = order[i : i + batch_size]
        ids, mask, feedback = pad_right([encoded[j] for j in idx], lm.tokenizer.pad_token_id)
        repeated = torch.tensor([first_with_prompt[prompt_of[j]] != j for j in idx])
        keep = mask & (feedback | ~repeated[:, None])  # what is recorded; the forward reads every real token
        with capture_queries(lm, layers) as store:
            try:
                with query_edits(lm, {top + 1: stop} if top + 1 < lm.n_layers else {}):
                    lm.model(input_ids=ids.to(lm.device), attention_mask=mask.long().to(lm.device), use_cache=False)
            except StopForward:
                pass
        for layer in layers:
            chunks[layer].append(store[layer][0][keep.to(lm.device)].to("cpu", torch.float16))
        ex_ids.append(torch.tensor(idx).view(-1, 1).expand_as(keep)[keep])
        fb.append(feedback[keep])
        at.append(torch.arange(keep.shape[1]).expand_as(keep)[keep])
    return Captured(
        {layer: torch.cat(c) for layer, c in chunks.items()},
        torch.cat(ex_ids),
        torch.cat(fb),
        torch.tensor([LEVELS.index(r.level) for r in rows]),
        style,
        torch.cat(at),
    )


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
