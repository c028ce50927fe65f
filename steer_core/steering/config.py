"""How to steer, for one call: the SteerConfig, and what its one public knob, strength, means in each
target's units (the one place strength becomes a scale)."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

from ..errors import UserError
from ..methods import AT_RESIDUAL, STEERED, WITHOUT_CODES
from . import targets

METHODS = ("none", *STEERED)  # a SteerConfig's method
POSITIONS = ("all", "prompt", "generated")
DISTANCES = ("l2", "cosine")
QUERY_TARGETS = tuple(t for t, spec in targets.REGISTRY.items() if spec.on_queries)
QUERY_FALLBACK = "delta"  # what query steering runs when the SAE row's target works on codes only
# The layers steered by default: every layer of the default model (30), chosen on validation (learned
# offsets fitted on all 30 moved the level further within the fluency margin than on the band 8-21)
DEFAULT_LAYERS = tuple(range(30))
# Strength is the one public knob (Python, CLI, API, UI); strength 1 means each target's unit_alpha
# (targets.py): for learned offsets (the shipped ones were fitted at alpha 1 with the BiPO-style objective;
# their record, offsets.json "validated", says how 16 was chosen) and delta, the alpha chosen on validation
# data; for prototype, the fraction of the way to the prototype. SteerConfig.alpha is the only place
# strength becomes alpha; query steering and mean difference run a code-only target as delta.
# Residual-stream vectors (method "residual"): strength 1 is alpha 4, the rule's pick on the validation
# frontier (layer 15, the BiPO-style vectors fitted at alpha 1 on writers A-C; 0.551 at 1.26x on writers
# D-F, where alpha 5 read 1.45x, over the margin; results/frontier/validation.csv, their offsets.json
# "validated" record). The earlier rows labelled "a48" ran at alpha 3 (the code of the time divided the
# scale by 16 twice); they regenerate token for token at alpha 3 and only there (tests/test_golden_rows.py).
# Vectors fitted with the strength inside the fit (RePS) mean alpha 1: strength 1/4.
RESIDUAL_ALPHA = 4.0
# Query steering (the paper's raw-query baseline, delta target) on the SAE row's layers: strength 1 is
# delta alpha 3, the rule's pick on validation (0.194 at 1.22x on every layer; alpha 4 read 1.43x, alpha 8,
# the shared delta scale it used before, about 5x); results/query/validation_results.csv.
QUERY_ALPHA = 3.0
# Where one method's strength 1 was validated on its own scale, not the target's shared one.
METHOD_ALPHA = {("residual", "learned"): RESIDUAL_ALPHA, ("query", "delta"): QUERY_ALPHA}
RESIDUAL_LAYERS = (15,)  # the layer the shipped vectors were fitted and validated for
MAX_STEPS = 500


def unit_alpha(method: str, target: str) -> float:
    """What strength 1 means for a method and target, in the target's own units."""
    return METHOD_ALPHA.get((method, target), targets.get(target).unit_alpha)


