"""Building the latent cards (inspect.cards says what a card holds and reads them): every recorded token of the
train split through each layer's SAEs, streamed; the attention shift of pushing each latent, every latent of a head
at once; and the judged effects of the latents each level's offset uses most."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save
from tqdm.auto import tqdm

from ..bloom import LEVELS, load_dataset, writer_of
from ..errors import UserError
from ..inspect.cards import (
    CARDS,
    CHUNK,
    CONTEXTS,
    EFFECT_TOKENS,
    FORMAT,
    PARTS,
    REFERENCE_TOKENS,
    REFERENCE_WRITERS,
    REFERENCES,
    LayerCards,
    _read_meta,
    cards_root,
    push_of,
    top_offset_latents,
)  # fmt: skip
from ..io_utils import atomic_write_bytes, atomic_write_text
from ..prompts import DEFAULT_STYLE, messages, render
from ..sae.store import STORE
from ..steering.offset_files import manifest_digest
from .sae_training import Captured, capture_train_queries


def token_table(lm, rows, style: str) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Every row rendered with its feedback: (ids (T,) int32, starts (rows + 1,) int64, prompt lengths)."""
    encoded = [render(lm.tokenizer, messages(r.question, r.student_answer, style), r.feedback) for r in rows]
    lengths = torch.tensor([len(ids) for ids, _ in encoded])
    starts = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
    ids = torch.tensor([t for seq, _ in encoded for t in seq], dtype=torch.int32)
    return ids, starts, [n for _, n in encoded]


def reference_rows(rows, writers=REFERENCE_WRITERS, n: int = REFERENCES, level: str = "apply") -> list:
    """A few scenarios (one feedback each, at one level) that the attention shift and effects read: the held-out
    writers' where the rows have them (the validation writers), else the first scenarios there are (a fit on
    other writers)."""
    rows = [r for r in rows if r.level == level]
    held_out = [r for r in rows if writer_of(r.scenario_id) in writers]
    first: dict[str, object] = {}
    for r in held_out or rows:
        first.setdefault(r.scenario_id, r)
    out = list(first.values())[:n]
    if not out:
        raise UserError(f"no {level} feedback among the rows to read the attention shift on")
    return out


@torch.no_grad()
def encode_stats(sae, x: torch.Tensor, where: torch.Tensor, levels: torch.Tensor, feedback: torch.Tensor, device):
    """Firing share, top activations with their token indices, and mean activation by level on feedback tokens, of
    every latent of every head, streaming the tokens: x (N, H, D) queries, where (N,) their token-table indices,
    levels (N,) their example's level, feedback (N,) bool. Returns (freq, top_act, top_token, level_mean)."""
    N, H = x.shape[:2]
    K = sae.d_sae
    freq = torch.zeros(H, K, device=device)
    level_sum = torch.zeros(len(LEVELS), H, K, device=device)
    level_n = torch.bincount(levels[feedback], minlength=len(LEVELS)).to(device)
    top_v = torch.full((CONTEXTS, H, K), -1.0, device=device)
    top_i = torch.zeros((CONTEXTS, H, K), dtype=torch.long, device=device)
    for a in range(0, N, CHUNK):
        z = sae.encode(x[a : a + CHUNK].to(device).float())  # (n, H, K)
        w = where[a : a + CHUNK].to(device)
        fb = feedback[a : a + CHUNK].to(device)
        freq += (z > 0).sum(0)
        level_sum.index_add_(0, levels[a : a + CHUNK].to(device)[fb], z[fb])
        v, i = z.topk(min(CONTEXTS, len(z)), dim=0)
        v, i = torch.cat([top_v, v]), torch.cat([top_i, w[i]])
        top_v, sel = v.topk(CONTEXTS, dim=0)
        top_i = i.gather(0, sel)
    level_mean = level_sum / level_n.clamp_min(1)[:, None, None]
    top_v = top_v.clamp_min(0)  # a latent that fired fewer than CONTEXTS times: the rest are 0 (not shown)
    return freq / N, top_v.permute(1, 2, 0), top_i.permute(1, 2, 0).int(), level_mean.permute(1, 2, 0)


@dataclass
class Reference:
    """One held-out scenario replayed unsteered: its reply's queries at every layer (pre-rotary) and the keys."""

    prompt_len: int
    spans: list[tuple[int, int]]  # question, student answer (token spans of the prompt)
    queries: dict[int, torch.Tensor]  # layer -> (R, H x D)
    cache: object


