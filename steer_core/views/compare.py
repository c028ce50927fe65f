"""The demo's side-by-side comparison: one question, one target level, several methods in one
batched generation, judged, and a JSON record of the run.

Kept out of `app.py` so the web UI, the API and the benchmark run exactly the same code.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields

from .. import methods
from ..bloom import LEVELS, normalize_level
from ..errors import UserError
from ..generation import MAX_NEW_TOKENS, REPLY_TOKENS, Output, Request, check_inputs, stream_batch
from ..layer_spec import layers_label, parse_heads, parse_layers
from ..steering.config import SteerConfig

DEFAULT_LAYERS = SteerConfig().layers
MAX_STRENGTH = 4.0
OPTIONAL_FLAGS = methods.COLUMN_FLAGS  # column -> the flag that asks for it


@dataclass(frozen=True)
class CompareRequest:
    """Everything one comparison needs; validated on construction so bad input fails before any work."""

    question: str
    student_answer: str
    level: str
    layers: tuple[int, ...] = DEFAULT_LAYERS
    heads: tuple[int, ...] | None = None  # None = all heads
    strength: float = 1.0
    steps: int = SteerConfig().steps
    lr: float = SteerConfig().lr
    mu: float = SteerConfig().mu
    target: str = SteerConfig().target
    positions: str = SteerConfig().positions
    max_new_tokens: int = REPLY_TOKENS
    seed: int = 0
    k_shots: int = 3
    instruction: bool = False  # also the instruction prompt's reply
    residual_vector: bool = False  # also the residual-stream vector's (the field's usual site, against the paper's)

    @classmethod
    def from_ui(
        cls,
        question,
        student_answer,
        level,
        layers=None,
        heads=None,
        strength=1.0,
        steps=None,
        lr=None,
        mu=None,
        target=None,
        positions=None,
        max_new_tokens=REPLY_TOKENS,
        seed=0,
        k_shots=3,
        instruction=False,
        residual_vector=False,
    ) -> CompareRequest:
        """Build from loosely typed widget values (strings, floats from sliders, None = the default)."""
        d = SteerConfig()
        layers = d.layers if layers is None else layers
        steps, lr, mu = (
            (d.steps if steps is None else steps),
            (d.lr if lr is None else lr),
            (d.mu if mu is None else mu),
        )
        target, positions = target or d.target, positions or d.positions
        if not isinstance(layers, (list, tuple)):
            text = str(layers if layers is not None else "").split("(")[0].strip()
            try:
                layers = parse_layers(text)
            except ValueError:
                raise UserError(f"layers must look like 15, 8-21 or 3,9,15; got {text!r}") from None
        heads, pairs = parse_heads(heads)  # an empty selection stays empty and is refused by __post_init__
        if pairs is not None:
            raise UserError("the comparison steers the same heads in every layer: give head numbers, e.g. 0,3,5")
        return cls(
            question,
            student_answer,
            level,
            tuple(layers),
            heads,
            _number("strength", strength),
            _integer("steps", steps),
            _number("step size", lr),
            _number("mu", mu),
            str(target),
            str(positions),
            _integer("max new tokens", max_new_tokens),
            _integer("seed", seed),
            _integer("few-shot examples", k_shots),
            bool(instruction),
            bool(residual_vector),
        )

    def __post_init__(self):
        check_inputs(self.question, self.student_answer)
        object.__setattr__(self, "level", normalize_level(self.level))
        if not math.isfinite(self.strength) or not 0 <= self.strength <= MAX_STRENGTH:
            raise UserError(f"strength must be a number from 0 to {MAX_STRENGTH:g}, got {self.strength!r}")
        if self.heads is not None and len(self.heads) == 0:
            raise UserError("choose at least one head to steer")
        if not 1 <= self.max_new_tokens <= MAX_NEW_TOKENS:
            raise UserError(f"max new tokens must be from 1 to {MAX_NEW_TOKENS}, got {self.max_new_tokens}")
        if not 0 <= self.seed < 2**63:
            raise UserError("seed must be a non-negative integer")
        if not 1 <= self.k_shots <= 8:
            raise UserError("few-shot examples must be from 1 to 8")
        self.steer("sae")  # the steering knobs (target, positions, steps, ...) are checked by SteerConfig

    def check_against(self, lm) -> None:
        """Layer and head numbers exist in this model (raises ValueError naming the range)."""
        for layer in self.layers:
            lm.check_layer(layer)
        if self.heads is not None:
            lm.check_heads(list(self.heads))

    def steer(self, method: str) -> SteerConfig:
        """The SAE row steers with the chosen target; the query baseline, which has no SAE codes,
        uses the delta shift when the target is defined on codes only."""
        shared = {f.name for f in fields(SteerConfig)} & {f.name for f in fields(self)}
        return SteerConfig(**{name: getattr(self, name) for name in shared}).for_method(method)

    @property
    def methods(self) -> tuple[str, ...]:
        return methods.COMPARE + tuple(m for m in methods.COMPARE_OPTIONAL if getattr(self, OPTIONAL_FLAGS[m]))

    def requests(self) -> list[Request]:
        return [
            Request(
                self.question,
                self.student_answer,
                m,
                self.level,
                steer=self.steer(m) if m in methods.STEERED else None,
                k_shots=self.k_shots,
            )
            for m in self.methods
        ]


def _number(name: str, value) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(v):
        raise UserError(f"{name} must be a finite number, got {value!r}")
    if v < 0:
        raise UserError(f"{name} must not be negative, got {value!r}")
    return v


def _integer(name: str, value) -> int:
    v = _number(name, value)
    if v != int(v):
        raise UserError(f"{name} must be a whole number, got {value!r}")
    return int(v)


@dataclass
class CompareResult:
    request: CompareRequest
    outputs: dict[str, Output]
    judgements: dict[str, dict] = field(default_factory=dict)
    seconds: float = 0.0

    def record(self, model: str) -> dict:
        """The downloadable report of one run: inputs, settings, outputs, judge scores."""
        req = asdict(self.request)
        inputs = {k: req.pop(k) for k in ("question", "student_answer", "level")}
        req["layers"] = layers_label(self.request.layers)
        req["alpha"] = self.request.steer("sae").alpha
        return {
            "model": model,
            "inputs": inputs,
            "settings": req,
            "outputs": {
                m: {"text": o.text, "new_tokens": o.new_tokens, "judge": self.judgements.get(m)}
                for m, o in self.outputs.items()
            },
            "seconds": round(self.seconds, 3),
            "levels": list(LEVELS),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }


def compare_stream(lm, req: CompareRequest, judge=None) -> Iterator[CompareResult]:
    """All methods in one batched generation; yields the texts so far after every token, then once
    more with the judge's verdicts filled in."""
    req.check_against(lm)
    t0 = time.time()
    reqs = req.requests()
    outs: list[Output] = []
    for outs in stream_batch(lm, reqs, max_new_tokens=req.max_new_tokens, seed=req.seed):
        yield CompareResult(req, {r.method: o for r, o in zip(reqs, outs)}, seconds=time.time() - t0)
    from ..judge.classifier import default_judge

    judge = judge or default_judge()
    verdicts = judge.judge([o.text for o in outs])
    result = CompareResult(
        req, {r.method: o for r, o in zip(reqs, outs)}, {r.method: v for r, v in zip(reqs, verdicts)}, time.time() - t0
    )
    yield result