@dataclass(frozen=True)
class SteerConfig:
    """How to steer; belongs to one call, never to the model."""

    # Defaults chosen by cross-writer validation (36 train-split scenarios of writers D-F, prototypes
    # and offsets from writers A-C; docs/steering.md): the most accurate setting whose perplexity stays
    # within 1.4x of unsteered's (a margin under the 1.5x budget).
    method: str = "sae"
    layers: tuple[int, ...] = DEFAULT_LAYERS
    heads: tuple[int, ...] | None = None  # None = all heads
    layer_heads: tuple[tuple[int, int], ...] | None = None  # (layer, head) pairs: only these (replaces heads)
    steps: int = 20
    lr: float = 0.2
    mu: float = 0.0
    distance: str = "l2"
    positions: str = "generated"  # steering the prompt too moved the level less at the same fluency
    first_tokens: int | None = None  # steer only the first N generated tokens (the reply's opening); None = all
    after_first: float = 0.0  # with first_tokens: the share of the strength kept after them (0: not steered)
    strength: float = 1.0  # 0 = off (unsteered, token for token); unit_alpha says what 1 means
    target: str = "learned"  # a name in targets.REGISTRY
    saes_dir: str | None = None  # a folder of layer_<l>/ SAEs + prototypes to use instead of the model's own
    offsets_dir: str | None = None  # a folder of learned offsets (target "learned"); None = the model's own
    residual_dir: str | None = None  # method "residual": a folder of residual-stream vectors; None = the model's own

    def __post_init__(self):
        if self.method not in METHODS:
            raise UserError(f"unknown steering method {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.positions not in POSITIONS:
            raise UserError(f"positions must be one of {', '.join(POSITIONS)}")
        if self.target not in targets.REGISTRY:
            raise UserError(f"target must be one of {', '.join(targets.REGISTRY)}")
        if self.method in WITHOUT_CODES and not targets.REGISTRY[self.target].on_queries:
            raise UserError(
                f"target {self.target!r} works on SAE codes; query steering takes {' or '.join(QUERY_TARGETS)}"
            )
        if self.method in AT_RESIDUAL and self.target != "learned":
            raise UserError("residual-stream steering adds a learned vector: its target is 'learned'")
        if self.distance not in DISTANCES:
            raise UserError(f"distance must be one of {', '.join(DISTANCES)}")
        for name in ("lr", "mu", "strength"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise UserError(f"{name} must be a finite number >= 0, got {v!r}")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or not 0 <= self.steps <= MAX_STEPS:
            raise UserError(f"steps must be an integer from 0 to {MAX_STEPS}, got {self.steps!r}")
        if self.first_tokens is not None:
            if isinstance(self.first_tokens, bool) or not isinstance(self.first_tokens, int) or self.first_tokens < 1:
                raise UserError(f"first tokens must be an integer >= 1 (or none for all), got {self.first_tokens!r}")
            if self.positions == "prompt":
                raise UserError("first tokens limits the generated tokens; positions 'prompt' steers none of them")
        later = self.after_first
        if isinstance(later, bool) or not isinstance(later, (int, float)) or not math.isfinite(later) or later < 0:
            raise UserError(f"the strength after the first tokens must be a finite number >= 0, got {later!r}")
        if self.after_first and self.first_tokens is None:
            raise UserError("a strength after the first tokens needs first tokens (how many the opening has)")
        if not self.layers:
            raise UserError("choose at least one layer to steer")
        if self.layer_heads is not None:
            if self.heads is not None:
                raise UserError("give heads for every layer or (layer, head) pairs, not both")
            if {layer for layer, _ in self.layer_heads} != set(self.layers):
                raise UserError("the steered layers must be exactly the layers of the (layer, head) pairs")

    @property
    def target_spec(self) -> targets.Target:
        """The registry entry of this config's target."""
        return targets.REGISTRY[self.target]

    @property
    def alpha(self) -> float:
        """The target's own scale at this strength: the one place strength is converted."""
        return self.strength * unit_alpha(self.method, self.target)

    @classmethod
    def strength_for(cls, target: str, alpha: float, method: str = "sae") -> float:
        """The strength that gives `alpha` (for code that works in a target's own units, e.g. fitting)."""
        return alpha / unit_alpha(method, target)

    def steered_count(self, phase: str, start: int = 0) -> int | None:
        """How many leading positions of a forward this config steers (None = all, 0 = none): phase is
        'prompt' or 'generated', start the generated token a 'generated' forward begins at (a decode step
        runs one token; a teacher-forced reply runs all from 0). Strength 0 steers none, for every
        target: the hooks leave the forward untouched."""
        if self.method == "none" or self.strength == 0 or self.positions not in ("all", phase):
            return 0
        if phase != "generated" or self.first_tokens is None:
            return None
        return max(0, self.first_tokens - start)

    @property
    def later(self) -> SteerConfig | None:
        """What steers the generated tokens after the first N: this config at after_first x the strength
        (a schedule: strong on the reply's opening, where the level is chosen, weaker after); None if nothing."""
        if self.first_tokens is None or self.after_first == 0 or self.strength == 0:
            return None
        return replace(self, strength=self.strength * self.after_first, first_tokens=None, after_first=0.0)

    def segments(self, phase: str, start: int = 0) -> list[tuple[int, int | None, SteerConfig]]:
        """The positions [a, b) of a forward (b None: to its end) and the config that steers them, for
        phase and start as in steered_count: the one rule for which positions are steered, and how hard."""
        count = self.steered_count(phase, start)
        out = [] if count == 0 else [(0, count, self)]
        later = self.later
        if later is not None and phase == "generated" and self.positions in ("all", "generated"):
            out.append((count, None, later))
        return out

    @property
    def middle_layer(self) -> int:
        """The steered layer the charts look inside by default."""
        return self.layers[len(self.layers) // 2]

    def heads_at(self, layer: int) -> tuple[int, ...] | None:
        """The heads steered in `layer` (None = all)."""
        if self.layer_heads is None:
            return self.heads
        return tuple(sorted(h for lay, h in self.layer_heads if lay == layer))

    def for_method(self, method: str, residual_layers: tuple[int, ...] = RESIDUAL_LAYERS) -> SteerConfig:
        """This config for another method at the same strength; query steering and mean difference
        have no codes, so a code-only target becomes delta; the residual baseline adds learned vectors, at
        residual_layers (the model's own: model_defaults.residual_layers) unless its folder is given."""
        if method in WITHOUT_CODES and not self.target_spec.on_queries:
            return replace(self, method=method, target=QUERY_FALLBACK)
        if method in AT_RESIDUAL:  # vectors exist for the layer they were fitted at only
            layers = residual_layers if self.residual_dir is None and method != self.method else self.layers
            return replace(self, method=method, target="learned", layers=layers, heads=None, layer_heads=None)
        return replace(self, method=method)

    @property
    def label(self) -> str:
        """Short text naming the strength settings, for tables."""
        if self.method == "meandiff":
            return f"a{self.alpha:g}"
        if self.method in AT_RESIDUAL:
            where = "" if self.residual_dir is None else " vectors " + "/".join(Path(self.residual_dir).parts[-2:])
            return f"learned a{self.alpha:g}{where}{self._where_label(heads=False)}"
        spec = self.target_spec
        t = spec.label(self.alpha)
        if self.target == "learned":
            t += "" if self.offsets_dir is None else " offsets " + "/".join(Path(self.offsets_dir).parts[-2:])
        steps = f" T{self.steps} lr{self.lr:g} mu{self.mu:g}" if spec.descends else ""
        saes = "" if self.saes_dir is None else f" saes {Path(self.saes_dir).name}"
        return f"{t}{steps}{self._where_label(heads=True)}{saes}"

    def _where_label(self, heads: bool) -> str:
        """The label's part naming where and when it steers: heads, positions, the opening and what follows."""
        out = ""
        if heads:
            out += "" if self.heads is None else " heads " + ",".join(map(str, self.heads))
            out += "" if self.layer_heads is None else " heads " + ",".join(f"{a}.{h}" for a, h in self.layer_heads)
        out += "" if self.positions == "all" else f" pos {self.positions}"  # no suffix: all positions
        out += "" if self.first_tokens is None else f" first {self.first_tokens}"
        out += "" if not self.after_first else f" then x{self.after_first:g}"
        return out