@torch.no_grad()
def references(lm, rows, layers: list[int], style: str) -> list[Reference]:
    from ..inspect.attention import _record_queries, prompt_parts
    from ..inspect.replay import replay

    out = []
    for r in rows:
        ids, start = render(lm.tokenizer, messages(r.question, r.student_answer, style), r.feedback)
        prompt, reply = ids[:start], ids[start : start + REFERENCE_TOKENS]
        parts = prompt_parts(lm.tokenizer, prompt, {"question": r.question, "answer": r.student_answer})
        stores: dict[str, dict] = {"prompt": {}, "generated": {}}
        cache = replay(
            lm, prompt, reply, lambda phase, stores=stores: _record_queries(lm, layers, {}, stores[phase]), max(layers)
        )
        queries = {layer: stores["generated"][layer][0][0] for layer in layers}
        out.append(Reference(len(prompt), parts.spans, queries, cache))
    return out


@torch.no_grad()
def attention_shift(lm, layer: int, sae, refs: list[Reference], push: torch.Tensor) -> torch.Tensor:
    """(H, K, parts): how pushing each latent alone, by `push` (H, K), changes where its head's reply tokens look,
    as attention mass on each part (PARTS), averaged over the reply tokens and the references; every latent of
    every head at once, as the model's family computes attention (families.py)."""
    from ..model.families import attention_weights, rotate

    H, D = lm.n_heads, lm.head_dim
    W_dec = sae.W_dec.float()  # (H, K, D)
    K = W_dec.shape[1]
    out = torch.zeros(K, H, len(PARTS), device=lm.device)
    for ref in refs:
        q = ref.queries[layer].float().view(-1, H, D)  # (R, H, D)
        R, P = q.shape[0], ref.prompt_len
        positions = torch.arange(P, P + R, device=lm.device)[None]
        keys = ref.cache.layers[layer].keys  # (1, kv heads, P + R, D)
        masks = torch.zeros(len(PARTS), P + R, device=lm.device)
        for i, (a, b) in enumerate(ref.spans):
            masks[i, a:b] = 1
        masks[2, :P] = 1 - masks[:2, :P].sum(0).clamp_max(1)
        masks[3, P:] = 1
        base = q.transpose(0, 1)[None]  # (1, H, R, D)
        pushed = base + (push[..., None, None] * W_dec[:, :, None, :]).transpose(0, 1)  # (K, H, R, D): latent k alone
        w0 = attention_weights(lm.model, layer, rotate(lm.model, layer, base, positions), keys, P)
        w = attention_weights(lm.model, layer, rotate(lm.model, layer, pushed, positions), keys, P)
        out += ((w - w0).mean(2) @ masks.T) / len(refs)  # (K, H, parts)
    return out.transpose(0, 1).contiguous()


def _done(out: Path, meta: dict, layer: int, digest: str) -> bool:
    """Built from these SAE files, and its file is there."""
    return (out / f"layer_{layer}.safetensors").is_file() and meta.get("layers", {}).get(str(layer)) == digest


@torch.no_grad()
def build_cards(
    lm,
    layers: list[int],
    out: str | Path | None = None,
    style: str = DEFAULT_STYLE,
    effects: int = 4,
    progress: bool = True,
    group: int = 10,
    rows=None,
    banks: dict | None = None,
    captured: Captured | None = None,
) -> Path:
    """The cards of `layers` (from the model's SAEs and the train split), into `out` (default: the model's cards
    folder) from `banks` (layer -> LayerSAEs; default: the model's own); layers already built from the same SAE
    files are kept (resumable). effects: the top latents of each level's learned offset whose steered replies are
    judged (0: none). captured: the same rows' queries already captured (prepare's, for its SAEs): the layers it
    holds are not captured again (a layer's queries are the same whichever layers a pass records). Returns the
    folder."""
    t0 = time.time()
    out = Path(out) if out is not None else cards_root(lm, style)
    rows = list(rows) if rows is not None else load_dataset(split="train")
    banks = banks if banks is not None else STORE.get_many(lm, layers, style)
    digests = {layer: manifest_digest(banks[layer].meta) for layer in layers}
    meta, starts = _table(lm, out, rows, style)
    refs_rows = reference_rows(rows)
    meta["references"] = [r.scenario_id for r in refs_rows]
    todo = [layer for layer in layers if not _done(out, meta, layer, digests[layer])]
    bar = tqdm(total=len(todo), desc="latent cards", unit="layer", disable=not progress)
    have = [layer for layer in todo if captured is not None and layer in captured.queries]
    rest = [layer for layer in todo if layer not in have]
    chunks = ([have] if have else []) + [rest[i : i + group] for i in range(0, len(rest), group)]
    for chunk in chunks:
        got = captured if chunk is have else capture_train_queries(lm, chunk, style, progress=False, rows=rows)
        where = starts[got.example_ids] + got.positions
        levels = got.example_levels[got.example_ids]
        refs = references(lm, refs_rows, chunk, style)
        for layer in chunk:
            sae = banks[layer].sae
            freq, top_act, top_token, level_mean = encode_stats(
                sae, got.queries[layer], where, levels, got.is_feedback, lm.device
            )
            push = push_of(top_act[..., 0])
            cards = LayerCards(
                layer, freq, top_act, top_token, level_mean, attention_shift(lm, layer, sae, refs, push), push
            )
            atomic_write_bytes(out / f"layer_{layer}.safetensors", save(cards.tensors()))
            meta["layers"][str(layer)] = digests[layer]
            atomic_write_text(out / "cards.json", json.dumps(meta, indent=1))
            bar.update(1)
        del got, refs
    bar.close()
    if effects:
        meta["effects"] = judged_effects(lm, out, layers, refs_rows, style, effects, progress)
    meta["build_seconds"] = round(time.time() - t0, 1)
    atomic_write_text(out / "cards.json", json.dumps(meta, indent=1))
    CARDS.forget()
    return out


