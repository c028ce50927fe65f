"""The edits steering makes while the model runs: of a layer's queries at q_proj (the SAE codes' targets,
query steering, mean difference) and of a decoder layer's output (the residual-stream vector), for the
rows of a batch, grouped by config. Whole tensors of shape (rows, positions, heads, dim); which positions
a config steers, and how hard, is SteerConfig.segments; what each target does, the targets registry.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace

import torch

from .. import methods
from ..model.hooks import FIXED_SHIFT
from ..sae.layer_files import LayerSAEs
from ..sae.module import HeadSAEs
from .config import SteerConfig
from .descent import closed_form_codes, l2_closed_form, query_descent
from .targets import CodeEdit, Target


def steer_codes(
    bank: LayerSAEs,
    z0: torch.Tensor,
    levels: torch.Tensor,
    heads: torch.Tensor | None,
    cfg: SteerConfig,
    offsets: torch.Tensor | None = None,
    trace_to: torch.Tensor | None = None,
):
    """The SAE method's edit of sparse codes z0 (rows, seq, heads, K) toward `levels` (rows,), by the config's
    target (used by generation and by the latent view alike); with trace_to see Target.edit_codes."""
    return cfg.target_spec.edit_codes(CodeEdit(bank, z0, levels, heads, cfg, offsets), trace_to)


def _level_queries(bank: LayerSAEs, levels: torch.Tensor, heads: torch.Tensor | None):
    """(rows, 1, heads, D) each row's level mean query, and (heads, D) the mean over levels."""
    pick = (lambda t, d: t) if heads is None else (lambda t, d: t.index_select(d, heads))
    return pick(bank.queries.index_select(0, levels), 1)[:, None], pick(bank.query_all, 0)


def steer_rows(
    bank: LayerSAEs,
    x: torch.Tensor,
    levels: torch.Tensor,
    heads: torch.Tensor | None,
    cfg: SteerConfig,
    offsets: torch.Tensor | None = None,
) -> torch.Tensor:
    """x: (rows, seq, heads, head_dim) queries of the chosen heads (None = all heads); levels:
    (rows,) target level indices; offsets: this layer's (levels, heads, d_sae) learned offsets
    (targets that need them). Returns the steered queries, same shape."""
    if cfg.strength == 0:  # off, exactly (a descent to the token's own code would round)
        return x
    spec, site = cfg.target_spec, cfg.site
    if site == methods.CODES:
        c = CodeEdit(bank, None, levels, heads, cfg, offsets)
        if spec.code_offset is not None:  # a fixed code offset decodes to a fixed query shift: no encode
            return x + (cfg.alpha * decode(bank, spec.code_offset(c), heads))[:, None].to(x.dtype)
        weights = bank.sae.weights(heads)
        z0 = bank.sae.encode_with(x, weights)
        return _code_change(x, spec.edit_codes(replace(c, z0=z0)), z0, weights[2])
    point, mean = _level_queries(bank, levels, heads)
    if site == methods.QUERY_SHIFT:  # no descent: the level's mean query minus the mean, added
        return x + cfg.alpha * (point - mean)
    goal = spec.goal(x, point, mean, cfg.alpha)  # raw queries: the same descent on the query itself
    return query_descent(x, goal, cfg.steps, cfg.lr, cfg.mu, cfg.distance)


def _code_change(x: torch.Tensor, z: torch.Tensor, z0: torch.Tensor, W_dec: torch.Tensor) -> torch.Tensor:
    """The queries x with the change from codes z0 to z decoded onto them: the reconstruction error is kept."""
    return x + torch.einsum("rshk,hkd->rshd", z - z0, W_dec).to(x.dtype)


