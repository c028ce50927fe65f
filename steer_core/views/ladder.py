"""Teacher views built on the comparison's settings: the level ladder (one reply per Bloom level, plus
the unsteered one, optionally the same for a baseline method) and the strength sweep (one level at
several strengths). Each runs as one batched generation, streams, and ends judged, with the
perplexity of every reply under the unsteered model and a JSON/CSV record.

The steering of every row is `CompareRequest.steer`, so these views follow the default method.
"""

from __future__ import annotations

import csv
import io
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace

from .. import methods
from ..bloom import LEVELS
from ..errors import UserError
from ..generation import Output, Request, perplexity, stream_batch
from ..layer_spec import layers_label
from .compare import MAX_STRENGTH, CompareRequest

LADDER_BASELINES = methods.BASELINES
MAX_SWEEP = 6
DEFAULT_STRENGTHS = (0.0, 0.5, 1.0, 2.0, 3.0)


@dataclass(frozen=True)
class Row:
    """One reply of a view: what it is called, how it was made, toward which level."""

    name: str
    method: str
    level: str  # the target level (the unsteered row: "-")
    strength: float | None = None


def ladder_rows(baseline: str | None = None) -> list[Row]:
    """Unsteered, then SAE steering toward each level, then (optionally) the baseline toward each."""
    if baseline not in (None, "", "none", *LADDER_BASELINES):
        raise UserError(f"baseline must be one of none, {', '.join(LADDER_BASELINES)}; got {baseline!r}")
    rows = [Row("unsteered", "none", "-")] + [Row(lv, "sae", lv) for lv in LEVELS]
    if baseline and baseline != "none":
        rows += [Row(f"{methods.LABELS[baseline]}: {lv}", baseline, lv) for lv in LEVELS]
    return rows


def parse_strengths(spec) -> tuple[float, ...]:
    """'0, 0.5, 1, 2, 3' (or a list of numbers) -> sorted distinct strengths, at most MAX_SWEEP."""
    items = spec if isinstance(spec, (list, tuple)) else str(spec).replace(";", ",").split(",")
    try:
        values = sorted({float(s) for s in items if str(s).strip()})
    except ValueError:
        raise UserError(f"strengths must be numbers separated by commas, e.g. 0, 0.5, 1, 2; got {spec!r}") from None
    if not values:
        raise UserError("give at least one strength")
    if len(values) > MAX_SWEEP:
        raise UserError(f"at most {MAX_SWEEP} strengths at once, got {len(values)}")
    bad = [v for v in values if not (math.isfinite(v) and 0 <= v <= MAX_STRENGTH)]
    if bad:
        raise UserError(f"strengths must be from 0 to {MAX_STRENGTH:g}, got {bad[0]!r}")
    return tuple(values)


def sweep_rows(level: str, strengths: Sequence[float]) -> list[Row]:
    return [Row(f"strength {s:g}", "sae", level, float(s)) for s in strengths]


def row_request(req: CompareRequest, row: Row) -> Request:
    target = None if row.level == "-" else row.level
    base = req if row.strength is None else replace(req, strength=row.strength)
    steer = base.steer(row.method) if row.method in methods.STEERED else None
    return Request(req.question, req.student_answer, row.method, target, steer=steer, k_shots=req.k_shots)


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

    def target_probability(self, i: int) -> float:
        """The judge's probability of row i's target level (NaN for the unsteered row, which has none)."""
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
                    "target": row.level,
                    "strength": "" if row.strength is None else row.strength,
                    "text": o.text,
                    "judged": v.get("pred", ""),
                    "target_prob": "" if math.isnan(p := self.target_probability(i)) else round(p, 4),
                    "perplexity": round(self.perplexities[i], 3) if self.perplexities else "",
                    "new_tokens": o.new_tokens,
                }
            )
        return out

    def record(self, model: str) -> dict:
        r = self.request
        return {
            "view": self.kind,
            "model": model,
            "inputs": {"question": r.question, "student_answer": r.student_answer, "level": r.level},
            "settings": {
                "layers": layers_label(r.layers),
                "target": r.target,
                "strength": r.strength,
                "alpha": r.steer("sae").alpha,
                "positions": r.positions,
                "max_new_tokens": r.max_new_tokens,
                "seed": r.seed,
            },
            "rows": self.table(),
            "levels": list(LEVELS),
            "seconds": round(self.seconds, 3),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }

    def csv_text(self) -> str:
        buf = io.StringIO()
        rows = self.table()
        w = csv.DictWriter(buf, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
        return buf.getvalue()


def view_stream(lm, req: CompareRequest, rows: list[Row], kind: str, judge=None) -> Iterator[ViewResult]:
    """All rows in one batched generation; yields after every token, then once more judged and with
    each reply's perplexity under the unsteered model (what the sweep's fluency axis shows)."""
    req.check_against(lm)
    t0 = time.time()
    reqs = [row_request(req, row) for row in rows]
    outs: list[Output] = []
    for outs in stream_batch(lm, reqs, max_new_tokens=req.max_new_tokens, seed=req.seed):
        yield ViewResult(kind, req, rows, outs, seconds=time.time() - t0)
    from ..judge.classifier import default_judge

    judge = judge or default_judge()
    verdicts = judge.judge([o.text for o in outs])
    ppl = [perplexity(lm, req.question, req.student_answer, o.token_ids) for o in outs]
    yield ViewResult(kind, req, rows, outs, verdicts, ppl, time.time() - t0)


def ladder_stream(lm, req: CompareRequest, baseline: str | None = None, judge=None) -> Iterator[ViewResult]:
    return view_stream(lm, req, ladder_rows(baseline), "ladder", judge)


def sweep_stream(lm, req: CompareRequest, strengths, judge=None) -> Iterator[ViewResult]:
    return view_stream(lm, req, sweep_rows(req.level, parse_strengths(strengths)), "sweep", judge)
