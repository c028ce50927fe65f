"""The demo's side-by-side comparison, whole: one question, one target level, every method in one batched
generation, judged, then one replay of the SAE-steered reply that both the latent view and the attention
view read, the charts and the report. The web UI, the API and `bench` run exactly this.

The request is declared once: each field of CompareRequest carries its label, help, kind and bounds
(a `Knob`, steering.knobs; the steering knobs are SteerConfig's own); the UI's widgets, the /compare API's
parameters (names, order, defaults), the link reader and the validation are read from it.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace

from .. import methods
from ..bloom import LEVELS, normalize_level
from ..errors import UserError
from ..generation import (
    K_SHOTS,
    MAX_NEW_TOKENS,
    REPLY_TOKENS,
    SEED,
    VIEWS,
    Output,
    Request,
    read_prefixes,
    stream_batch,
)
from ..layer_spec import layers_label
from ..methods import PLAIN
from ..model.recording import RowRecording
from ..reply_cache import stream_reusing
from ..steering.config import RESIDUAL_LAYERS, SteerConfig
from ..steering.knobs import knob, knobs_of, same_knob
from ..steering.model_defaults import residual_layers
from .requests import Declared

STEER = SteerConfig()  # the validated setting: every steering knob's default
REPORT_FORMAT = 2  # a run's JSON report; 1: before reports could be restored (views.reports)


def _steer_knob(name: str):
    """A steering knob, as SteerConfig declares it (label, kind, bounds, help, default)."""
    return same_knob(SteerConfig, name)


@dataclass(frozen=True, kw_only=True)
class CompareRequest(Declared):
    """Everything one comparison needs; validated on construction so bad input fails before any work. Its
    steering knobs are SteerConfig's own declarations; the rest are declared here."""

    question: str = knob(label="Question", kind="text")
    student_answer: str = knob(label="Student's answer", kind="text")
    level: str | None = knob(label="Bloom level to steer toward", kind="level")  # None: no single level (the ladder)
    layers: tuple[int, ...] = _steer_knob("layers")
    heads: tuple[int, ...] | None = _steer_knob("heads")
    strength: float = _steer_knob("strength")
    steps: int = _steer_knob("steps")
    lr: float = _steer_knob("lr")
    mu: float = _steer_knob("mu")
    target: str = _steer_knob("target")
    positions: str = _steer_knob("positions")
    max_new_tokens: int = knob(
        REPLY_TOKENS, label="Max new tokens", kind="slider", lo=1, hi=MAX_NEW_TOKENS, step=1, whole=True, advanced=True
    )
    seed: int = knob(SEED, label="Seed (generation is greedy)", kind="integer", lo=0, hi=2**63 - 1, advanced=True)
    k_shots: int = knob(
        K_SHOTS, label="Few-shot examples", kind="slider", lo=1, hi=8, step=1, whole=True, advanced=True
    )
    instruction: bool = knob(False, label="Also show the instruction baseline", kind="flag", advanced=True)
    residual_vector: bool = knob(
        False, label="Also show the residual-stream vector", kind="flag", advanced=True,
        help="the field's usual steering site (one vector per level added to the residual stream at layer "
        f"{layers_label(RESIDUAL_LAYERS)}), against the paper's query site",
    )  # fmt: skip
    prompt: str = _steer_knob("prompt")  # the API's earlier parameters keep their places
    latents: tuple | None = _steer_knob("latents")  # given: a column of its own, "Your latents"

    def __post_init__(self):
        self.check_fields()
        if self.level is not None:
            object.__setattr__(self, "level", normalize_level(self.level))
        if self.heads is not None and len(self.heads) == 0:
            raise UserError("choose at least one head to steer")
        self.steer("sae")  # the steering knobs (target, positions, steps, ...) are checked by SteerConfig

    def check_against(self, lm) -> None:
        """Layer and head numbers exist in this model (raises a UserError naming the range)."""
        for layer in self.layers:
            lm.check_layer(layer)
        if self.heads is not None:
            lm.check_heads(list(self.heads))
        for layer, head, _, _ in self.latents or ():
            lm.check_layer(layer)
            lm.check_heads([head])

    def steer(self, method: str, residual_layers: tuple[int, ...] = RESIDUAL_LAYERS) -> SteerConfig:
        """The SAE column steers with the chosen target; the others as SteerConfig.for_method says (query steering
        runs delta when the target works on codes only; the residual vector at its own layer)."""
        cfg = SteerConfig(
            layers=self.layers,
            heads=self.heads,
            strength=self.strength,
            steps=self.steps,
            lr=self.lr,
            mu=self.mu,
            target=self.target,
            positions=self.positions,
            prompt=self.prompt,
            latents=self.latents,
        )
        return cfg.for_method(method, residual_layers)

    @property
    def methods(self) -> tuple[str, ...]:
        """The columns: Compare's own, then those asked for by their flags (methods.column_flags), and the
        prompt the steered columns run on top of, alone (their strength 0), whether asked for or not."""
        optional = tuple(m for m, flag in methods.column_flags().items() if getattr(self, flag) or m == self.prompt)
        return methods.compare_columns() + optional

    @property
    def on_top_note(self) -> str:
        """What a status line adds when the steering runs on top of a prompt (", on top of the instruction prompt")."""
        return "" if self.prompt == PLAIN else f", on top of the {methods.label(self.prompt).lower()} prompt"

    def column_label(self, method: str) -> str:
        """A column's headline: a steered one names the prompt it runs on top of ("Instruction + SAE-steered")."""
        return column_label(method, self.prompt)

    def requests(self, residual_layers: tuple[int, ...] = RESIDUAL_LAYERS) -> list[Request]:
        """One request a column; the residual vector at residual_layers (the model's: model_defaults)."""
        return [
            Request(
                self.question,
                self.student_answer,
                m,
                self.level,
                steer=self.steer(m, residual_layers) if methods.get(m).steers else None,
                k_shots=self.k_shots,
            )
            for m in self.methods
        ]


