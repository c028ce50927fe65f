"""The steering targets, one registry entry each: where a query's sparse code (or, for query steering, the
raw query) is moved, what strength 1 means in the target's units, and what its trace shows.

A target either names a point to descend to (`goal`: the paper's prototype, the delta shift; these work
on raw queries too) or edits the codes itself (`codes`: the prototype softmax, the learned offset). Adding
a target is one `register(Target(...))`; every chooser, label, validation and edit reads the registry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch

from ..errors import UserError
from ..sae.layer_files import LayerSAEs
from .descent import latent_descent, softmax_descent


class Scales(Protocol):
    """What a target's edit reads of its config (a SteerConfig, which reads this registry)."""

    alpha: float
    steps: int
    lr: float
    mu: float
    distance: str
    latents: tuple | None


@dataclass
class CodeEdit:
    """What a target's edit of sparse codes is given: the layer's SAEs and prototypes (`bank`), the codes
    z0 (rows, seq, heads, K), each row's level (rows,), the steered heads (None: all), the config, and the
    layer's learned offsets (levels, heads, K) for targets that need them."""

    bank: LayerSAEs
    z0: torch.Tensor | None  # None where the edit needs no codes (a fixed offset)
    levels: torch.Tensor
    heads: torch.Tensor | None
    cfg: Scales
    offsets: torch.Tensor | None = None

    def pick(self, t: torch.Tensor, dim: int) -> torch.Tensor:
        """t restricted to the steered heads along `dim`."""
        return t if self.heads is None else t.index_select(dim, self.heads)

    @property
    def prototypes(self) -> torch.Tensor:
        """(rows, 1, heads, K): each row's level prototype."""
        return self.pick(self.bank.codes.index_select(0, self.levels), 1)[:, None]

    @property
    def mean_prototype(self) -> torch.Tensor:
        return self.pick(self.bank.codes.mean(0), 0)


@dataclass(frozen=True)
class Objective:
    """What a target's trace shows as its objective: a label, and the curve over descent steps from the trace's
    distance to the target's point (steps, or None where it names no point) and each level's probability under
    the prototypes at every step (steps, levels, positions), for the row's level index."""

    label: str
    of: Callable[[torch.Tensor | None, torch.Tensor, int], torch.Tensor | None]


def _distance_to_point(distance, level_probs, level):
    return distance


def _neg_log_p(distance, level_probs, level):
    return -torch.log(level_probs[:, level].clamp_min(1e-12)).mean(-1)


TO_POINT = Objective("distance to its target", _distance_to_point)
NEG_LOG_P = Objective("-log p(target)", _neg_log_p)


@dataclass(frozen=True)
class Target:
    name: str
    title: str  # a short name for choosers
    help: str  # one line: what it does and what strength 1 means
    unit_alpha: float  # strength 1 in the target's own units (methods may override it: config.METHOD_ALPHA)
    # a point to descend to: (z0, the rows' level points, the mean point, alpha) -> goal; works on codes
    # (prototypes) and on raw queries (the levels' mean queries)
    goal: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, float], torch.Tensor] | None = None
    codes: Callable[[CodeEdit, torch.Tensor | None], object] | None = None  # an edit of codes of its own
    # the fixed code offset it adds at every token, (rows, heads, K) per unit of alpha: the edit decodes to a
    # fixed query shift (alpha x the decoded offset) and needs no encoding
    code_offset: Callable[[CodeEdit], torch.Tensor] | None = None
    shifts: bool = False  # its goal is the token's own point plus a fixed vector (a closed form on raw queries)
    needs_offsets: bool = False  # learned offsets (fit-offsets) for the steered layers
    objective: Objective | None = None  # what its trace's objective line shows (None: it does not descend)
    short: str = ""  # the label's word (default: the name)
    bare_at_unit: bool = False  # its label omits alpha at alpha 1 (the paper's own setting)
    names_latents: bool = False  # it steers SteerConfig.latents, which name its layers and heads

    @property
    def descends(self) -> bool:
        """It runs the descent knobs (steps, step size, mu)."""
        return self.code_offset is None

    @property
    def on_queries(self) -> bool:
        """Query steering can use it (it names a point, which raw queries have too)."""
        return self.goal is not None

    def label(self, alpha: float) -> str:
        word = self.short or self.name
        return word if (self.bare_at_unit and alpha == 1) else f"{word} a{alpha:g}"

    def edit_codes(self, c: CodeEdit, trace_to: torch.Tensor | None = None):
        """The steered codes; with trace_to ((L, ..., K)-broadcastable points) also the distance to each after
        every step, and for a descent to a point one more entry last: the distance to that point."""
        if self.codes is not None:
            return self.codes(c, trace_to)
        if self.code_offset is not None:
            z = c.z0 + c.cfg.alpha * self.code_offset(c)[:, None].to(c.z0.dtype)
            if trace_to is None:
                return z
            return z, torch.stack([torch.linalg.vector_norm(x.unsqueeze(0) - trace_to, dim=-1) for x in (c.z0, z)])
        cfg = c.cfg
        goal = self.goal(c.z0, c.prototypes, c.mean_prototype, cfg.alpha)
        if trace_to is not None:
            goal = goal.expand_as(c.z0)
            trace_to = torch.cat([trace_to.expand(len(trace_to), *goal.shape), goal.unsqueeze(0)])
        return latent_descent(c.z0, goal, cfg.steps, cfg.lr, cfg.mu, cfg.distance, trace_to=trace_to)