@dataclass
class PointDescent:
    """steer_rows for one row group whose target descends in l2 to a point (the paper's prototype, delta) in closed
    form, with what is the same at every call made once: the heads' weights, the rows' level points, the closed
    form's constants. The same operations on the same values, so the same bits (tests/test_engine.py), in about
    0.6 of the time: it runs at every steered layer of every decoding step. The closed form's check that no code
    is below zero is left out: codes come out of encode's relu."""

    sae: HeadSAEs
    spec: Target  # the target's registry entry
    weights: tuple[torch.Tensor, ...]  # sae.weights(heads)
    point: torch.Tensor
    mean: torch.Tensor
    alpha: float
    lr: float
    mu: float
    form: tuple[float, float]

    @classmethod
    def of(cls, g: RowGroup) -> PointDescent | None:
        """The group's descent made ready, or None where steer_rows must run (another site or target, a cosine
        distance, no steps, or a step size too large for the closed form)."""
        cfg, spec = g.cfg, g.cfg.target_spec
        if cfg.site != methods.CODES or cfg.strength == 0 or spec.goal is None or cfg.distance != "l2":
            return None
        form = l2_closed_form(cfg.steps, cfg.lr, cfg.mu) if cfg.steps > 0 else None
        if form is None:
            return None
        c = CodeEdit(g.bank, None, g.levels, g.heads, cfg, g.offsets)
        return cls(g.bank.sae, spec, g.bank.sae.weights(g.heads), c.prototypes, c.mean_prototype, cfg.alpha,
                   cfg.lr, cfg.mu, form)  # fmt: skip

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        z0 = self.sae.encode_with(x, self.weights)
        z = closed_form_codes(z0, self.spec.goal(z0, self.point, self.mean, self.alpha), self.lr, self.mu, self.form)
        return _code_change(x, z, z0, self.weights[2])


def decode(bank: LayerSAEs, codes: torch.Tensor, heads: torch.Tensor | None) -> torch.Tensor:
    """(rows, heads, head_dim): per-row code vectors (rows, heads, d_sae) through the decoder, without its bias:
    the query shift a fixed code offset makes (decode(z0 + o) - decode(z0), the same at every token)."""
    W_dec = bank.sae.weights(heads)[2]
    return torch.einsum("rhk,hkd->rhd", codes.to(W_dec.dtype), W_dec)


@dataclass
class RowGroup:
    """Rows of a batch that share one SteerConfig and prompt style (target levels may differ).
    Tensors live on the model's device; heads is None when every head is steered."""

    rows: torch.Tensor
    levels: torch.Tensor
    cfg: SteerConfig
    bank: LayerSAEs | None = None  # None for the residual-stream baseline, which needs no SAE
    heads: torch.Tensor | None = None
    offsets: torch.Tensor | None = None  # (levels, heads, d_sae) learned offsets; residual: (levels, hidden)
    # per-token fits (token_coefficients): (levels, hidden + 1) at the residual site, (levels, heads, head_dim + 1)
    # at the SAE site (a learned code offset's coefficient read from each head's query)
    gate: torch.Tensor | None = None


def constant_shift(g: RowGroup) -> torch.Tensor | None:
    """(rows, heads, head_dim): the vector this group's edit adds to every query, when the edit does
    not depend on the query (a target's fixed code offset decodes to a fixed shift; mean difference;
    query steering toward the token's own query plus a fixed vector, whose closed form is
    x + alpha d (1 - c^T) / (1 + mu)); None otherwise."""
    cfg, spec = g.cfg, g.cfg.target_spec
    if cfg.site == methods.CODES:
        if spec.code_offset is None or (spec.needs_offsets and g.offsets is None):
            return None
        return cfg.alpha * decode(
            g.bank, spec.code_offset(CodeEdit(g.bank, None, g.levels, g.heads, cfg, g.offsets)), g.heads
        )
    if cfg.site not in (methods.QUERY_SHIFT, methods.QUERIES):
        return None
    pick = (lambda t, d: t) if g.heads is None else (lambda t, d: t.index_select(d, g.heads))
    diff = pick(g.bank.queries.index_select(0, g.levels) - g.bank.query_all, 1)
    if cfg.site == methods.QUERY_SHIFT:
        return cfg.alpha * diff
    if spec.shifts and cfg.distance == "l2" and cfg.steps > 0:
        c = 1.0 - 2.0 * cfg.lr * (1.0 + cfg.mu)
        if 0.0 <= c < 1.0:  # where the descent takes its closed form too
            return (cfg.alpha * (1.0 - c**cfg.steps) / (1.0 + cfg.mu)) * diff
    return None