def warm_prefixes(lm) -> int:
    """Read the prompt prefixes of a default Compare at every level (the system turn, each level's few-shot
    examples) into the prefix cache, so the first visitor at a level waits for their own question only (3.8 s
    for all seven on 2 CPU cores, 101 MiB), make the few-row kernel's packed weights (0.3 s) and load the C++
    decoder layers (built once a machine, about 10 s; lean_step.py) and the views' attention kernel. Returns how
    many prefixes were read."""
    from ..model import lean_step
    from ..model.attention_kernel import attention_kernel
    from ..model.small_batch import pack_weights

    pack_weights(lm.model)
    if lean_step.takes(lm.model):
        lean_step.lean_layers()
        attention_kernel()
    columns = [
        CompareRequest(question=".", student_answer=".", level=lv).requests(residual_layers(lm)) for lv in LEVELS
    ]
    # the steered columns read the unsteered column's prompt: they steer the reply only
    return read_prefixes(lm, [r for reqs in columns for r in reqs if not methods.get(r.method).steers])


def column_label(method: str, prompt: str = PLAIN) -> str:
    """A column's headline under a prompt: a steered method's names the prompt it runs on top of."""
    on_top = prompt != PLAIN and methods.get(method).steers
    return (f"{methods.label(prompt)} + " if on_top else "") + methods.headline(method)


KNOBS = knobs_of(CompareRequest)
MAX_STRENGTH = KNOBS["strength"].shown_hi
API = tuple(KNOBS)  # the /compare parameters, in order


@dataclass
class Inspection:
    """What the Compare run shows of the SAE-steered reply: its latent view and attention view (from one steered
    replay) and how separable the levels are per layer and head."""

    latents: object  # inspect.latents.LatentView
    attention: object  # inspect.attention.AttentionView
    separability: tuple[list[int], object]  # (layers, scores (layers, heads))
    seconds: float


