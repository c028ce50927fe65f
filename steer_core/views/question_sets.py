"""A set of questions a teacher brings: an uploaded CSV or JSONL read into scenarios (bad rows listed
by line with the reason, the rest kept), then the evaluation grid run on it one scenario at a time,
judged as it goes, with accuracy and r per method and 95% intervals over the uploaded scenarios.

The app's "Your questions" tab and its /evaluate endpoint are this module behind widgets; the
numbers are the `eval` command's (same grid, judge and summary), on the user's scenarios.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .. import methods as method_names
from ..bloom import LEVELS, Scenario, normalize_level
from ..errors import UserError
from ..evaluation.grid import Grid, scenario_batches
from ..evaluation.judging import add_judgements
from ..evaluation.results import RESULT_FIELDS
from ..evaluation.stats import SUMMARY_FIELDS, summarize
from ..evaluation.tables import fmt_number, interval_text
from ..generation import EVAL_TOKENS, check_inputs
from ..steering.config import SteerConfig
from ..steering.model_defaults import default_layers, residual_layers

log = logging.getLogger(__name__)

SUFFIXES = (".csv", ".jsonl")
COLUMNS = ("question", "student_answer")  # required; "id" is optional
MAX_UPLOAD_BYTES = 2_000_000
MAX_ID_CHARS = 120
CPU_LIMIT = 30  # scenarios a run: about 10 minutes of a 2-core CPU at the defaults (docs/performance.md)
GPU_LIMIT = 100  # one ZeroGPU call holds the GPU for at most 5 minutes (a ZeroGPU maintainer's answer,
# huggingface.co/spaces/zero-gpu-explorers/README/discussions/7); the GPU speed itself is unmeasured


def scenario_limit(device=None) -> int:
    """The most scenarios one run takes: $STEER_EVAL_LIMIT, else 30 on a CPU and 100 on a GPU."""
    raw = os.environ.get("STEER_EVAL_LIMIT", "").strip()
    if raw:
        if not raw.isdigit() or int(raw) < 1:
            raise UserError(f"STEER_EVAL_LIMIT must be a whole number >= 1, got {raw!r}")
        return int(raw)
    return GPU_LIMIT if getattr(device, "type", str(device)) == "cuda" else CPU_LIMIT


@dataclass(frozen=True)
class BadRow:
    line: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


@dataclass
class QuestionSet:
    """The usable scenarios of an upload, and the rows that were left out (and why)."""

    name: str
    scenarios: list[Scenario]
    bad: list[BadRow] = field(default_factory=list)

    def describe(self, limit: int | None = None) -> str:
        text = f"{self.name}: {len(self.scenarios)} scenario{'s' if len(self.scenarios) != 1 else ''} to run"
        if limit is not None:
            text += f" (at most {limit} a run)"
        if self.bad:
            text += f"; {len(self.bad)} row{'s' if len(self.bad) != 1 else ''} left out"
        return text


def read_question_set(path: str | Path | None, limit: int = CPU_LIMIT) -> QuestionSet:
    """An uploaded file -> its scenarios. Refuses, with a message that says what to do, a missing file,
    a wrong type, a file too big, bytes that are not UTF-8, missing columns, no usable rows and more
    usable rows than `limit`; a single bad row is only left out and listed."""
    if path is None or not str(path).strip():
        raise UserError("Upload a .csv or .jsonl file with the columns question and student_answer (id optional).")
    path = Path(path)
    name = path.name
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        kind = f"a {suffix} file" if suffix else "a file without an extension"
        raise UserError(
            f"{name} is {kind}; upload a .csv or .jsonl file with the columns question and student_answer "
            "(id optional). From a spreadsheet: save as CSV UTF-8."
        )
    if not path.is_file():
        raise UserError(f"{name}: the upload did not arrive; please upload it again.")
    size = path.stat().st_size
    if size > MAX_UPLOAD_BYTES:
        raise UserError(f"{name} is {size / 1e6:.1f} MB; the limit is {MAX_UPLOAD_BYTES / 1e6:g} MB.")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise UserError(
            f"{name} is not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line} cannot be read); "
            "save it as UTF-8 (in a spreadsheet: CSV UTF-8)."
        ) from None
    if "\x00" in text:
        raise UserError(f"{name} contains NUL bytes: it is a binary file, not CSV or JSONL text.")
    records = _csv_records(text, name) if suffix == ".csv" else _jsonl_records(text, name)
    scenarios, bad, first_line = [], [], {}
    for line, fields, problem in records:
        if problem is None:
            sc = _scenario(line, fields)
            if isinstance(sc, str):
                problem = sc
            elif sc.scenario_id in first_line:
                problem = f"the id {sc.scenario_id!r} is already used on line {first_line[sc.scenario_id]}"
            else:
                first_line[sc.scenario_id] = line
                scenarios.append(sc)
        if problem is not None:
            bad.append(BadRow(line, problem))
    if not scenarios:
        listed = "; ".join(map(str, bad[:5])) + (f"; and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise UserError(f"{name} has no usable rows" + (f" ({listed})." if bad else "."))
    if len(scenarios) > limit:
        raise UserError(
            f"{name} has {len(scenarios)} usable rows; one run takes at most {limit} on this server "
            "(STEER_EVAL_LIMIT sets it). Split the file into smaller ones."
        )
    return QuestionSet(name, scenarios, bad)


def _csv_records(text: str, name: str) -> list[tuple[int, dict | None, str | None]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if header is None:
            raise UserError(f"{name} is empty: its first line must name the columns question and student_answer.")
        names = [h.strip().lower() for h in header]
        _check_columns(name, names, "its header has " + (", ".join(repr(h) for h in header) or "no names"))
        out = []
        for row in reader:
            line = reader.line_num
            if not any(cell.strip() for cell in row):
                continue  # a blank line
            if len(row) > len(names):
                why = f"{len(row)} fields, but the header names {len(names)} (put text with commas in quotes)"
                out.append((line, None, why))
                continue
            out.append((line, dict(zip(names, row)), None))
    except csv.Error as exc:
        raise UserError(f"{name} line {reader.line_num}: not valid CSV ({exc})") from None
    return out


def _jsonl_records(text: str, name: str) -> list[tuple[int, dict | None, str | None]]:
    out = []
    for line, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as exc:
            out.append((line, None, f"not valid JSON ({exc.msg} at column {exc.colno})"))
            continue
        if not isinstance(obj, dict):
            why = f'expected an object {{"question": ..., "student_answer": ...}}, got {type(obj).__name__}'
            out.append((line, None, why))
            continue
        out.append((line, {str(k).strip().lower(): v for k, v in obj.items()}, None))
    objects = [f for _, f, p in out if p is None]
    if objects:
        _check_columns(name, sorted(set().union(*objects)), "no line has it")
    elif not out:
        raise UserError(f"{name} is empty: give one JSON object a line with question and student_answer.")
    return out


def _check_columns(name: str, names: Sequence[str], where: str) -> None:
    missing = [c for c in COLUMNS if c not in names]
    if missing:
        raise UserError(
            f"{name} lacks the column{'s' if len(missing) > 1 else ''} {' and '.join(missing)} ({where}); "
            "the columns are question, student_answer and optionally id."
        )


def _scenario(line: int, fields: dict) -> Scenario | str:
    """A row as a scenario, or why it cannot be one."""
    values = {}
    for col in COLUMNS:
        v = fields.get(col)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            v = str(v)
        if v is None:
            return f"no {col}"
        if not isinstance(v, str):
            return f"{col} must be text, got {type(v).__name__}"
        values[col] = v.strip()
    try:
        check_inputs(values["question"], values["student_answer"])
    except UserError as exc:
        return str(exc)
    sid = fields.get("id")
    sid = f"line-{line}" if sid is None or not str(sid).strip() else str(sid).strip()
    if len(sid) > MAX_ID_CHARS:
        return f"the id is longer than {MAX_ID_CHARS} characters"
    return Scenario(sid, values["question"], values["student_answer"], split="uploaded")


def check_levels(levels) -> tuple[str, ...]:
    """Chosen levels -> distinct known levels in Bloom order (None or empty -> all six)."""
    if levels is None or (not isinstance(levels, str) and len(levels) == 0):
        return LEVELS
    items = [levels] if isinstance(levels, str) else list(levels)
    chosen = {normalize_level(str(lv)) for lv in items}
    return tuple(lv for lv in LEVELS if lv in chosen)


def check_methods(chosen) -> tuple[str, ...]:
    """Chosen methods -> distinct methods in the demo's order, unsteered always first (None or empty ->
    the Compare tab's): every accuracy is read against the unsteered reply of the same scenario."""
    if chosen is None or (not isinstance(chosen, str) and len(chosen) == 0):
        return method_names.compare_columns()
    items = {str(m).strip().lower() for m in ([chosen] if isinstance(chosen, str) else chosen)}
    offered = method_names.on_sets()  # what a set can be run with
    unknown = sorted(items - set(offered))
    if unknown:
        raise UserError(f"unknown method {unknown[0]!r}; choose from {', '.join(offered)}")
    return tuple(m for m in offered if m in items | {"none"})