@dataclass
class _Part:
    """One group's positions [a, b) of a forward (b None: to its end), and how they are steered: a fixed shift
    (rows, heads, head_dim), else the group's descent made ready (PointDescent, on its first call: a schedule's
    edits are made again at every step, and a part a forward never reaches is never made ready), else steer_rows."""

    a: int
    b: int | None
    g: RowGroup
    shift: torch.Tensor | None

    @functools.cached_property
    def descent(self) -> PointDescent | None:
        return None if self.shift is not None else PointDescent.of(self.g)

    def steered(self, x: torch.Tensor) -> torch.Tensor:
        """The group's queries x steered by an edit that is not a fixed shift."""
        g = self.g
        if self.descent is not None:
            return self.descent(x)
        return steer_rows(g.bank, x, g.levels, g.heads, g.cfg, g.offsets)

    @functools.cached_property
    def whole(self) -> bool:
        """It steers every row in order, every head and position, by neither a shift nor a gate: alone, its
        steered queries are the edit's whole output (no copying them out and back). Only on the CPU, where those
        copies cost most and reading the rows waits for no device."""
        g = self.g
        plain = self.shift is None and g.heads is None and g.gate is None and g.rows.device.type == "cpu"
        return (self.a, self.b) == (0, None) and plain and g.rows.tolist() == list(range(len(g.rows)))

    def apply(self, out: torch.Tensor) -> None:
        """Steer its rows, heads and positions of out (rows, seq, heads, head_dim) in place."""
        g, S = self.g, out.shape[1]
        lo, hi = min(self.a, S), S if self.b is None else min(S, self.b)
        if lo >= hi:
            return
        block = out.index_select(0, g.rows)[:, lo:hi]
        x = block if g.heads is None else block.index_select(2, g.heads)
        if self.shift is not None and g.gate is not None:  # a fixed shift, times each head's own coefficient
            gate = g.gate.index_select(0, g.levels)
            gate = gate if g.heads is None else gate.index_select(1, g.heads)
            new = x + self.shift[:, None].to(x.dtype) * token_coefficients(x, gate)[..., None].to(x.dtype)
        elif self.shift is not None:
            new = x + self.shift[:, None].to(x.dtype)
        else:
            new = self.steered(x).to(block.dtype)
        if g.heads is None:
            block = new
        else:
            block[:, :, g.heads] = new
        out[g.rows, lo:hi] = block