@dataclass
class CompareResult:
    request: CompareRequest
    outputs: dict[str, Output]
    judgements: dict[str, dict] = field(default_factory=dict)
    seconds: float = 0.0
    inspection: Inspection | None = None  # filled at the end of the run
    saved: dict | None = None  # a restored report's charts and attention text (no inspection: no model)
    charting: bool = False  # judged, its inspection and charts being made (shown before them)
    _drawn: dict | None = field(default=None, repr=False, compare=False)  # figures(), drawn once for a finished run

    @property
    def done(self) -> bool:
        """Generated and judged."""
        return bool(self.judgements)

    def record(self, model: str) -> dict:
        """The downloadable report of one run: inputs, settings, outputs, judge scores, and (once inspected) the
        charts and attention text, so that opening the report restores the run without the model (views.reports)."""
        from .. import __version__, charts

        req = asdict(self.request)
        inputs = {k: req.pop(k) for k in ("question", "student_answer", "level")}
        req["layers"] = layers_label(self.request.layers)
        req["alpha"] = self.request.steer("sae").alpha
        shown = {}
        if self.inspection is not None or self.saved:
            figures = self.figures()
            shown = {
                "figures": {n: charts.saved_figure(f) for n, f in figures.items()},
                "attention_html": self.attention_html(),
            }
        return {
            "view": "compare",
            "format": REPORT_FORMAT,
            "version": __version__,
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
            **shown,
        }

    @classmethod
    def from_record(cls, record: dict, request: CompareRequest) -> CompareResult:
        """A run as its report recorded it (views.reports.read_report checks the report first)."""
        level = request.level
        outputs = {
            m: Output(o["text"], m, level if m != "none" else "-", int(o.get("new_tokens", 0)), 0.0)
            for m, o in record["outputs"].items()
        }
        judgements = {m: o["judge"] for m, o in record["outputs"].items() if o.get("judge")}
        saved = {"figures": record.get("figures", {}), "attention_html": record.get("attention_html", "")}
        return cls(request, outputs, judgements, float(record.get("seconds", 0.0)), saved=saved)

    def write_report(self, model: str) -> str:
        """The report as a JSON file (for a download); its path."""
        with tempfile.NamedTemporaryFile("w", prefix="bloom-steer-run-", suffix=".json", delete=False) as fh:
            json.dump(self.record(model), fh, indent=1)
        return fh.name

    def status(self) -> str:
        """One paragraph: how long it took, which methods the judge reads at the level asked for, the settings."""
        req = self.request
        if not self.done:
            return f"Generating... {max(o.new_tokens for o in self.outputs.values())} tokens"
        hits = [m for m, v in self.judgements.items() if v["pred"] == req.level]
        hit_text = ", ".join(req.column_label(m) for m in hits) or "none of the methods"
        charts = (
            ""
            if self.inspection is None
            else (f"; charts show layer {self.inspection.latents.layer}, head {self.inspection.latents.head}")
        )
        return (
            f"Done in {self.seconds:.1f} s. The judge reads **{hit_text}** as '{req.level}'. "
            f"Steered layers {layers_label(req.layers)}, strength {req.strength:g} "
            f"(alpha {req.steer('sae').alpha:g}, target {req.target}){req.on_top_note}{charts}."
            + (" Drawing the charts..." if self.charting else "")
        )

    def judge_chart(self):
        """The judge's probabilities of every column, the chart a run shows once judged."""
        from .. import charts

        probs = {m: [v["probs"][lv] for lv in LEVELS] for m, v in self.judgements.items()}
        return charts.judge_probs(probs, self.request.level)

    def figures(self) -> dict:
        """The run's charts by name: bars, heat, trace, probs, sep (the SAE's inside and the judge) and attention.
        Drawn once for a finished run (the app shows them, then its report records them)."""
        if self._drawn is None or not self.done:
            self._drawn = self._draw()
        return self._drawn

    def _draw(self) -> dict:
        from .. import charts

        if self.saved is not None:  # a report's charts; one kept without them still shows the judge's
            drawn = {"probs": self.judge_chart()}
            return drawn | {n: charts.figure_from_saved(f) for n, f in self.saved["figures"].items()}
        req, view, att = self.request, self.inspection.latents, self.inspection.attention
        before, after = view.mean_codes()
        fb = slice(view.prompt_len, None)
        where = f"layer {view.layer}, head {view.head}"
        layers, scores = self.inspection.separability
        names, unsteered, steered = att.part_shares()
        heads = "all heads" if len(att.heads) == scores.shape[1] else "heads " + ", ".join(map(str, att.heads))
        shown = list(range(scores.shape[1])) if req.heads is None else list(req.heads)
        return {
            "bars": charts.latent_bars(
                before, after, view.prototype, level=req.level, where=(view.layer, view.head),
                title=f"Top latents ({where}): before vs after steering vs '{req.level}' prototype; click a bar for "
                "its card",
            ),
            "heat": charts.token_latent_heatmap(
                view.tokens[fb] or view.tokens, view.after[fb] if view.after[fb].size else view.after,
                title=f"Sparse code per token of the SAE-steered feedback ({where})", where=(view.layer, view.head),
            ),
            "trace": charts.descent_trace(
                view.trace, req.level, probs=view.level_probs, objective=view.objective,
                objective_name=view.objective_name,
            ),
            "probs": self.judge_chart(),
            "sep": charts.separability_map(scores, layers, highlight=(view.layer, shown)),
            "attention": charts.attention_parts(
                names, unsteered, steered,
                title=f"Where the SAE-steered reply looks, steered toward '{req.level}' or not "
                f"(layer {att.layer}, {heads})",
            ),
        }  # fmt: skip

    def attention_html(self) -> str:
        from .. import charts

        if self.saved is not None:
            return self.saved["attention_html"]
        att = self.inspection.attention
        return charts.attention_text(att.tokens, att.change.tolist())