@dataclass
class SetRun:
    """An evaluation of an uploaded set so far: the judged rows, the scenarios that failed (and why),
    how many are done. Everything computed stays here when a later scenario fails."""

    questions: QuestionSet
    levels: tuple[str, ...]
    methods: tuple[str, ...]
    rows: list[dict] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (scenario id, reason)
    done: int = 0
    seconds: float = 0.0
    finished: bool = False

    @property
    def total(self) -> int:
        return len(self.questions.scenarios)

    def summary(self) -> list[dict]:
        """summary.csv's rows (per method and level, and "ALL"), with intervals over the scenarios so far."""
        return summarize(self.rows) if self.rows else []

    def overall(self, summary: list[dict] | None = None) -> list[dict]:
        """The "ALL" summary row of each method, in the run's method order."""
        rows = {s["method"]: s for s in (self.summary() if summary is None else summary) if s["level"] == "ALL"}
        return [rows[m] for m in self.methods if m in rows]

    def eta_seconds(self) -> float | None:
        if not self.done or self.finished:
            return None
        return self.seconds / self.done * (self.total - self.done)

    def table(self, summary: list[dict] | None = None) -> tuple[list[str], list[list]]:
        """(headers, rows): per method, replies, accuracy and r with their 95% intervals over the
        scenarios, perplexity against unsteered, and the share of each judged level."""
        headers = ["method", "replies", "accuracy [95% CI]", "r [95% CI]", "perplexity", *self.levels_judged()]
        rows = []
        for s in self.overall(summary):
            shares = [f"{float(s[f'judged_{lv}']):.0%}" for lv in LEVELS]
            rows.append(
                [
                    method_names.label(s["method"]),
                    int(s["n"]) if s["method"] != "none" else int(s["n"]) // len(LEVELS),
                    interval_text(s, "accuracy"),
                    "-" if s["method"] == "none" else interval_text(s, "level_corr", "+.2f"),
                    _perplexity_text(s),
                    *shares,
                ]
            )
        return headers, rows

    def status(self) -> str:
        """Where the run is: scenarios done and time left, or the end with how to read the figures and what failed."""
        if not self.finished:
            left = self.eta_seconds()
            eta = "" if left is None else f", about {left / 60:.1f} min left"
            return f"Running: {self.done} of {self.total} scenarios done{eta}. The table grows as they finish."
        failed = "".join(f"\n- scenario `{sid}`: {why}" for sid, why in self.failed)
        return (
            f"Done in {self.seconds:.0f} s: {self.done} scenario{'s' if self.done != 1 else ''}, {len(self.rows)} "
            "replies judged. Accuracy is the share of replies the judge reads at the level asked for (chance 1/6); r "
            "is the correlation of judged with target level; intervals are 95% bootstrap intervals over your "
            "scenarios." + (f"\n\n{len(self.failed)} scenario(s) failed and are not counted:{failed}" if failed else "")
        )

    def reply_rows(self) -> list[list]:
        """Every reply: scenario id, method, the level asked for, the judged level, the judge's probability of the
        level asked for, the text."""
        return [
            [
                r["scenario_id"],
                method_names.label(r["method"]),
                r["level"],
                r["pred"],
                float(r["target_prob"] or 0),
                r["text"],
            ]
            for r in self.rows
        ]

    @staticmethod
    def levels_judged() -> list[str]:
        return [f"judged {lv}" for lv in LEVELS]

    def results_csv(self) -> str:
        """One judged reply a line, with the scenario's question and answer (for a spreadsheet)."""
        by_id = {s.scenario_id: s for s in self.questions.scenarios}
        fields = ["scenario_id", "question", "student_answer", *[f for f in RESULT_FIELDS if f != "scenario_id"]]
        rows = [{**r, "question": by_id[r["scenario_id"]].question} for r in self.rows]
        for r in rows:
            r["student_answer"] = by_id[r["scenario_id"]].student_answer
        return _csv_text(rows, fields)

    def summary_csv(self, summary: list[dict] | None = None) -> str:
        return _csv_text(self.summary() if summary is None else summary, SUMMARY_FIELDS)


