"""Learned sparse offsets: per Bloom level, an offset in each steered head's SAE code, fitted on the
model's own likelihood of that level's feedbacks, contrasted with the other levels' feedbacks.

Prototype steering guesses a direction from mean codes; here the direction is fitted for what we
want, so it bounds what steering at the query site can do with this model, prompt and SAE basis.
At a steered position the query becomes q' = q + strength * W_dec^T delta_level (the code moves by
delta and is decoded; the SAE's reconstruction error is kept, as for the other SAE targets).

Each step takes one scenario (a reply of every level on the same question and answer), teacher-forces
its replies in one batch under steering, and applies one of three objectives:

- "bipo": each reply steered toward its own level and toward a level shifted by a random k; a
  preference loss on their likelihoods relative to the unsteered model (as in bi-directional
  preference optimisation of steering vectors), plus the preferred reply's per-token gain. Fitted at
  alpha 1 and used at a scale chosen afterwards (alpha 16, strength 1, for the shipped BiPO fit).
- "reps": reference-free preference steering (RePS, arXiv 2505.20809): at a strength factor s
  sampled each step, steering +s toward L must prefer L's reply over another level's, and steering
  -s along L's offset must prefer the other level's reply over L's; likelihoods are length-normalised
  and the preferred one is up-weighted by how unlikely the unsteered model finds it (the scaled
  SimPO form). The strength is inside the fit: alpha 1 is the strength it was fitted for (strength 1/16
  with the shipped BiPO scale, the learned target's unit_alpha).
- "kl": on the model's own instruction-prompted replies (`teacher`), the per-token KL from the
  prompt that names the level to the steered plain prompt, over the whole next-token distribution.

The same loop fits, with `site="residual"`, one vector per level and layer added to the decoder
layer's output instead of SAE code offsets (the field's steering-vector baseline).

The files and their loading (what generation needs) are in `offset_files`; this module is the fitting.

All add an L1 penalty, applied as a proximal step after each Adam step, so that only a few latents move.

By default only the reply tokens are steered while fitting (the generated positions at generation
time), so the prompt is read once per scenario without gradients and its KV cache is shared by all
rows; `positions="all"` steers the prompt too (each row's whole sequence runs under its own steering),
for offsets used at positions "all".
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..bloom import LEVELS, FeedbackExample
from ..errors import UserError
from ..model.hooks import RESIDUAL, query_edits
from ..model.small_batch import bf16_products
from ..prompts import DEFAULT_STYLE, FEEDBACK_TOKENS, instruction_messages, messages, pad_replies, render
from ..sae.store import STORE
from ..steering.config import DEFAULT_LAYERS, SteerConfig
from ..steering.edits import RowGroup, make_layer_edit, make_residual_edit
from ..steering.offset_files import (  # noqa: F401  (the file side, re-exported for callers of the fitting)
    OFFSETS_CFG,
    OFFSETS_FILE,
    SITES,
    LevelOffsets,
    OffsetsFileError,
    load_offsets,
    manifest_digest,
    offsets_roots,
)
from .sae_training import ensure_trained, refit_prototypes
from .shared_prompt import replies_loglik, shared_prompt

OBJECTIVES = ("bipo", "reps", "kl")
PRECISIONS = ("float32", "bfloat16")
FIT_POSITIONS = ("generated", "all")  # where the fit steers: the reply only, or the prompt too


@dataclass(frozen=True)
class OffsetFitConfig:
    """How to fit the offsets; stored with them."""

    layers: tuple[int, ...] = DEFAULT_LAYERS
    epochs: int = 4
    # Adam moves every coordinate by about lr per step whatever its gradient, and a decoder row has
    # norm ~14 against queries of norm ~14: 0.01 scrambled the queries of 14 layers at once (the
    # chosen reply's likelihood fell by 1.4-2.2 nats a token); 0.002 keeps it fluent.
    lr: float = 0.002
    beta: float = 0.1  # preference temperature on summed log-likelihoods
    l1: float = 0.5  # proximal L1: each step shrinks every offset by lr * l1, so only latents with a
    # consistent gradient move (Adam steps are ~lr in size whatever the gradient's scale)
    sft: float = 1.0  # weight of the chosen reply's per-token likelihood gain, so that the preference
    # margin is not bought by making every reply less likely
    max_feedback_tokens: int = FEEDBACK_TOKENS  # the level shows early; later tokens cost time, not signal
    seed: int = 0
    style: str = DEFAULT_STYLE
    objective: str = "bipo"  # see OBJECTIVES
    # RePS: the strength factors sampled each step; alpha 1 then means the offsets as fitted
    factors: tuple[float, ...] = (0.5, 1.0, 1.5)
    simpo_scaler: float = 1.0  # RePS: weight on how much less likely the preferred reply is unsteered
    # "sae": offsets of each head's SAE code (the paper's site); "residual": one vector per level and
    # layer added to the decoder layer's output (the standard steering-vector site, as a baseline)
    site: str = "sae"
    # "generated": only the reply's tokens are steered while fitting (the prompt's KV cache is shared,
    # read once without gradients); "all": the prompt's too, for steering at positions "all"
    positions: str = "generated"
    # each token's coefficient on its level's edit read from its own activation (edits.token_coefficients): a gate per
    # level and layer (per head at the SAE site, read from its query) fitted with the offsets; False: constant
    per_token: bool = False
    init: str | None = None  # a fit's folder of the same site to start from (its offsets, and gate if it has one)
    # "bfloat16": the model's Linear products in bfloat16 while fitting (small_batch.bf16_products), about 1.5x
    # faster a step on a CPU with bfloat16 dot products, but less accurate on validation (docs/performance.md)
    precision: str = "float32"
    # the fitted offsets are multiplied by this before they are saved: the size at which strength 1 (alpha 16)
    # reads the setting chosen on validation (prepare's shorter-reply fit: 0.75, docs/performance.md)
    scale: float = 1.0

    def __post_init__(self):
        if not self.layers:
            raise UserError("choose at least one layer to fit offsets for")
        if self.site not in SITES:
            raise UserError(f"site must be one of {', '.join(SITES)}, got {self.site!r}")
        if self.positions not in FIT_POSITIONS:
            raise UserError(f"positions must be one of {', '.join(FIT_POSITIONS)}, got {self.positions!r}")
        if self.objective not in OBJECTIVES:
            raise UserError(f"objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}")
        if self.precision not in PRECISIONS:
            raise UserError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        for name in ("lr", "beta", "l1", "sft", "simpo_scaler", "scale"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not v >= 0:
                raise UserError(f"{name} must be a number >= 0, got {v!r}")
        if not self.factors or not all(isinstance(f, (int, float)) and f > 0 for f in self.factors):
            raise UserError(f"factors must be numbers > 0, got {self.factors!r}")
        if self.epochs < 1 or self.max_feedback_tokens < 2:
            raise UserError("epochs must be >= 1 and max_feedback_tokens >= 2")


def offset_edits(
    offsets: LevelOffsets | torch.Tensor,
    layers: Sequence[int],
    banks: dict | None,
    levels: torch.Tensor,
    n_heads: int,
    head_dim: int,
    scale: float = 1.0,
    site: str = "sae",
    gate: torch.Tensor | None = None,
) -> dict:
    """Edits that steer row r toward levels[r] with the offsets times `scale` (their own units: 1 = as
    fitted, not a strength), built by the same code that steers at generation time (target "learned",
    every head; the caller's forward is the generated phase).
    offsets: LevelOffsets, or a (levels, layers, heads, d_sae) tensor being fitted ((levels, layers, 1,
    hidden) at the residual site, where banks may be None); gate: a per-token fit's (levels, layers, hidden + 1),
    or (levels, layers, heads, head_dim + 1) at the SAE site (taken from `offsets` when it is LevelOffsets),
    repeated when the offsets have more levels (RePS's +delta and -delta share it)."""
    delta = offsets.delta if isinstance(offsets, LevelOffsets) else offsets
    if isinstance(offsets, LevelOffsets):
        gate = offsets.gate
    if gate is not None and gate.shape[0] != delta.shape[0]:  # RePS: +delta and -delta share the gate
        gate = gate.repeat(delta.shape[0] // gate.shape[0], *([1] * (gate.dim() - 1)))
    rows = torch.arange(len(levels), device=levels.device)
    if site == "residual":
        cfg = SteerConfig(
            method="residual", layers=tuple(layers), strength=SteerConfig.strength_for("learned", scale, "residual")
        )
        return {
            (RESIDUAL, layer): make_residual_edit(
                [RowGroup(rows, levels, cfg, None, None, delta[:, i, 0], None if gate is None else gate[:, i])],
                "generated",
            )
            for i, layer in enumerate(layers)
        }
    cfg = SteerConfig(method="sae", layers=tuple(layers), strength=SteerConfig.strength_for("learned", scale))
    return {
        layer: make_layer_edit(
            [RowGroup(rows, levels, cfg, banks[layer], None, delta[:, i], None if gate is None else gate[:, i])],
            "generated",
            n_heads,
            head_dim,
        )
        for i, layer in enumerate(layers)
    }


@dataclass
class EncodedScenario:
    prompt: list[int]
    replies: list[list[int]]  # one token list per level, in LEVELS order
    # objective "kl": the instruction prompt naming each level, in LEVELS order (the teacher's context)
    teacher_prompts: list[list[int]] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)  # each reply's index in the rows it was encoded from


def _encode_scenarios(
    tok, rows: Sequence[FeedbackExample], style: str, max_tokens: int, teacher_prompts: bool = False
) -> list[EncodedScenario]:
    by_sc: dict[tuple[str, int], dict[str, FeedbackExample]] = {}
    index = {}
    for i, r in enumerate(rows):  # a group: one scenario's replies of every level (one sample of each: teacher data)
        by_sc.setdefault((r.scenario_id, r.sample), {})[r.level] = r
        index[id(r)] = i
    out = []
    for levels in by_sc.values():
        if len(levels) != len(LEVELS):  # the contrast needs every level's reply on the same scenario
            continue
        first = levels[LEVELS[0]]
        prompt, start = render(tok, messages(first.question, first.student_answer, style))
        replies = []
        for lv in LEVELS:
            ids, start = render(tok, messages(first.question, first.student_answer, style), levels[lv].feedback)
            replies.append(ids[start:][:max_tokens])
        teachers = []
        if teacher_prompts:
            teachers = [
                render(tok, instruction_messages(first.question, first.student_answer, lv, style))[0] for lv in LEVELS
            ]
        out.append(EncodedScenario(prompt, replies, teachers, [index[id(levels[lv])] for lv in LEVELS]))
    return out


def _reply_logits(
    lm,
    sc: EncodedScenario,
    edits: dict,
    n_rows_per_reply: int,
    pad_id: int = 0,
    steer_prompt: bool = False,
    memo: dict | None = None,
):
    """Teacher-force the replies (rows = replies repeated n_rows_per_reply times) after the shared
    prompt, with `edits` active on the reply tokens, and on the prompt's too when steer_prompt.
    Returns (first, logits, ids, real): the log-probabilities of each row's first reply token (R, V),
    the logits at every reply position (R, T, V), the reply ids (R, T) and which of them are real (R, T).
    memo: the fit's dict of prompts already read (shared_prompt)."""
    dev = lm.device
    replies = sc.replies * n_rows_per_reply
    ids, real = (t.to(dev) for t in pad_replies(replies, pad_id))
    R, T = ids.shape
    P = len(sc.prompt)
    mask = torch.cat([torch.ones((R, P), dtype=torch.long, device=dev), real.long()], dim=1)
    if steer_prompt:  # each row's prompt is steered toward its own level: one full forward per row
        with query_edits(lm, edits):
            out = lm.model(
                input_ids=torch.cat([torch.tensor([sc.prompt], device=dev).expand(R, P), ids], 1),
                attention_mask=mask,
                logits_to_keep=T + 1,
            ).logits.float()
        return torch.log_softmax(out[:, 0], -1), out[:, 1:], ids, real
    with torch.no_grad():  # the prompt is not steered: read once, its keys and values shared by every row
        out, cache = shared_prompt(lm.model, sc.prompt, R, dev, memo)
    first = torch.log_softmax(out.logits[0, -1].float(), -1).expand(R, -1)  # each reply's first token, unsteered
    pos = torch.arange(P, P + T, device=dev)[None].expand(R, T)
    with query_edits(lm, edits):
        logits = lm.model(
            input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache, use_cache=True
        ).logits.float()
    return first, logits, ids, real


def _reply_logprobs(
    lm,
    sc: EncodedScenario,
    edits: dict,
    n_rows_per_reply: int,
    pad_id: int = 0,
    steer_prompt: bool = False,
    memo: dict | None = None,
) -> torch.Tensor:
    """Summed log-likelihood of each reply (see _reply_logits). Returns (rows,)."""
    first, logits, ids, real = _reply_logits(lm, sc, edits, n_rows_per_reply, pad_id, steer_prompt, memo)
    return replies_loglik(first, logits[:, :-1], ids, real)


@torch.no_grad()
def _teacher_logprobs(lm, sc: EncodedScenario, pad_id: int = 0) -> torch.Tensor:
    """The instruction-prompted model's next-token log-probabilities along each level's reply, under
    the prompt that names that level: (levels, T - 1, V), aligned with _reply_logits' logits[:, :-1]."""
    seqs = [tp + r for tp, r in zip(sc.teacher_prompts, sc.replies)]
    ids, real = (t.to(lm.device) for t in pad_replies(seqs, pad_id))
    logits = lm.model(input_ids=ids, attention_mask=real.long(), use_cache=False).logits.float()
    T = max(len(r) for r in sc.replies)
    at = torch.tensor([len(tp) for tp in sc.teacher_prompts], device=lm.device)[:, None] + torch.arange(
        T - 1, device=lm.device
    )
    at = at.clamp_max(ids.shape[1] - 1)  # past a short reply's end: padding, masked by the caller
    return torch.log_softmax(logits.gather(1, at[..., None].expand(-1, -1, logits.shape[-1])), -1)


@dataclass
class _ScenarioForward:
    """What a loss may ask of one scenario under steering by a (levels', layers, heads, d_sae) tensor."""

    lm: object
    sc: EncodedScenario
    layers: tuple[int, ...]
    banks: dict | None
    pad_id: int = 0
    site: str = "sae"
    steer_prompt: bool = False
    gate: torch.Tensor | None = None  # per-token fits: the gate fitted alongside (see _fitted_tensors for its shape)
    memo: dict | None = None  # the fit's prompts already read (shared_prompt)

    def edits(self, steer: torch.Tensor, levels: torch.Tensor) -> dict:
        lm = self.lm
        return offset_edits(
            steer, self.layers, self.banks, levels, lm.n_heads, lm.head_dim, site=self.site, gate=self.gate
        )

    def logprobs(self, steer: torch.Tensor, levels: torch.Tensor, blocks: int) -> torch.Tensor:
        """(blocks, levels) log-likelihoods of the replies, row i steered by steer[levels[i]]."""
        edits = self.edits(steer, levels)
        lp = _reply_logprobs(self.lm, self.sc, edits, blocks, self.pad_id, self.steer_prompt, self.memo)
        return lp.view(blocks, len(LEVELS))

    def kl_to_teacher(self, steer: torch.Tensor) -> torch.Tensor:
        """(levels,) mean per-token KL(teacher || steered) along each level's reply, reply L steered by steer[L]."""
        lv = torch.arange(len(LEVELS), device=steer.device)
        edits = self.edits(steer, lv)
        _, logits, _, real = _reply_logits(self.lm, self.sc, edits, 1, self.pad_id, self.steer_prompt, self.memo)
        student = torch.log_softmax(logits[:, :-1], -1)
        teacher = _teacher_logprobs(self.lm, self.sc, self.pad_id)
        kl = (teacher.exp() * (teacher - student)).sum(-1)
        w = real[:, 1:].float()
        return (kl * w).sum(-1) / w.sum(-1).clamp_min(1)


def _bipo_loss(fwd, delta, ref, length, k, factor, cfg):
    """Each reply steered toward its own level (block 0) and toward the level k above (block 1):
    for target L, L's reply against L-k's reply, both steered toward L, gains over the unsteered model."""
    n = len(LEVELS)
    lv = torch.arange(n, device=delta.device)
    gain = fwd.logprobs(delta, torch.cat([lv, (lv + k) % n]), 2) - ref
    chosen = gain[0]  # reply L steered toward L
    rejected = gain[1][(lv - k) % n]  # reply L-k steered toward L
    loss = -torch.nn.functional.logsigmoid(cfg.beta * (chosen - rejected)).mean()
    loss = loss - cfg.sft * (chosen / length).mean()
    return loss, {"margin": (chosen - rejected).mean(), "chosen_gain_per_token": (chosen / length).mean()}


def reps_logits(pref: torch.Tensor, disp: torch.Tensor, ref_pref, ref_disp, len_pref, len_disp, scaler: float):
    """RePS's scaled-SimPO preference logit (arXiv 2505.20809): length-normalised log-likelihoods
    under the intervention, the preferred one up-weighted by max(scaler * (ref_disp - ref_pref), 1),
    i.e. by how much less likely the unsteered model finds it; no reference term in the difference."""
    weight = torch.clamp_min((ref_disp - ref_pref).detach() * scaler, 1.0)
    return weight * pref / len_pref - disp / len_disp


def _reps_loss(fwd, delta, ref, length, k, factor, cfg):
    """Four blocks of the scenario's replies, row j of each steered by:
    0: +factor toward j; 1: +factor toward j+k; 2: -factor along j+k's offset; 3: -factor along j's.
    For target L (other = L-k): steering toward L prefers L's reply to other's (blocks 0 and 1), and
    steering against L prefers other's reply to L's (blocks 2 and 3)."""
    n = len(LEVELS)
    lv = torch.arange(n, device=delta.device)
    other = (lv - k) % n
    signed = torch.cat([factor * delta, -factor * delta])  # levels 0..5: toward L; 6..11: against L
    lp = fwd.logprobs(signed, torch.cat([lv, (lv + k) % n, n + (lv + k) % n, n + lv]), 4)
    pos = reps_logits(lp[0], lp[1][other], ref, ref[other], length, length[other], cfg.simpo_scaler)
    neg = reps_logits(lp[2][other], lp[3], ref[other], ref, length[other], length, cfg.simpo_scaler)
    F = torch.nn.functional
    loss = -(F.logsigmoid(pos) + F.logsigmoid(neg)).mean()
    return loss, {"margin": (lp[0] - lp[1][other]).mean(), "chosen_gain_per_token": ((lp[0] - ref) / length).mean()}


def _kl_loss(fwd, delta, ref, length, k, factor, cfg):
    """Dense distillation from the teacher: along each level's (teacher-written) reply, the plain
    prompt steered toward that level should predict every next token as the prompt naming the level
    does. Uses the whole next-token distribution, not just the sampled token."""
    kl = fwd.kl_to_teacher(delta)
    return kl.mean(), {"kl_per_token": kl.mean()}


LOSSES = {"bipo": _bipo_loss, "reps": _reps_loss, "kl": _kl_loss}


def fit_offsets(
    lm,
    rows: Sequence[FeedbackExample],
    cfg: OffsetFitConfig | None = None,
    banks: dict | None = None,
    progress: bool = True,
    reference: torch.Tensor | None = None,
) -> LevelOffsets:
    """Fit LevelOffsets for cfg.layers on `rows` (train-split feedbacks, all six levels per scenario). reference:
    (rows,) the unsteered log-likelihood of each row's first max_feedback_tokens feedback tokens, when already read
    (prepare's capture); else the fit reads them."""
    cfg = cfg or OffsetFitConfig()
    layers = tuple(lm.check_layer(layer) for layer in cfg.layers)
    if banks is None and cfg.site == "sae":
        banks = ensure_trained(lm, layers, style=cfg.style, progress=progress)
    scenarios = _encode_scenarios(
        lm.tokenizer, rows, cfg.style, cfg.max_feedback_tokens, teacher_prompts=cfg.objective == "kl"
    )
    if not scenarios:
        raise UserError("fitting offsets needs scenarios with a feedback at every one of the six levels")
    ref = None if reference is None else [reference[sc.rows].to(lm.device, torch.float32) for sc in scenarios]
    out = fit_encoded(lm, scenarios, cfg, banks, lm.tokenizer.pad_token_id or 0, progress, ref)
    out.meta["scenario_ids"] = sorted({r.scenario_id for r in rows})
    return out


def fit_encoded(
    lm,
    scenarios: Sequence[EncodedScenario],
    cfg: OffsetFitConfig,
    banks: dict,
    pad_id: int = 0,
    progress: bool = True,
    ref: list[torch.Tensor] | None = None,
) -> LevelOffsets:
    """The fitting loop on tokenized scenarios (prompt ids + one reply per level), at cfg.precision. ref: each
    scenario's unsteered reply likelihoods (levels,), when already read."""
    with bf16_products(lm.model) if cfg.precision == "bfloat16" else contextlib.nullcontext():
        return _fit_loop(lm, scenarios, cfg, banks, pad_id, progress, ref)


def _fit_loop(lm, scenarios, cfg: OffsetFitConfig, banks: dict, pad_id: int, progress: bool, ref) -> LevelOffsets:
    layers = tuple(cfg.layers)
    n_lv = len(LEVELS)
    delta, gate = _fitted_tensors(lm, cfg, banks)
    opt = torch.optim.Adam([t for t in (delta, gate) if t is not None], lr=cfg.lr)
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    for p in lm.model.parameters():
        p.requires_grad_(False)

    if cfg.objective == "kl" and not all(len(sc.teacher_prompts) == n_lv for sc in scenarios):
        raise UserError("objective 'kl' needs each scenario's instruction prompts (the teacher's context)")
    memo: dict = {}  # each scenario's prompt is read once (unsteered, without gradients) for all passes
    if cfg.objective == "kl":
        ref = [None] * len(scenarios)
    elif ref is None:
        ref = _references(lm, scenarios, pad_id, memo, progress)

    lengths = [torch.tensor([len(r) for r in sc.replies], device=lm.device, dtype=torch.float) for sc in scenarios]
    step_loss = LOSSES[cfg.objective]
    history, t0 = [], time.time()
    bar = tqdm(total=cfg.epochs * len(scenarios), desc=f"fitting offsets ({cfg.objective})", disable=not progress)
    for _ in range(cfg.epochs):
        order = list(range(len(scenarios)))
        rng.shuffle(order)
        for s in order:
            k = rng.randrange(1, n_lv)  # the contrasted level: L - k
            factor = rng.choice(cfg.factors) if cfg.objective == "reps" else 1.0  # bipo, kl: fitted at 1
            fwd = _ScenarioForward(
                lm, scenarios[s], layers, banks, pad_id, cfg.site, cfg.positions == "all", gate, memo
            )  # fmt: skip
            loss, stats = step_loss(fwd, delta, ref[s], lengths[s], k, factor, cfg)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():  # proximal L1: soft-threshold, exact zeros
                delta.copy_(torch.sign(delta) * torch.relu(delta.abs() - cfg.lr * cfg.l1))
            history.append({"loss": float(loss.detach()), **{name: float(v.detach()) for name, v in stats.items()}})
            bar.update(1)
            recent = history[-20:]
            bar.set_postfix({name: f"{sum(h[name] for h in recent) / len(recent):.3f}" for name in history[-1]})
    bar.close()
    n = max(1, len(history) // 10)
    meta = {
        "fit": asdict(cfg) | {"layers": list(layers)},
        "n_scenarios": len(scenarios),
        "seconds": round(time.time() - t0, 1),
        "loss_first": round(sum(h["loss"] for h in history[:n]) / n, 4),
        **{f"{name}_last": round(sum(h[name] for h in history[-n:]) / n, 4) for name in history[-1]},
        "site": cfg.site,
    }
    if cfg.site == "sae":
        meta["sae_manifests"] = {str(layer): manifest_digest(banks[layer].meta) for layer in layers}
    if gate is not None:
        meta["form"] = "per_token"
    out = LevelOffsets(delta.detach() * cfg.scale, layers, meta, None if gate is None else gate.detach())
    out.meta.update(out.sparsity())
    return out


@torch.no_grad()
def _references(lm, scenarios, pad_id: int, memo: dict, progress: bool) -> list[torch.Tensor]:
    """The unsteered model's likelihood of every reply: what the preference objectives measure gains against."""
    return [
        _reply_logprobs(lm, sc, {}, 1, pad_id, memo=memo)
        for sc in tqdm(scenarios, desc="reference", disable=not progress)
    ]


def _fitted_tensors(lm, cfg: OffsetFitConfig, banks: dict | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The tensors the fit moves: the offsets (levels, layers, heads, d_sae), or (levels, layers, 1, hidden) at
    the residual site, and a per-token fit's gate (levels, layers, hidden + 1), or (levels, layers, heads,
    head_dim + 1) at the SAE site; zero, or cfg.init's."""
    layers = tuple(cfg.layers)
    H, K = (1, lm.model.config.hidden_size) if cfg.site == "residual" else banks[layers[0]].sae.W_dec.shape[:2]
    delta = torch.zeros((len(LEVELS), len(layers), H, K), device=lm.device)
    read = (K + 1,) if cfg.site == "residual" else (H, lm.head_dim + 1)  # what each coefficient is read from
    gate = torch.zeros((len(LEVELS), len(layers), *read), device=lm.device) if cfg.per_token else None
    if cfg.init:
        _start_from(LevelOffsets.load(cfg.init, lm.device), layers, delta, gate)
    return delta.requires_grad_(True), None if gate is None else gate.requires_grad_(True)


def _start_from(init: LevelOffsets, layers: tuple[int, ...], delta: torch.Tensor, gate: torch.Tensor | None) -> None:
    """Copy a fit's offsets (and gate) into the tensors about to be fitted, layer by layer."""
    if init.delta.shape[2:] != delta.shape[2:]:
        shape = tuple(init.delta.shape)
        raise UserError(f"--init: that fit's offsets ({init.site}, {shape}) are not of this site's shape")
    with torch.no_grad():
        for i, layer in enumerate(layers):
            init.for_layer(layer)  # says so when that fit has no such layer
            delta[:, i] = init.delta[:, init.layers.index(layer)]
            if gate is not None and init.gate is not None:
                gate[:, i] = init.gate_for_layer(layer)


def fit_fold(lm, rows, fit_rows, cfg: OffsetFitConfig, out: Path, progress: bool = True) -> tuple[LevelOffsets, Path]:
    """A cross-writer fold: the model's SAEs with prototypes recomputed from `rows` only, written to
    out/saes (steer with them through --saes), and offsets fitted on `fit_rows` against those SAEs.
    Returns the offsets and out/offsets, where they belong."""
    banks = ensure_trained(lm, cfg.layers, style=cfg.style, progress=progress)
    saes = refit_prototypes(lm, banks, rows, Path(out) / "saes", style=cfg.style)
    banks = STORE.get_many(lm, cfg.layers, style=cfg.style, root=saes)
    return fit_offsets(lm, fit_rows, cfg, banks=banks, progress=progress), Path(out) / "offsets"