REGISTRY: dict[str, Target] = {}


def register(target: Target) -> Target:
    """Add a steering target (replacing one of the same name)."""
    if (target.goal is None) == (target.codes is None and target.code_offset is None):
        raise ValueError(f"target {target.name!r} needs exactly one of goal, codes or code_offset")
    REGISTRY[target.name] = target
    return target


def get(name: str) -> Target:
    if name not in REGISTRY:
        raise UserError(f"target must be one of {', '.join(REGISTRY)}, got {name!r}")
    return REGISTRY[name]


def _toward(z0, point, mean, alpha):
    """The paper's prototype: alpha of the way from the token's own code to the level's point (lerp is exact
    at 0 and 1)."""
    return point if alpha == 1 else torch.lerp(z0, point.expand_as(z0), alpha)


def _shifted(z0, point, mean, alpha):
    """The token's own code shifted by alpha x (level point - mean point)."""
    return z0 + alpha * (point - mean)


def _softmax(c: CodeEdit, trace_to):
    cfg = c.cfg
    targets = c.levels[:, None].expand(c.z0.shape[:2])
    protos = c.pick(c.bank.codes, 1)
    return softmax_descent(c.z0, protos, targets, cfg.steps, cfg.lr * cfg.alpha, cfg.mu, trace_to=trace_to)


def _learned_offset(c: CodeEdit) -> torch.Tensor:
    if c.offsets is None:
        raise UserError("target 'learned' needs learned offsets for this layer")
    return c.pick(c.offsets.index_select(0, c.levels), 1)


def _hand_offset(c: CodeEdit) -> torch.Tensor:
    """The chosen latents of this layer (SteerConfig.latents), each at its own strength, the same for every row."""
    K = c.bank.codes.shape[-1]
    mine = [(h, j, s) for layer, h, j, s in c.cfg.latents or () if layer == c.bank.layer]
    for h, j, _ in mine:
        if j >= K:
            raise UserError(
                f"latent {c.bank.layer}.{h}:{j} does not exist: layer {c.bank.layer}'s SAEs have {K} latents a head "
                f"(0-{K - 1})"
            )
    offset = torch.zeros(c.bank.codes.shape[1:], dtype=c.bank.codes.dtype, device=c.bank.codes.device)
    if mine:
        h, j, s = (torch.tensor(v, device=offset.device) for v in zip(*mine))
        offset.index_put_((h, j), s.to(offset.dtype), accumulate=True)
    return c.pick(offset, 0).expand(len(c.levels), -1, -1)


register(
    Target(
        "prototype",
        "the level's prototype (the paper's)",
        "the paper's target: descend toward the level's prototype code (strength 1: all the way, 0.5: half way)",
        1.0,
        goal=_toward,
        objective=TO_POINT,
        short="proto",
        bare_at_unit=True,
    )
)
register(
    Target(
        "delta",
        "shift the code by the level's offset",
        "descend to the token's own code shifted by alpha x (level prototype - mean prototype)",
        8.0,
        goal=_shifted,
        shifts=True,
        objective=TO_POINT,
    )
)
register(
    Target(
        "softmax",
        "prototype softmax",
        "raise the target level's probability under a softmax over negative squared distances to all six "
        "prototypes (alpha scales the step)",
        3.0,
        codes=_softmax,
        objective=NEG_LOG_P,
    )
)
register(
    Target(
        "learned",
        "learned sparse offset",
        "add the level's learned sparse code offset (fit-offsets), alpha x; no descent",
        16.0,
        code_offset=_learned_offset,
        needs_offsets=True,
    )
)
register(
    Target(
        "latents",
        "chosen latents, by hand",
        "add the latents you name (layer.head:latent:strength), each at its own strength x the strength; no descent",
        1.0,
        code_offset=_hand_offset,
        short="hand",
        bare_at_unit=True,
        names_latents=True,
    )
)