def _perplexity_text(s: dict) -> str:
    ppl = fmt_number(s.get("ppl"), ".2f")
    return "-" if ppl == "-" else f"{ppl} ({fmt_number(s.get('ppl_ratio'), '.2f')}x)"


def _csv_text(rows: list[dict], fields: list[str]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def evaluate_set(
    lm,
    questions: QuestionSet,
    levels=None,
    methods=None,
    steer: SteerConfig | None = None,
    max_new_tokens: int = EVAL_TOKENS,
    judge=None,
) -> Iterator[SetRun]:
    """Run the grid (methods x levels) on every scenario of the set, one batch per scenario, each judged
    as soon as it is generated; yields the run before the first scenario and after every one. A
    scenario that fails is recorded with its reason and the run goes on; a setting that cannot work at
    all (e.g. no learned offsets for this model) stops it at the first scenario, with its message."""
    from ..judge.classifier import default_judge

    run = SetRun(questions, check_levels(levels), check_methods(methods))
    steer = steer or SteerConfig(layers=default_layers(lm) or (lm.middle_layer,))  # unprepared: its offsets' message
    judge = judge or default_judge()
    t0 = time.time()
    yield run
    for sc in questions.scenarios:
        try:
            grid = Grid(
                methods=run.methods,
                levels=run.levels,
                layer_sets=[steer.layers],
                steer=steer,
                max_new_tokens=max_new_tokens,
                residual_layers=residual_layers(lm),
            )
            for batch in scenario_batches(lm, sc, grid):
                run.rows += add_judgements(batch, judge)
        except UserError as exc:
            if not run.rows:
                raise
            run.failed.append((sc.scenario_id, str(exc)))
        except Exception as exc:  # one scenario's failure must not lose the others
            log.exception("evaluating scenario %s failed", sc.scenario_id)
            run.failed.append((sc.scenario_id, f"internal error ({type(exc).__name__})"))
        run.done += 1
        run.seconds = time.time() - t0
        yield run
    run.finished = True
    yield run