def _table(lm, out: Path, rows, style: str) -> tuple[dict, torch.Tensor]:
    """The folder's meta and the token table's row starts; a folder built from another table (another dataset or
    tokenizer) starts over, with this table written."""
    ids, starts, prompt_lens = token_table(lm, rows, style)
    meta = _read_meta(out)
    if meta.get("tokens") != _table_digest(ids) or meta.get("format") != FORMAT:
        meta = {}
        atomic_write_bytes(out / "tokens.safetensors", save({"ids": ids, "starts": starts}))
    meta.update(
        format=FORMAT,
        model=lm.key,
        style=style,
        tokens=_table_digest(ids),
        rows=[{"scenario": r.scenario_id, "level": r.level, "prompt_len": n}
              for r, n in zip(rows, prompt_lens, strict=True)],
        contexts=CONTEXTS,
        parts=list(PARTS),
    )  # fmt: skip
    meta.setdefault("layers", {})
    return meta, starts


def _table_digest(ids: torch.Tensor) -> str:
    return hashlib.sha256(ids.numpy().tobytes()).hexdigest()[:16]


@torch.no_grad()
def judged_effects(lm, out: Path, layers, refs_rows, style: str, per_level: int, progress: bool) -> dict:
    """For the top latents of each level's offset: the judge's mean level probabilities over the reference
    scenarios when that latent alone is pushed (by its card's push, on the generated tokens), beside the
    unsteered replies'. {"layer.head:latent": {"strength", "probs", "texts"}, "unsteered": {...}}."""
    from ..generation import Request, stream_batch
    from ..judge.classifier import default_judge
    from ..steering.config import SteerConfig

    chosen = {(a, h, k) for lat in top_offset_latents(lm, layers, per_level, style).values() for a, h, k, _ in lat}
    if not chosen:
        return {}
    cards = {layer: LayerCards.load(out / f"layer_{layer}.safetensors", layer) for layer in {a for a, _, _ in chosen}}
    runs = [("unsteered", None, None)]
    for a, h, k in sorted(chosen):
        s = round(float(cards[a].push[h, k]), 1)
        runs.append((f"{a}.{h}:{k}", SteerConfig(target="latents", latents=((a, h, k, s),)).for_method("latents"), s))
    # every latent's replies in one batch, each row steered by its own latent: one decoding loop, not one per latent
    reqs = [
        Request(r.question, r.student_answer, "none" if steer is None else "latents", r.level, steer=steer, style=style)
        for _, steer, _ in runs
        for r in refs_rows
    ]  # fmt: skip
    outs = []
    steps = stream_batch(lm, reqs, max_new_tokens=EFFECT_TOKENS)
    for outs in tqdm(steps, total=EFFECT_TOKENS, desc="judged effects", unit="token", disable=not progress):  # noqa: B007
        pass
    texts = [o.text for o in outs]
    verdicts = default_judge().judge(texts)
    n, result = len(refs_rows), {}
    for i, (name, _, strength) in enumerate(runs):
        block = verdicts[i * n : (i + 1) * n]
        probs = [sum(v["probs"][lv] for v in block) / n for lv in LEVELS]
        result[name] = {"probs": [round(p, 4) for p in probs], "texts": texts[i * n : (i + 1) * n]}
        if strength is not None:
            result[name]["strength"] = strength
    return result
