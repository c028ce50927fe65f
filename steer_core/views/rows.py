"""The one-question views of a teacher (the level ladder, the strength sweep): rows of one batched
generation that share the comparison's settings (`CompareRequest.steer`), streamed, then judged, with the
perplexity of every reply under the unsteered model and a JSON/CSV record."""

from __future__ import annotations

import csv
import io
import json
import math
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

from .. import methods
from ..bloom import LEVELS
from ..fluency import perplexities
from ..generation import VIEWS, Output, Request, stream_batch
from ..layer_spec import layers_label
from ..reply_cache import stream_reusing
from ..steering.config import RESIDUAL_LAYERS
from ..steering.model_defaults import residual_layers
from .compare import REPORT_FORMAT, CompareRequest


@dataclass(frozen=True)
class Row:
    """One reply of a view: what it is called, how it was made, toward which level."""

    name: str
    method: str
    level: str  # the target level (the unsteered row: "-")
    strength: float | None = None


def row_request(req: CompareRequest, row: Row, residual_layers: tuple[int, ...] = RESIDUAL_LAYERS) -> Request:
    level = None if row.level == "-" else row.level
    base = req if row.strength is None else replace(req, strength=row.strength)
    steer = base.steer(row.method, residual_layers) if methods.get(row.method).steers else None
    return Request(req.question, req.student_answer, row.method, level, steer=steer, k_shots=req.k_shots)


