"""The Bloom feedback dataset: size, balance, splits and the loader's error messages."""

import collections
import json
import re

import pytest

from steer_core.bloom import (
    DESCRIPTIONS,
    LEVELS,
    TEXTBOOK_VERBS,
    DatasetError,
    load_dataset,
    normalize_level,
    scenarios,
)


def test_levels_are_ordered_and_described():
    assert LEVELS == ("remember", "understand", "apply", "analyze", "evaluate", "create")
    assert set(DESCRIPTIONS) == set(LEVELS)
    assert all(len(d.split()) >= 8 for d in DESCRIPTIONS.values())


def test_normalize_level():
    assert normalize_level(" Analyse ") == "analyze"
    assert normalize_level("6") == "create"
    with pytest.raises(ValueError, match="unknown Bloom level"):
        normalize_level("synthesize")


def test_counts_and_coverage(dataset):
    scen = scenarios(dataset)
    assert len(dataset) >= 480
    assert len(scen) >= 80
    assert len({r.subject for r in dataset}) >= 25
    assert {r.school_level for r in dataset} >= {"primary", "middle school", "high school", "university"}


def test_every_scenario_has_each_level_once(dataset):
    by_scenario = collections.defaultdict(list)
    for r in dataset:
        by_scenario[r.scenario_id].append(r.level)
    for sid, levels in by_scenario.items():
        assert sorted(levels) == sorted(LEVELS), sid
    per_level = collections.Counter(r.level for r in dataset)
    assert len(set(per_level.values())) == 1


def test_splits_are_by_scenario_and_about_80_20(dataset):
    split_of = collections.defaultdict(set)
    for r in dataset:
        split_of[r.scenario_id].add(r.split)
    assert all(len(s) == 1 for s in split_of.values())
    test_share = sum(1 for s in split_of.values() if s == {"test"}) / len(split_of)
    assert 0.15 <= test_share <= 0.25
    for split in ("train", "test"):
        counts = collections.Counter(r.level for r in dataset if r.split == split)
        assert len(set(counts.values())) == 1, (split, counts)


def test_no_duplicate_feedback_and_lengths(dataset):
    texts = [" ".join(r.feedback.lower().split()) for r in dataset]
    assert len(texts) == len(set(texts))
    for r in dataset:
        n = len(r.feedback.split())
        assert 15 <= n <= 80, (r.id, n)
        sentences = [s for s in re.split(r"(?<=[.!?])\s+", r.feedback.strip()) if s]
        assert 1 <= len(sentences) <= 3, r.id


def test_levels_not_recognisable_from_one_stock_verb(dataset):
    for level, pattern in TEXTBOOK_VERBS.items():
        rows = [r for r in dataset if r.level == level]
        without = [r for r in rows if not re.search(pattern, r.feedback, re.I)]
        assert len(without) >= len(rows) / 3, level


def _write(tmp_path, rows, raw=None):
    p = tmp_path / "d.jsonl"
    lines = [json.dumps(r) for r in rows] + ([raw] if raw else [])
    p.write_text("\n".join(lines) + "\n")
    return p


GOOD = {
    "id": "X1-apply",
    "scenario_id": "X1",
    "subject": "Maths",
    "question": "q?",
    "student_answer": "a",
    "level": "apply",
    "feedback": "Try the same method on 3/5 + 1/10 and check it.",
    "split": "train",
}


@pytest.mark.parametrize(
    "change, message",
    [
        ({"level": "synthesis"}, "line 2: unknown level 'synthesis'"),
        ({"feedback": "   "}, "line 2: field 'feedback' must be a non-empty string"),
        ({"split": "dev"}, "line 2: split must be one of"),
        ({"id": "X1-apply"}, "line 2: duplicate id 'X1-apply' (first on line 1)"),
        ({"id": "X1-create", "split": "test"}, "line 2: scenario 'X1' is in both train and test"),
    ],
)
def test_loader_names_the_bad_line(tmp_path, change, message):
    bad = {**GOOD, "id": "X1-create", "level": "create", **change}
    with pytest.raises(DatasetError) as err:
        load_dataset(_write(tmp_path, [GOOD, bad]))
    assert message in str(err.value)


def test_loader_rejects_bad_json_and_missing_fields(tmp_path):
    with pytest.raises(DatasetError, match=r"line 2: invalid JSON"):
        load_dataset(_write(tmp_path, [GOOD], raw='{"id": "oops"'))
    missing = {k: v for k, v in GOOD.items() if k not in ("feedback", "level")}
    with pytest.raises(DatasetError, match=r"line 1: missing field\(s\) level, feedback"):
        load_dataset(_write(tmp_path, [missing]))
    with pytest.raises(DatasetError, match="not found"):
        load_dataset(tmp_path / "nope.jsonl")


def test_a_scenario_is_a_question_and_answer_without_a_level(dataset):
    from steer_core.bloom import Scenario
    from steer_core.errors import UserError
    from steer_core.generation import Request

    sc = scenarios(dataset)[0]
    assert isinstance(sc, Scenario) and not hasattr(sc, "level") and not hasattr(sc, "feedback")
    assert sc == next(r for r in dataset if r.scenario_id == sc.scenario_id).scenario
    assert Request(sc.question, sc.student_answer).level is None  # unsteered: no target level
    with pytest.raises(UserError, match="needs a target level"):
        Request(sc.question, sc.student_answer, "sae")
