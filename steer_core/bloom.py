"""Bloom's six cognitive levels and the feedback dataset that illustrates them.

The levels are an ordered vocabulary shared by every other module (the judge's classes, the SAE
prototypes, the UI's choices), so they live here with the loader that checks the data against them.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError
from .paths import DATA_DIR

LEVELS: tuple[str, ...] = ("remember", "understand", "apply", "analyze", "evaluate", "create")

DESCRIPTIONS: dict[str, str] = {
    "remember": "Recall facts and basic concepts: name, list, define, state, get the details exactly right.",
    "understand": "Make sense of an idea: say it in plain words, summarise it, give an example, say why it happens.",
    "apply": "Use a rule, method or concept in a new situation: calculate, solve, carry out a procedure.",
    "analyze": "Take it apart: find how the parts relate, separate causes, compare and contrast, spot assumptions.",
    "evaluate": "Make and defend a judgement: weigh strengths and weaknesses, critique, decide which is better.",
    "create": "Produce something new: propose a plan, a hypothesis, an experiment, a design or an original piece.",
}

# Each level's textbook verb, as regexes: the dataset must not let one stock verb give a level away.
TEXTBOOK_VERBS: dict[str, str] = {
    "remember": r"\b(recall\w*|remember\w*)",
    "understand": r"\bexplain\w*",
    "apply": r"\b(apply|applie\w*|applying|application\w*)",
    "analyze": r"\b(analy[sz]\w*|compar\w*)",
    "evaluate": r"\b(evaluat\w*|justif\w*)",
    "create": r"\b(creat\w*|design\w*)",
}

SPLITS = ("train", "test")
FIELDS = ("id", "scenario_id", "subject", "question", "student_answer", "level", "feedback", "split")


DEFAULT_DATASET = DATA_DIR / "bloom_feedback.jsonl"


class DatasetError(UserError):
    """A dataset file that cannot be used; the message names the line and the problem."""


@dataclass(frozen=True)
class Scenario:
    """A question and a student's answer: what feedback is written for, at any level."""

    scenario_id: str
    question: str
    student_answer: str
    subject: str = ""
    split: str = "test"


@dataclass(frozen=True)
class FeedbackExample:
    id: str
    scenario_id: str
    subject: str
    question: str
    student_answer: str
    level: str
    feedback: str
    split: str
    school_level: str = ""
    sample: int = 0  # which of several replies to one scenario and level (sampled teacher data); 0 in the dataset

    @property
    def level_index(self) -> int:
        return LEVELS.index(self.level)

    @property
    def scenario(self) -> Scenario:
        return Scenario(self.scenario_id, self.question, self.student_answer, self.subject, self.split)


def normalize_level(level: str) -> str:
    """Accept 'Analyse', ' analyze ', '4' (1-based) and return the canonical level name."""
    if not isinstance(level, str):
        raise UserError(f"level must be a string, got {type(level).__name__}")
    key = level.strip().lower().replace("analyse", "analyze")
    if key.isdigit() and 1 <= int(key) <= len(LEVELS):
        return LEVELS[int(key) - 1]
    if key not in LEVELS:
        raise UserError(f"unknown Bloom level {level!r}; choose one of: {', '.join(LEVELS)}")
    return key


def _parse_row(obj: object, where: str) -> FeedbackExample:
    if not isinstance(obj, dict):
        raise DatasetError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    missing = [f for f in FIELDS if f not in obj]
    if missing:
        raise DatasetError(f"{where}: missing field(s) {', '.join(missing)}")
    for f in FIELDS:
        if not isinstance(obj[f], str) or not obj[f].strip():
            raise DatasetError(f"{where}: field {f!r} must be a non-empty string")
    if obj["level"] not in LEVELS:
        raise DatasetError(f"{where}: unknown level {obj['level']!r} (expected one of {', '.join(LEVELS)})")
    if obj["split"] not in SPLITS:
        raise DatasetError(f"{where}: split must be one of {SPLITS}, got {obj['split']!r}")
    sample = obj.get("sample", 0)
    if isinstance(sample, bool) or not isinstance(sample, int) or sample < 0:
        raise DatasetError(f"{where}: field 'sample' must be an integer >= 0")
    return FeedbackExample(**{f: obj[f] for f in FIELDS}, school_level=str(obj.get("school_level", "")), sample=sample)


def read_jsonl(path: str | Path, error: type[UserError] = UserError) -> list[tuple[int, dict]]:
    """(line number, object) for each non-blank line of a UTF-8 JSONL file; `error` names the first bad
    line (not found, not UTF-8, not JSON, not an object, or no lines at all)."""
    path = Path(path)
    if not path.is_file():
        raise error(f"no such file (not found): {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise error(f"{path}: not UTF-8 text") from None
    out = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise error(f"{path.name} line {lineno}: invalid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(obj, dict):
            raise error(f"{path.name} line {lineno}: expected a JSON object, got {type(obj).__name__}")
        out.append((lineno, obj))
    if not out:
        raise error(f"{path.name}: no rows")
    return out


def load_dataset(path: str | Path = DEFAULT_DATASET, split: str | None = None) -> list[FeedbackExample]:
    """Load and validate the JSONL dataset; raise DatasetError naming the first bad line."""
    path = Path(path)
    rows: list[FeedbackExample] = []
    seen_ids: dict[str, int] = {}
    scenario_split: dict[str, str] = {}
    for lineno, obj in read_jsonl(path, DatasetError):
        where = f"{path.name} line {lineno}"
        row = _parse_row(obj, where)
        if row.id in seen_ids:
            raise DatasetError(f"{where}: duplicate id {row.id!r} (first on line {seen_ids[row.id]})")
        seen_ids[row.id] = lineno
        first = scenario_split.setdefault(row.scenario_id, row.split)
        if first != row.split:
            raise DatasetError(f"{where}: scenario {row.scenario_id!r} is in both {first} and {row.split}")
        rows.append(row)
    if split is not None:
        if split not in SPLITS:
            raise UserError(f"split must be one of {SPLITS}")
        rows = [r for r in rows if r.split == split]
    return rows


def writer_of(scenario_id: str) -> str:
    """Who wrote a scenario: its id's leading letters (A-F in the dataset; the whole id if none)."""
    return "".join(itertools.takewhile(str.isalpha, scenario_id)).upper() or scenario_id


def by_writers(items: list, writers, what: str = "rows") -> list:
    """Only the items (rows or scenarios) by one of the writers (writer_of): each writer (A-F) wrote
    their own scenarios, so a set of writers is a cross-writer fold."""
    if not writers:
        return items
    wanted = {w.upper() for w in writers}
    items = [s for s in items if writer_of(s.scenario_id) in wanted]
    if not items:
        raise DatasetError(f"no {what} by writers {' '.join(sorted(wanted))} (scenario id letters A-F)")
    return items


def scenarios(rows: Iterable[FeedbackExample]) -> list[Scenario]:
    """The rows' scenarios, once each, in first-seen order."""
    seen: dict[str, Scenario] = {}
    for r in rows:
        if r.scenario_id not in seen:
            seen[r.scenario_id] = r.scenario
    return list(seen.values())