@dataclass
class ViewResult:
    """The replies of a ladder or sweep so far; verdicts and perplexities once generation is done."""

    kind: str  # "ladder" or "sweep"
    request: CompareRequest
    rows: list[Row]
    outputs: list[Output]
    verdicts: list[dict] = field(default_factory=list)
    perplexities: list[float] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def done(self) -> bool:
        return bool(self.verdicts)

    @property
    def complete(self) -> bool:
        """Judged and every perplexity read: what its downloads hold (a ladder is shown judged before that)."""
        return self.done and len(self.perplexities) == len(self.outputs)

    def level_probability(self, i: int) -> float:
        """The judge's probability of the level row i was steered toward (NaN for the unsteered row: none)."""
        row = self.rows[i]
        if not self.done or row.level == "-":
            return float("nan")
        return float(self.verdicts[i]["probs"][row.level])

    def table(self) -> list[dict]:
        out = []
        for i, (row, o) in enumerate(zip(self.rows, self.outputs)):
            v = self.verdicts[i] if self.done else {}
            out.append(
                {
                    "row": row.name,
                    "method": row.method,
                    "level": row.level,
                    "strength": "" if row.strength is None else row.strength,
                    "text": o.text,
                    "judged": v.get("pred", ""),
                    "level_prob": "" if math.isnan(p := self.level_probability(i)) else round(p, 4),
                    "perplexity": round(self.perplexities[i], 3) if self.perplexities else "",
                    "new_tokens": o.new_tokens,
                }
            )
        return out

    def record(self, model: str) -> dict:
        """The downloadable report: inputs, settings, every row with its verdict's probabilities, so that
        opening it restores the view without the model (views.reports)."""
        from .. import __version__

        r = self.request
        chosen = (
            {"baseline": next((w.method for w in self.rows if w.method not in ("none", "sae", r.prompt)), "none")}
            if self.kind == "ladder"
            else {"strengths": [row.strength for row in self.rows]}
        )
        rows = self.table()
        for i, row in enumerate(rows):
            row["probs"] = self.verdicts[i]["probs"] if self.done else None
        return {
            "view": self.kind,
            "format": REPORT_FORMAT,
            "version": __version__,
            "model": model,
            "inputs": {"question": r.question, "student_answer": r.student_answer}
            | ({} if r.level is None else {"level": r.level}),
            "settings": {
                "layers": layers_label(r.layers),
                "target": r.target,
                "strength": r.strength,
                "alpha": r.steer("sae").alpha,
                "positions": r.positions,
                "prompt": r.prompt,
                "max_new_tokens": r.max_new_tokens,
                "seed": r.seed,
                **chosen,
            },
            "rows": rows,
            "levels": list(LEVELS),
            "seconds": round(self.seconds, 3),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }

    @classmethod
    def from_record(cls, record: dict, request: CompareRequest) -> ViewResult:
        """A view as its report recorded it (views.reports.read_report checks the report first)."""
        rows, outputs, verdicts, ppl = [], [], [], []
        for r in record["rows"]:
            strength = None if r.get("strength") in ("", None) else float(r["strength"])
            rows.append(Row(r["row"], r["method"], r["level"], strength))
            outputs.append(Output(r["text"], r["method"], r["level"], int(r.get("new_tokens") or 0), 0.0))
            verdicts.append({"pred": r.get("judged", ""), "probs": r.get("probs") or {}})
            ppl.append(float(r["perplexity"]) if r.get("perplexity") not in ("", None) else float("nan"))
        done = all(v["probs"] for v in verdicts)
        return cls(record["view"], request, rows, outputs, verdicts if done else [], ppl if done else [],
                   float(record.get("seconds", 0.0)))  # fmt: skip

    def chart(self):
        """The ladder's judged-against-target chart, or the sweep's probability and perplexity against strength."""
        from .. import charts

        if self.kind == "ladder":
            steered = [i for i, r in enumerate(self.rows) if r.method != "none"]
            return charts.ladder_chart(
                [self.rows[i].level for i in steered],
                [self.verdicts[i]["pred"] for i in steered],
                [self.level_probability(i) for i in steered],
                [self.rows[i].method for i in steered],
            )
        probs = [self.level_probability(i) for i in range(len(self.rows))]
        base = next((p for r, p in zip(self.rows, self.perplexities) if r.strength == 0), None)
        return charts.sweep_chart([r.strength for r in self.rows], probs, self.perplexities, self.request.level, base)

    def status(self) -> str:
        req = self.request
        if not self.done:
            return f"Generating... {max(o.new_tokens for o in self.outputs)} tokens"
        if self.kind == "ladder":
            hits = sum(self.verdicts[i]["pred"] == r.level for i, r in enumerate(self.rows) if r.method == "sae")
            reading = "" if self.complete else " Reading each reply's perplexity for the downloads..."
            return (
                f"Done in {self.seconds:.1f} s. The judge reads {hits} of the 6 SAE-steered replies at the level asked "
                f"for (chance: 1). Strength {req.strength:g} (alpha {req.steer('sae').alpha:g}, target {req.target}), "
                f"layers {layers_label(req.layers)}{req.on_top_note}.{reading}"
            )
        probs = [self.level_probability(i) for i in range(len(self.rows))]
        best = max(range(len(probs)), key=lambda i: probs[i])
        return (
            f"Done in {self.seconds:.1f} s. The judge gives '{req.level}' its highest probability "
            f"({probs[best]:.2f}) at strength {self.rows[best].strength:g}."
        )

    def write_files(self, model: str) -> tuple[str, str]:
        """The record (JSON) and the table (CSV) as files for downloads; their paths."""
        paths = []
        for suffix, text in ((".json", json.dumps(self.record(model), indent=1)), (".csv", self.csv_text())):
            with tempfile.NamedTemporaryFile(
                "w", prefix=f"bloom-steer-{self.kind}-", suffix=suffix, delete=False
            ) as fh:
                fh.write(text)
            paths.append(fh.name)
        return paths[0], paths[1]

    def csv_text(self) -> str:
        buf = io.StringIO()
        rows = self.table()
        w = csv.DictWriter(buf, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
        return buf.getvalue()


def view_stream(
    lm, req: CompareRequest, rows: list[Row], kind: str, judge=None, ignore_stop: bool = False, reuse: bool = True
) -> Iterator[ViewResult]:
    """All rows in one batched generation; yields after every token, then once more judged and with
    each reply's perplexity under the unsteered model (what the sweep's fluency axis shows). A ladder's chart does
    not show perplexity: it is yielded judged before they are read too (about a quarter of its click). ignore_stop:
    every reply runs to max_new_tokens (bench, so that every round does the same work). reuse: the unsteered reply
    and the plain prompt's read kept from an earlier click on the question (a Compare's, say) are taken, and this
    click's kept (reply_cache.py, generation._read_group); bench's new question does without."""
    req.check_against(lm)
    t0 = time.time()
    reqs = [row_request(req, row, residual_layers(lm)) for row in rows]
    outs: list[Output] = []
    stream = stream_reusing if reuse else stream_batch
    for outs in stream(lm, reqs, max_new_tokens=req.max_new_tokens, seed=req.seed, ignore_stop=ignore_stop, **VIEWS):
        yield ViewResult(kind, req, rows, outs, seconds=time.time() - t0)
    from ..judge.classifier import default_judge

    judge = judge or default_judge()
    verdicts = judge.judge([o.text for o in outs])
    if kind == "ladder":
        yield ViewResult(kind, req, rows, outs, verdicts, seconds=time.time() - t0)
    ppl = perplexities(lm, req.question, req.student_answer, [o.token_ids for o in outs])
    yield ViewResult(kind, req, rows, outs, verdicts, ppl, time.time() - t0)
