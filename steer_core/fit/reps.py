"""RePS fitted the way its authors fit it (reference-free preference steering, arXiv 2505.20809), as read
in a public copy of AxBench that carries it (`axbench/models/preference_model.py`, the `scaled_simpo`
loss and the training loop; `interventions.py`, `PreferenceVectorIntervention`):

- **Pairs.** For each level (a "concept"): the concept reply, written by the model prompted with the
  level (the teacher data, `teacher`), against the model's own reply to the plain prompt (`sample_own`),
  on the same question and answer.
- **Steering toward the level** adds (s + b) v at the steered positions, with the factor s drawn per
  example from `factors` and b a learned offset of the factor; the concept reply must win over the own
  reply. **Steering away** is the null intervention: the positive part of the projection on v removed,
  h - relu(h.v + b) / |v|^2 v; there the own reply must win.
- **Loss**, scaled SimPO: -log sigmoid(w * logp(winner) / len(winner) - logp(loser) / len(loser)), with
  summed log-likelihoods, lengths of the whole sequence (prompt and reply), and
  w = max(scaler * (ref logp(loser) - ref logp(winner)), 1) under the unsteered model: a winner the
  model finds unlikely is pushed harder.
- **Optimiser:** v from nn.Linear's random init, b from 0; AdamW with weight decay, the learning rate
  decaying linearly to 0, each level's gradient norm clipped at 1 (each level is fitted on its own: its
  own parameters, loss and clipping); no L1.

Sites: "residual" (a vector added to a decoder layer's output, the authors' site) or "sae" (a vector in
each head's SAE code at each layer: the paper's site; the null intervention projects the token's own
code). Positions: "generated" (the reply only, the prompt read once and shared, as the shipped steering
steers) or "all" (the prompt too, as the authors' intervention does; a full forward per row).

What could not be read: the authors' factor range and learning rates for this model size; ours are
recorded with the fit. The fitted v is saved as LevelOffsets; strength alpha then means a factor of
alpha (the learned b, recorded in the meta, only shifts the factor axis, which a sweep covers).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from tqdm.auto import tqdm

from ..bloom import LEVELS
from ..errors import UserError
from ..model.hooks import RESIDUAL, query_edits
from ..prompts import DEFAULT_STYLE, FEEDBACK_TOKENS, messages, pad_replies, render
from ..steering.offset_files import SITES, LevelOffsets, manifest_digest
from .shared_prompt import shared_prompt

POSITIONS = ("generated", "all")
# Factors where steering changes the text, from nn.Linear's init: at the residual site (norm ~0.58 in 576
# dimensions) a factor of 4-32 adds 2-18 to a stream of norm ~170-200 at layer 15 (the BiPO vector's
# validated edit is ~16); at the SAE site a random code vector decodes to a query shift of ~8 per head, so
# 1/16-1/2 gives 0.5-4 against queries of norm ~15 (BiPO's validated shift: ~1.1 per head, on every layer).
FACTORS = {"residual": (4.0, 8.0, 16.0, 24.0, 32.0), "sae": (0.0625, 0.125, 0.25, 0.375, 0.5)}


@dataclass(frozen=True)
class RepsConfig:
    """How RePS is fitted; stored with the vectors."""

    layers: tuple[int, ...] = (15,)
    site: str = "residual"
    epochs: int = 2
    lr: float = 0.01
    weight_decay: float = 0.01
    factors: tuple[float, ...] | None = None  # drawn per example; None: the site's FACTORS
    simpo_scaler: float = 1.0
    max_feedback_tokens: int = FEEDBACK_TOKENS
    positions: str = "generated"
    clip: float = 1.0
    seed: int = 0
    style: str = DEFAULT_STYLE

    def __post_init__(self):
        if not self.layers:
            raise UserError("choose at least one layer to fit RePS vectors for")
        if self.site not in SITES:
            raise UserError(f"site must be one of {', '.join(SITES)}, got {self.site!r}")
        if self.positions not in POSITIONS:
            raise UserError(f"positions must be one of {', '.join(POSITIONS)}, got {self.positions!r}")
        if self.factors is None:
            object.__setattr__(self, "factors", FACTORS[self.site] if self.site in FACTORS else None)
        if not self.factors or not all(isinstance(f, (int, float)) and f > 0 for f in self.factors):
            raise UserError(f"factors must be numbers > 0, got {self.factors!r}")
        for name in ("lr", "weight_decay", "simpo_scaler", "clip"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not v >= 0:
                raise UserError(f"{name} must be a number >= 0, got {v!r}")
        if self.epochs < 1 or self.max_feedback_tokens < 2:
            raise UserError("epochs must be >= 1 and max_feedback_tokens >= 2")


@dataclass
class PairGroup:
    """One scenario and sample: the prompt, the concept reply of every level (LEVELS order) and the own reply."""

    prompt: list[int]
    concept: list[list[int]]
    own: list[int]


def encode_pairs(tok, teacher: Sequence[dict], own: Sequence[dict], style: str, max_tokens: int) -> list[PairGroup]:
    """Teacher rows (scenario_id, level, sample, question, student_answer, feedback) and own replies
    (scenario_id, sample, feedback) -> one group per (scenario, sample) that has every level's reply."""
    mine = {(o["scenario_id"], int(o["sample"])): o["feedback"] for o in own}
    by: dict[tuple[str, int], dict[str, dict]] = {}
    for r in teacher:
        by.setdefault((r["scenario_id"], int(r.get("sample", 0))), {})[r["level"]] = r
    out = []
    for key, levels in by.items():
        if len(levels) != len(LEVELS) or key not in mine:
            continue
        first = levels[LEVELS[0]]
        msgs = messages(first["question"], first["student_answer"], style)
        prompt, _ = render(tok, msgs)

        replies = [render(tok, msgs, text) for text in [*(levels[lv]["feedback"] for lv in LEVELS), mine[key]]]
        replies = [ids[start:][:max_tokens] for ids, start in replies]
        out.append(PairGroup(prompt, replies[:-1], replies[-1]))
    return out