def make_layer_edit(groups: list[RowGroup], phase: str, n_heads: int, head_dim: int, start: int = 0):
    """The q_proj edit for one layer and one kind of forward (phase 'prompt' or 'generated'; start: see
    SteerConfig.steered_count), or None when no group steers any of its positions. Groups whose edit
    is a fixed shift at every position become one dense (batch, heads x dim) add, built once per
    batch size; the others edit their rows' queries, segment by segment (SteerConfig.segments)."""
    live = [(g, segs) for g in groups if (segs := g.cfg.segments(phase, start))]
    if not live:
        return None
    everywhere, rest = [], []
    for g, segs in live:
        parts = [(a, b, (g if cfg is g.cfg else replace(g, cfg=cfg))) for a, b, cfg in segs]
        shifts = [(a, b, part, constant_shift(part)) for a, b, part in parts]
        if len(shifts) == 1 and shifts[0][:2] == (0, None) and shifts[0][3] is not None and g.gate is None:
            everywhere.append((g, shifts[0][3]))
        else:
            rest += [_Part(a, b, part, s) for a, b, part, s in shifts]
    whole = rest[0] if len(rest) == 1 and not everywhere else None  # used where it is whole (_Part.whole)
    dense: dict[tuple, torch.Tensor] = {}

    def shift(rows: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """(rows, 1, heads x dim): what the fixed-shift groups add at every position, built once a batch size."""
        key = (rows, dtype, device)
        if key not in dense:
            d = torch.zeros(rows, n_heads, head_dim, dtype=dtype, device=device)
            for g, s in everywhere:
                heads = torch.arange(n_heads, device=device) if g.heads is None else g.heads
                d[g.rows[:, None], heads] = s.to(dtype)
            dense[key] = d.view(rows, 1, n_heads * head_dim)
        return dense[key]

    def edit(q: torch.Tensor) -> torch.Tensor:
        B, S, _ = q.shape
        if everywhere:
            q = q + shift(B, q.dtype, q.device)
        if not rest:
            return q
        if whole is not None and B == len(whole.g.rows) and whole.whole:
            return whole.steered(q.view(B, S, n_heads, head_dim)).to(q.dtype).view(B, S, n_heads * head_dim)
        out = q.view(B, S, n_heads, head_dim).clone()
        for part in rest:
            part.apply(out)
        return out.view(B, S, n_heads * head_dim)

    if not rest:  # the same add at every position: the lean decoding step makes it without calling back
        setattr(edit, FIXED_SHIFT, shift)
    return edit


def token_coefficients(h: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    """Per-token coefficients on each row's level edit, read from the token's own activation: softplus(w .
    rmsnorm(h) / sqrt(d) + b) / ln 2. h: (rows, seq, d) a layer's output, or (rows, seq, heads, d) queries;
    gate: the row's level's (w, b), (rows, d + 1) or (rows, heads, d + 1). Returns h's shape without d. A zero
    gate gives 1 at every token: the constant edit it was fitted from."""
    d = h.shape[-1]
    g = gate.unsqueeze(1).float()  # the same gate at every position
    n = h.float() * torch.rsqrt(h.float().pow(2).mean(-1, keepdim=True) + 1e-6)
    z = (n * g[..., :d]).sum(-1) / d**0.5 + g[..., d]
    return torch.nn.functional.softplus(z) / math.log(2.0)


def make_residual_edit(groups: list[RowGroup], phase: str, start: int = 0):
    """The edit of one decoder layer's output (the residual stream) for the residual-stream baseline:
    h' = h + alpha * v_level at the steered positions (SteerConfig.segments), times each token's own
    coefficient for per-token fits (token_coefficients); None when no group steers any of them. Each
    group's `offsets` holds that layer's (levels, hidden) vectors."""
    live = [(g, segs) for g in groups if (segs := g.cfg.segments(phase, start))]
    if not live:
        return None

    def edit(h: torch.Tensor) -> torch.Tensor:
        out = h.clone()
        S = h.shape[1]
        for g, segs in live:
            vectors = g.offsets.index_select(0, g.levels).to(h.dtype)  # (rows, hidden)
            gate = None if g.gate is None else g.gate.index_select(0, g.levels)
            for a, b, cfg in segs:
                lo, hi = min(a, S), S if b is None else min(S, b)
                if lo >= hi:
                    continue
                shift = (cfg.alpha * vectors)[:, None]
                if gate is not None:
                    shift = shift * token_coefficients(h[g.rows, lo:hi], gate)[..., None].to(h.dtype)
                out[g.rows, lo:hi] = out[g.rows, lo:hi] + shift
        return out

    return edit


def layer_edits(lm, groups: dict, phase: str, start: int = 0) -> dict:
    """{site: edit} for one kind of forward (phase, start: see SteerConfig.steered_count) of the groups that
    steering.assets.steering_groups resolved; sites with nothing to steer are left out."""
    edits = {
        site: make_residual_edit(gs, phase, start)
        if isinstance(site, tuple)
        else make_layer_edit(gs, phase, lm.n_heads, lm.head_dim, start)
        for site, gs in groups.items()
    }
    return {site: e for site, e in edits.items() if e is not None}
