"""How to steer, for one call: the SteerConfig, and what its one public knob, strength, means in each
target's units (the one place strength becomes a scale)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from .. import methods
from ..errors import UserError
from ..layer_spec import LATENTS_FORM, HandLatent, latents_text, layers_label, parse_latents
from ..methods import PLAIN
from . import targets
from .files import MODEL_OWN, SteerFiles
from .knobs import check, knob, knobs_of

POSITIONS = ("all", "prompt", "generated")
DISTANCES = ("l2", "cosine")
# The layers steered by default: every layer of the default model, chosen on validation (docs/steering.md).
DEFAULT_LAYERS = tuple(range(30))
# What strength 1 means where a method's scale was validated on its own, not the target's shared one (strength
# is the one public knob; SteerConfig.alpha is the only place it becomes a scale). How each was chosen, with its
# figures: docs/steering.md, "What strength 1 means".
RESIDUAL_ALPHA = 4.0  # the residual-stream vectors (method residual, target learned)
QUERY_ALPHA = 3.0  # query steering (delta target) on the SAE row's layers
METHOD_ALPHA = {("residual", "learned"): RESIDUAL_ALPHA, ("query", "delta"): QUERY_ALPHA}
# What strength 1 means under a prompt other than the plain one, where validation picked a scale for the method
# there (docs/steering.md, "Steering on top of a prompt"); a combination not listed keeps its plain-prompt scale.
PROMPT_ALPHA: dict[tuple[str, str, str], float] = {
    ("sae", "learned", "instruction"): 4.0,  # 0.704 at 1.13x on validation; alpha 8 read 0.676 at 1.27x
    ("residual", "learned", "instruction"): 2.0,  # 0.782 at 1.20x on validation; alpha 4 read 1.43x
}
RESIDUAL_LAYERS = (15,)  # the layer the shipped vectors were fitted and validated for
MAX_STEPS = 500
MAX_STRENGTH_SHOWN = 4.0  # the strength slider's top (the CLI and Python take any strength >= 0)


def unit_alpha(method: str, target: str, prompt: str = PLAIN) -> float:
    """What strength 1 means for a method and target under a prompt, in the target's own units."""
    if (method, target, prompt) in PROMPT_ALPHA:
        return PROMPT_ALPHA[(method, target, prompt)]
    return METHOD_ALPHA.get((method, target), targets.get(target).unit_alpha)


def prompt_choices() -> tuple:
    """The prompts a steered reply can run under: the plain one, or any prompt baseline's (read when asked)."""
    return ((f"{PLAIN} (default)", PLAIN), *((methods.label(m), m) for m in methods.prompted()))


def target_choices() -> tuple:
    """The targets as a chooser lists them, read from the registry when asked."""
    return tuple((t.title + (" (default)" if n == SteerConfig.target else ""), n) for n, t in targets.REGISTRY.items())