def null_coefficient(x: torch.Tensor, v: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The null intervention's coefficient: relu(x.v + b) / |v|^2 along the last dim (x - coef * v removes
    the positive part of x's projection on v). x (..., D), v broadcastable (..., D), b broadcastable (...)."""
    return torch.relu((x * v).sum(-1) + b) / (v * v).sum(-1).clamp_min(1e-12)


def residual_edit(v: torch.Tensor, b: torch.Tensor, plus: torch.Tensor, factor: torch.Tensor):
    """The edit of one layer's output for rows steered by v (rows, D) with offsets b (rows,): h + (s + b) v on
    rows where `plus`, the null intervention on the others."""

    def edit(h: torch.Tensor) -> torch.Tensor:
        vv = v[:, None, :].to(h.dtype)
        add = ((factor + b)[:, None, None] * vv).expand_as(h)
        null = -null_coefficient(h, vv, b[:, None])[..., None] * vv
        return h + torch.where(plus[:, None, None], add, null)

    return edit


def sae_edit(bank, v: torch.Tensor, b: torch.Tensor, plus: torch.Tensor, factor: torch.Tensor, n_heads: int, d: int):
    """The q_proj edit for rows steered by code vectors v (rows, heads, d_sae): the decoded shift (s + b) W_dec^T v
    on rows where `plus`; the null intervention on the token's own code z = enc(q) on the others."""
    W_dec = bank.sae.weights(None)[2]  # (heads, d_sae, head_dim)
    u = torch.einsum("rhk,hkd->rhd", v, W_dec)  # the query shift of each row's v, per head

    def edit(q: torch.Tensor) -> torch.Tensor:
        B, S, _ = q.shape
        x = q.view(B, S, n_heads, d)
        add = ((factor + b)[:, None, None, None] * u[:, None]).expand_as(x)
        z = bank.sae.encode(x, None)
        null = -null_coefficient(z, v[:, None], b[:, None, None])[..., None] * u[:, None]
        return (x + torch.where(plus[:, None, None, None], add, null)).reshape(B, S, n_heads * d)

    return edit


def _logps(lm, group_prompt: list[int], replies: list[list[int]], edits: dict, steer_prompt: bool, pad_id: int):
    """Summed log-likelihood of each reply after the prompt, with `edits` on the reply tokens (and on the
    prompt's when steer_prompt). Returns (rows,)."""
    dev = lm.device
    ids, real = (t.to(dev) for t in pad_replies(replies, pad_id))
    R, T = ids.shape
    P = len(group_prompt)
    mask = torch.cat([torch.ones((R, P), dtype=torch.long, device=dev), real.long()], 1)
    if steer_prompt:
        with query_edits(lm, edits):
            logits = lm.model(
                input_ids=torch.cat([torch.tensor([group_prompt], device=dev).expand(R, P), ids], 1),
                attention_mask=mask,
                logits_to_keep=T + 1,
            ).logits.float()
        lp = torch.log_softmax(logits[:, :-1], -1).gather(-1, ids[..., None]).squeeze(-1)
        return (lp * real).sum(-1)
    with torch.no_grad():
        out, cache = shared_prompt(lm.model, group_prompt, R, dev)
    first = torch.log_softmax(out.logits[0, -1].float(), -1)[ids[:, 0]]
    pos = torch.arange(P, P + T, device=dev)[None].expand(R, T)
    with query_edits(lm, edits):
        logits = lm.model(
            input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache, use_cache=True
        ).logits.float()
    lp = torch.log_softmax(logits[:, :-1], -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    return (lp * real[:, 1:]).sum(-1) + first


def draw_factors(rng: random.Random, plus: torch.Tensor, factors: Sequence[float]) -> torch.Tensor:
    """One factor per row, drawn on its own from `factors` for the rows steered toward the level (the reference
    draws per example, winner and loser alike); 0 for the null rows."""
    return torch.tensor([rng.choice(factors) if p else 0.0 for p in plus.tolist()], device=plus.device)


def scaled_simpo(win, lose, ref_win, ref_lose, len_win, len_lose, scaler: float) -> torch.Tensor:
    """-log sigmoid of the scaled-SimPO logit, per pair (the reference's loss_type "scaled_simpo")."""
    w = torch.clamp_min((ref_lose - ref_win).detach() * scaler, 1.0)
    return -torch.nn.functional.logsigmoid(w * win / len_win - lose / len_lose)


@dataclass
class _RepsFit:
    """What every step of a RePS fit shares: the vectors v (levels, layers, H, K), the factor offsets b (levels,),
    and the rows of a step (per level L: concept +s, own +s', own null, concept null)."""

    lm: object
    cfg: RepsConfig
    layers: tuple[int, ...]
    banks: dict | None
    v: torch.Tensor
    b: torch.Tensor
    pad_id: int

    def __post_init__(self):
        n, dev = len(LEVELS), self.lm.device
        self.lv = torch.arange(n, device=dev).repeat_interleave(4)
        self.plus = torch.tensor([True, True, False, False] * n, device=dev)

    def edits(self, factor: torch.Tensor) -> dict:
        lm, out = self.lm, {}
        for i, layer in enumerate(self.layers):
            rows_v = self.v[self.lv, i]  # (rows, H, K)
            if self.cfg.site == "residual":
                out[(RESIDUAL, layer)] = residual_edit(rows_v[:, 0], self.b[self.lv], self.plus, factor)
            else:
                bank = self.banks[layer]
                out[layer] = sae_edit(bank, rows_v, self.b[self.lv], self.plus, factor, lm.n_heads, lm.head_dim)
        return out

    def loss(self, g: PairGroup, ref: torch.Tensor, factor: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Both preferences of every level on one pair group; each level's terms touch only its own v and b."""
        n, cfg = len(LEVELS), self.cfg
        replies = [r for L in range(n) for r in (g.concept[L], g.own, g.own, g.concept[L])]
        lp = _logps(self.lm, g.prompt, replies, self.edits(factor), cfg.positions == "all", self.pad_id).view(n, 4)
        P = len(g.prompt)
        len_c = torch.tensor([P + len(r) for r in g.concept], device=lp.device, dtype=torch.float)
        len_o = torch.full_like(len_c, P + len(g.own))
        ref_c, ref_o = ref[:n], ref[n]
        toward = scaled_simpo(lp[:, 0], lp[:, 1], ref_c, ref_o, len_c, len_o, cfg.simpo_scaler)
        away = scaled_simpo(lp[:, 2], lp[:, 3], ref_o, ref_c, len_o, len_c, cfg.simpo_scaler)
        stats = {
            "toward_margin": float((lp[:, 0] / len_c - lp[:, 1] / len_o).mean().detach()),
            "away_margin": float((lp[:, 2] / len_o - lp[:, 3] / len_c).mean().detach()),
        }
        return (toward + away).sum(), stats

    def clip(self) -> None:
        """Each level's gradient norm clipped on its own (a separate fit per level)."""
        with torch.no_grad():
            norms = (self.v.grad.flatten(1).norm(dim=1) ** 2 + self.b.grad**2).sqrt()
            scale = (self.cfg.clip / norms.clamp_min(1e-12)).clamp(max=1.0)
            self.v.grad.mul_(scale.view(-1, 1, 1, 1))
            self.b.grad.mul_(scale)


def _init_vectors(lm, cfg: RepsConfig, layers, banks) -> tuple[torch.Tensor, torch.Tensor]:
    """v from nn.Linear's default init (the reference's projection), b from 0."""
    if cfg.site == "residual":
        H, K = 1, lm.model.config.hidden_size
    else:
        if banks is None or any(layer not in banks for layer in layers):
            raise UserError("RePS at the SAE site needs the layers' SAEs")
        H, K = banks[layers[0]].sae.W_dec.shape[:2]
    gen = torch.Generator().manual_seed(cfg.seed)
    bound = 1.0 / math.sqrt(K)
    v = ((torch.rand((len(LEVELS), len(layers), H, K), generator=gen) * 2 - 1) * bound).to(lm.device)
    return v.requires_grad_(True), torch.zeros(len(LEVELS), device=lm.device, requires_grad=True)


def fit_reps(
    lm, groups: Sequence[PairGroup], cfg: RepsConfig, banks: dict | None = None, progress: bool = True, pad_id: int = 0
):
    """Fit one RePS vector per level (and layer) on the pair groups. Returns LevelOffsets (v) whose meta
    records the fit, the learned factor offsets b and the loss history's ends."""
    if not groups:
        raise UserError("RePS needs pairs: every level's instructed reply and the model's own reply on a scenario")
    layers = tuple(lm.check_layer(layer) for layer in cfg.layers)
    v, b = _init_vectors(lm, cfg, layers, banks)
    fit = _RepsFit(lm, cfg, layers, banks, v, b, pad_id)
    opt = torch.optim.AdamW([v, b], lr=cfg.lr, weight_decay=cfg.weight_decay)
    total = cfg.epochs * len(groups)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: max(0.0, 1.0 - step / total))
    for p in lm.model.parameters():
        p.requires_grad_(False)
    rng = random.Random(cfg.seed)
    with torch.no_grad():  # the unsteered model's likelihoods: the scaled-SimPO weights
        refs = [_logps(lm, g.prompt, [*g.concept, g.own], {}, False, pad_id) for g in groups]
    history, t0 = [], time.time()
    bar = tqdm(total=total, desc=f"fitting RePS ({cfg.site})", disable=not progress)
    for _ in range(cfg.epochs):
        order = list(range(len(groups)))
        rng.shuffle(order)
        for gi in order:
            loss, stats = fit.loss(groups[gi], refs[gi], draw_factors(rng, fit.plus, cfg.factors))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            fit.clip()
            opt.step()
            sched.step()
            history.append({"loss": float(loss.detach()) / len(LEVELS), **stats})
            bar.update(1)
            recent = history[-20:]
            bar.set_postfix({k: f"{sum(h[k] for h in recent) / len(recent):.3f}" for k in history[-1]})
    bar.close()
    return LevelOffsets(v.detach(), layers, _fit_record(cfg, layers, banks, v, b, history, len(groups), t0))


def _fit_record(cfg, layers, banks, v, b, history, n_groups, t0) -> dict:
    n = max(1, len(history) // 10)
    meta = {
        "fit": asdict(cfg) | {"layers": list(layers), "objective": "reps_ref"},
        "objective": "reps_ref",
        "site": cfg.site,
        "factor_bias": [round(float(x), 4) for x in b.detach()],
        "n_groups": n_groups,
        "seconds": round(time.time() - t0, 1),
        "loss_first": round(sum(h["loss"] for h in history[:n]) / n, 4),
        **{f"{k}_last": round(sum(h[k] for h in history[-n:]) / n, 4) for k in history[-1]},
        "norm_per_level": [round(float(x), 3) for x in v.detach().flatten(1).norm(dim=1)],
    }
    if cfg.site == "sae":
        meta["sae_manifests"] = {str(layer): manifest_digest(banks[layer].meta) for layer in layers}
    return meta