def inspect_sae_reply(lm, req: CompareRequest, reply: Output, recording: RowRecording) -> Inspection:
    """The SAE-steered reply as its steering ran it (the latent view and the steered side of the attention view),
    an unsteered replay of it (the attention view's baseline), and the separability map. recording: what the
    generation kept of the reply's row, which spares replaying it (inspect/replay.recorded_pair)."""
    from ..inspect.attention import attention_view
    from ..inspect.latents import latent_view, separability_scores
    from ..inspect.replay import recorded_pair

    t0 = time.time()
    cfg = req.steer("sae")
    sae_req = Request(req.question, req.student_answer, "sae", req.level, steer=cfg, k_shots=req.k_shots)
    steered, plain = recorded_pair(lm, sae_req, reply.token_ids, recording)
    latents = latent_view(lm, steered)
    return Inspection(latents, attention_view(lm, steered, plain), separability_scores(lm), time.time() - t0)


def compare_stream(
    lm, req: CompareRequest, judge=None, inspect: bool = True, ignore_stop: bool = False, reuse: bool = True
) -> Iterator[CompareResult]:
    """All methods in one batched generation; yields the texts so far after every token, then once more judged,
    and (inspect) once more with the SAE-steered reply's inspection: the whole Compare click. ignore_stop: always
    generate max_new_tokens (benchmarks compare equal work). reuse: the columns that do not steer may be the replies
    kept from an earlier click with the same question and settings (reply_cache.py), not generated again."""
    if req.level is None:
        raise UserError("choose a Bloom level to steer toward")
    req.check_against(lm)
    t0 = time.time()
    reqs = req.requests(residual_layers(lm))
    sae_row = [r.method for r in reqs].index("sae")
    recording = RowRecording(sae_row, req.steer("sae").middle_layer) if inspect else None
    outs: list[Output] = []
    stream = stream_reusing if reuse else stream_batch
    for outs in stream(
        lm, reqs, max_new_tokens=req.max_new_tokens, seed=req.seed, ignore_stop=ignore_stop, record=recording, **VIEWS
    ):
        yield CompareResult(req, {r.method: o for r, o in zip(reqs, outs)}, seconds=time.time() - t0)
    from ..judge.classifier import default_judge

    judge = judge or default_judge()
    verdicts = judge.judge([o.text for o in outs])
    result = CompareResult(
        req, {r.method: o for r, o in zip(reqs, outs)}, {r.method: v for r, v in zip(reqs, verdicts)}
    )
    if inspect:  # the verdicts are shown before the inspection and the charts are made
        yield replace(result, seconds=time.time() - t0, charting=True)
        result.inspection = inspect_sae_reply(lm, req, result.outputs["sae"], recording)
    result.seconds = time.time() - t0
    yield result