@dataclass(frozen=True)
class SteerConfig:
    """How to steer; belongs to one call, never to the model. Each knob is declared here once (label, kind,
    bounds, help, default); the requests, the UI, the API and the CLI read these declarations. The defaults
    are the setting chosen by cross-writer validation (docs/steering.md)."""

    method: str = "sae"  # a method of the registry that steers (or "none")
    layers: tuple[int, ...] = knob(
        DEFAULT_LAYERS, label="Layers to steer", kind="layers", help="a band, one layer, or type e.g. 3,9,15",
        shown=layers_label(DEFAULT_LAYERS),
    )  # fmt: skip
    heads: tuple[int, ...] | None = knob(None, label="Heads (all ticked = every head)", kind="heads", optional=True)
    layer_heads: tuple[tuple[int, int], ...] | None = None  # (layer, head) pairs: only these (replaces heads)
    steps: int = knob(
        20, label="Descent steps T", kind="slider", lo=0, hi=MAX_STEPS, step=1, whole=True, advanced=True,
        help="descent steps T",
    )  # fmt: skip
    lr: float = knob(0.2, label="Step size", kind="slider", lo=0.0, top=0.5, step=0.01, advanced=True,
                     help="descent step size")  # fmt: skip
    mu: float = knob(
        0.0, label="mu (stay close to the original code)", kind="slider", lo=0.0, top=5.0, step=0.1, advanced=True,
        help="pull back toward the token's own code",
    )  # fmt: skip
    distance: str = knob("l2", label="Distance", kind="choice", choices=tuple((d, d) for d in DISTANCES), advanced=True)
    positions: str = knob(
        "generated", label="Steered positions", kind="choice", choices=tuple((p, p) for p in POSITIONS), advanced=True,
        help="which positions are steered: the prompt, the generated tokens or all",
    )  # fmt: skip
    first_tokens: int | None = knob(
        None, label="First tokens", kind="integer", lo=1, optional=True,
        help="steer only the first N generated tokens, the reply's opening (default: all)",
    )  # fmt: skip
    after_first: float = knob(
        0.0, label="Strength after the first tokens", kind="slider", lo=0.0,
        help="with first tokens: steer the tokens after the opening at this share of the strength (a schedule: "
        "strong on the opening, weaker after; default 0: not at all)",
    )  # fmt: skip
    strength: float = knob(
        1.0, label="Steering strength", kind="slider", lo=0.0, top=MAX_STRENGTH_SHOWN, step=0.25,
        help="0 = off, 1 = the tested default, higher = stronger but less fluent",
    )  # fmt: skip
    target: str = knob("learned", label="Steering target", kind="choice", choices=target_choices, advanced=True)
    prompt: str = knob(
        PLAIN, label="Prompt under the steering", kind="choice", choices=prompt_choices,
        help="steer on top of a prompt: plain, or a prompt baseline's (instruction names the level; strength 0 "
        "gives that prompt's own reply)",
    )  # fmt: skip
    latents: tuple[HandLatent, ...] | None = knob(
        None, label="Latents by hand", kind="latents", optional=True, advanced=True, shown="",
        help=f"steer chosen SAE latents, each at its own strength ({LATENTS_FORM}), in a column of their own; "
        "a latent's card (the Latents tab) says what it fires on",
    )  # fmt: skip

    def __post_init__(self):
        m = methods.get(self.method)
        if self.latents is not None:  # lists (a result row's config, a report) read as the one written form
            object.__setattr__(self, "latents", parse_latents(self.latents))
        if self.method not in steering_methods():
            raise UserError(
                f"method {self.method!r} does not steer; a steering method is one of {', '.join(steering_methods())}"
            )
        for name, k in KNOBS.items():
            check(k, getattr(self, name))
        spec = targets.get(self.target)
        if m.site in (methods.QUERIES, methods.QUERY_SHIFT) and not spec.on_queries:
            raise UserError(
                f"target {self.target!r} works on SAE codes; query steering takes {' or '.join(query_targets())}"
            )
        if m.only_target is not None and self.target != m.only_target:
            raise UserError(f"{m.label} steering runs one target: its target is {m.only_target!r}, got {self.target!r}")
        if self.first_tokens is not None and self.positions == "prompt":
            raise UserError("first tokens limits the generated tokens; positions 'prompt' steers none of them")
        if self.after_first and self.first_tokens is None:
            raise UserError("a strength after the first tokens needs first tokens (how many the opening has)")
        if spec.names_latents:
            if not self.latents:
                raise UserError(f"target {self.target!r} steers the latents you name: give them as {LATENTS_FORM}")
            # the latents name their own layers and heads
            object.__setattr__(self, "layers", tuple(sorted({a for a, *_ in self.latents})))
            object.__setattr__(self, "layer_heads", tuple(sorted({(a, h) for a, h, *_ in self.latents})))
            object.__setattr__(self, "heads", None)
        if not self.layers:
            raise UserError("choose at least one layer to steer")
        if self.layer_heads is not None:
            if self.heads is not None:
                raise UserError("give heads for every layer or (layer, head) pairs, not both")
            if {layer for layer, _ in self.layer_heads} != set(self.layers):
                raise UserError("the steered layers must be exactly the layers of the (layer, head) pairs")

    @property
    def site(self) -> str:
        """Where its method edits (methods.SITES): what the edits dispatch on."""
        return methods.get(self.method).site

    @property
    def steers(self) -> bool:
        return methods.get(self.method).steers

    @property
    def target_spec(self) -> targets.Target:
        """The registry entry of this config's target."""
        return targets.REGISTRY[self.target]

    @property
    def alpha(self) -> float:
        """The target's own scale at this strength: the one place strength is converted."""
        return self.strength * unit_alpha(self.method, self.target, self.prompt)

    @classmethod
    def strength_for(cls, target: str, alpha: float, method: str = "sae", prompt: str = PLAIN) -> float:
        """The strength that gives `alpha` (for code that works in a target's own units, e.g. fitting)."""
        return alpha / unit_alpha(method, target, prompt)

    def steered_count(self, phase: str, start: int = 0) -> int | None:
        """How many leading positions of a forward this config steers (None = all, 0 = none): phase is
        'prompt' or 'generated', start the generated token a 'generated' forward begins at (a decode step
        runs one token; a teacher-forced reply runs all from 0). Strength 0 steers none, for every
        target: the hooks leave the forward untouched."""
        if not self.steers or self.strength == 0 or self.positions not in ("all", phase):
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

    def for_method(
        self, method: str, residual_layers: tuple[int, ...] = RESIDUAL_LAYERS, files: SteerFiles = MODEL_OWN
    ) -> SteerConfig:
        """This config for another method at the same strength, as the method's entry says: a method without
        SAE codes runs its fallback target when the chosen one works on codes only; a method with one target
        (the residual vector) runs it, at residual_layers (the model's own: model_defaults.residual_layers)
        unless `files` names its vectors, on every head."""
        m = methods.get(method)
        if m.only_target is not None and targets.get(m.only_target).names_latents:  # they name layers and heads
            return replace(self, method=method, target=m.only_target, heads=None, layer_heads=None)
        if m.only_target is not None:  # vectors exist for the layer they were fitted at only
            layers = residual_layers if files.residual is None and method != self.method else self.layers
            return replace(self, method=method, target=m.only_target, layers=layers, heads=None, layer_heads=None)
        if not m.has_codes and not self.target_spec.on_queries and m.fallback_target is not None:
            return replace(self, method=method, target=m.fallback_target)
        return replace(self, method=method)

    @property
    def label(self) -> str:
        """Short text naming the strength settings, for tables (steering the model's own files)."""
        return self.label_with(MODEL_OWN)

    def label_with(self, files: SteerFiles) -> str:
        """The label, naming the folders `files` gives instead of the model's own, and the prompt it steers on
        top of unless plain ("... + instruction")."""
        return self._steer_label(files) + ("" if self.prompt == PLAIN else f" + {self.prompt}")

    def _steer_label(self, files: SteerFiles) -> str:
        if self.site == methods.QUERY_SHIFT:
            return f"a{self.alpha:g}"
        if self.site == methods.RESIDUAL:
            where = "" if files.residual is None else " vectors " + "/".join(Path(files.residual).parts[-2:])
            return f"{self.target} a{self.alpha:g}{where}{self._where_label(heads=False)}"
        spec = self.target_spec
        t = spec.label(self.alpha)
        if spec.needs_offsets:
            t += "" if files.offsets is None else " offsets " + "/".join(Path(files.offsets).parts[-2:])
        steps = f" T{self.steps} lr{self.lr:g} mu{self.mu:g}" if spec.descends else ""
        saes = "" if files.saes is None else f" saes {Path(files.saes).name}"
        if spec.names_latents:  # the latents say where: their layers and heads are theirs
            return f"{t} {latents_text(self.latents)}{self._where_label(heads=False)}{saes}"
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


KNOBS = knobs_of(SteerConfig)  # the steering knobs, in field order


def steering_methods() -> tuple[str, ...]:
    """The methods a SteerConfig can name: unsteered and every method that steers."""
    return tuple(n for n, m in methods.REGISTRY.items() if m.steers or m.site == methods.NONE)


def query_targets() -> tuple[str, ...]:
    """Targets that raw queries can run (they name a point)."""
    return tuple(t for t, spec in targets.REGISTRY.items() if spec.on_queries)
