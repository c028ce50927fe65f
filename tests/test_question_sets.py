"""A question set a user uploads: rows read by line (bad ones listed with the reason, the rest kept),
whole-file problems refused with a message, and the evaluation run on a tiny random Llama with a
stand-in judge (methods that need no SAE), growing scenario by scenario and keeping what it has when
a scenario fails."""

import json

import numpy as np
import pytest
from tiny import char_tokenizer, tiny_lm

from steer_core.bloom import LEVELS
from steer_core.errors import UserError
from steer_core.views.question_sets import (
    CPU_LIMIT,
    check_levels,
    check_methods,
    evaluate_set,
    read_question_set,
    scenario_limit,
)


def write(tmp_path, name, text, mode="w"):
    p = tmp_path / name
    if mode == "wb":
        p.write_bytes(text)
    else:
        p.write_text(text, encoding="utf-8")
    return p


GOOD_CSV = (
    "id,question,student_answer\n"
    "q1,What is 2 + 2?,5\n"
    '"q2","Why is the sky blue?","Because, I think, of the sea."\n'
    "\n"
    "q3,Name a prime number.,\n"  # empty answer
    f"q4,{'x' * 4001},too long\n"
    "q1,Duplicate id?,yes\n"
    "q6,Too,many,fields\n"
    ",What melts ice?,Heat\n"  # no id: one is made from the line
)


def test_csv_rows_are_read_by_line_and_bad_ones_listed_with_the_reason(tmp_path):
    qs = read_question_set(write(tmp_path, "mine.csv", GOOD_CSV))
    assert [s.scenario_id for s in qs.scenarios] == ["q1", "q2", "line-9"]
    assert qs.scenarios[1].student_answer == "Because, I think, of the sea."
    reasons = {b.line: b.reason for b in qs.bad}
    assert set(reasons) == {5, 6, 7, 8}
    assert "student answer is empty" in reasons[5]
    assert "too long" in reasons[6]
    assert "already used on line 2" in reasons[7]
    assert "4 fields, but the header names 3" in reasons[8]
    assert qs.describe(30) == "mine.csv: 3 scenarios to run (at most 30 a run); 4 rows left out"


def test_jsonl_rows_are_read_by_line_and_bad_ones_listed(tmp_path):
    lines = [
        json.dumps({"question": "What is 3 x 4?", "student_answer": 12, "id": 7}),  # numbers are text
        "{not json",
        "[1, 2]",
        json.dumps({"question": "Only a question"}),
        "",
        json.dumps({"Question": " Why do we see phases of the Moon? ", "Student_Answer": "Shadow."}),
    ]
    qs = read_question_set(write(tmp_path, "mine.jsonl", "\n".join(lines)))
    assert [(s.scenario_id, s.question, s.student_answer) for s in qs.scenarios] == [
        ("7", "What is 3 x 4?", "12"),
        ("line-6", "Why do we see phases of the Moon?", "Shadow."),
    ]
    assert [(b.line, b.reason.split(" (")[0]) for b in qs.bad] == [
        (2, "not valid JSON"),
        (3, 'expected an object {"question": ..., "student_answer": ...}, got list'),
        (4, "no student_answer"),
    ]


BAD_UPLOADS = [
    (None, None, "Upload a .csv or .jsonl file"),
    ("q.xlsx", b"PK\x03\x04", "is a .xlsx file; upload a .csv or .jsonl"),
    ("q.txt", "question,student_answer\na,b\n", "is a .txt file"),
    ("questions", "question,student_answer\na,b\n", "a file without an extension"),
    ("q.json", '[{"question": "a", "student_answer": "b"}]', "is a .json file"),
    ("q.csv", "question;student_answer\na;b\n", "lacks the columns question and student_answer"),
    ("q.csv", "question,answer\na,b\n", "lacks the column student_answer"),
    ("q.csv", "", "is empty"),
    ("q.csv", "question,student_answer\n", "has no usable rows"),
    ("q.csv", "question,student_answer\n,\n ,  \t\n", "has no usable rows"),
    ("q.csv", "question,student_answer\n,b\n", "has no usable rows (line 2: The question is empty"),
    ("q.csv", "question,student_answer\n" + "q,a\n" * (CPU_LIMIT + 1), f"has {CPU_LIMIT + 1} usable rows"),
    ("q.csv", "question,student_answer\nCaf\xe9,b\n".encode("latin-1"), "not UTF-8 text (byte 0xe9 on line 2"),
    ("q.csv", b"question,student_answer\n\xff\xfe,b\n", "not UTF-8"),
    ("q.csv", "question,student_answer\na\x00,b\n", "NUL bytes"),
    ("q.csv", 'question,student_answer\n"unclosed,b\n', "no usable rows"),
    ("q.csv", "x" * 2_000_001, "MB; the limit is 2 MB"),
    ("q.jsonl", "", "is empty"),
    ("q.jsonl", "\n\n", "is empty"),
    ("q.jsonl", '{"q": "a", "a": "b"}\n', "lacks the columns question and student_answer (no line has it)"),
    ("q.jsonl", "not json\n", "has no usable rows (line 1: not valid JSON"),
    ("q.jsonl", '{"question": "a", "student_answer": ["b"]}\n', "student_answer must be text, got list"),
    ("q.jsonl", json.dumps({"question": "a", "student_answer": "b", "id": "i" * 121}), "longer than 120"),
]


@pytest.mark.parametrize("name,content,message", BAD_UPLOADS)
def test_bad_uploads_are_refused_with_a_message_that_says_what_to_do(tmp_path, name, content, message):
    path = None if name is None else write(tmp_path, name, content, "wb" if isinstance(content, bytes) else "w")
    with pytest.raises(UserError) as exc:
        read_question_set(path)
    assert message in str(exc.value)


def test_the_limit_is_configurable_and_checked(monkeypatch):
    monkeypatch.delenv("STEER_EVAL_LIMIT", raising=False)
    assert scenario_limit("cpu") == CPU_LIMIT and scenario_limit("cuda") > CPU_LIMIT
    monkeypatch.setenv("STEER_EVAL_LIMIT", "5")
    assert scenario_limit("cpu") == 5
    monkeypatch.setenv("STEER_EVAL_LIMIT", "many")
    with pytest.raises(UserError, match="STEER_EVAL_LIMIT must be a whole number"):
        scenario_limit("cpu")


def test_levels_and_methods_default_and_are_checked():
    assert check_levels(None) == check_levels([]) == LEVELS
    assert check_levels(["Create", "analyse", "create"]) == ("analyze", "create")
    with pytest.raises(UserError, match="unknown Bloom level"):
        check_levels(["wise"])
    assert check_methods(None) == ("none", "sae", "query", "fewshot")
    assert check_methods(["instruction", "fewshot"]) == ("none", "fewshot", "instruction")  # unsteered always runs
    with pytest.raises(UserError, match="unknown method 'magic'"):
        check_methods(["magic"])


class StandInJudge:
    """Reads a reply's level from its length, so that tests need no trained judge."""

    def predict_proba(self, texts):
        out = np.full((len(texts), len(LEVELS)), 0.02)
        for i, t in enumerate(texts):
            out[i, len(t) % len(LEVELS)] = 0.9
        return out


@pytest.fixture(scope="module")
def lm():
    return tiny_lm(seed=1, tokenizer=char_tokenizer())


def test_a_set_runs_scenario_by_scenario_and_a_failure_keeps_the_rest(lm, tmp_path, monkeypatch):
    from steer_core.views import question_sets

    qs = read_question_set(
        write(tmp_path, "three.csv", "question,student_answer\nWhat is 2+2?,5\nWhy?,Because.\nA?,B\n")
    )
    real = question_sets.scenario_batches

    def flaky(lm, sc, *args, **kw):
        if sc.scenario_id == "line-3":
            raise RuntimeError("the device fell over")
        yield from real(lm, sc, *args, **kw)

    monkeypatch.setattr(question_sets, "scenario_batches", flaky)
    runs = [
        (r.done, len(r.rows), r.finished)
        for r in evaluate_set(lm, qs, ["remember", "create"], ["fewshot"], max_new_tokens=6, judge=StandInJudge())
    ]
    # before any scenario, after each of the three (the second fails), then finished
    assert runs == [(0, 0, False), (1, 3, False), (2, 3, False), (3, 6, False), (3, 6, True)]
    run = list(evaluate_set(lm, qs, ["remember", "create"], ["fewshot"], max_new_tokens=6, judge=StandInJudge()))[-1]
    assert run.failed == [("line-3", "internal error (RuntimeError)")]
    overall = run.overall()
    assert [s["method"] for s in overall] == ["none", "fewshot"]
    assert all(s["n_scenarios"] == 2 for s in overall)
    headers, rows = run.table()
    assert headers[:5] == ["method", "replies", "accuracy [95% CI]", "r [95% CI]", "perplexity"]
    assert [r[0] for r in rows] == ["Unsteered", "Few-shot"] and rows[0][1] == 2 and rows[1][1] == 4
    assert rows[1][2].count("[") == 1 and rows[0][3] == "-"
    results = run.results_csv().splitlines()
    assert results[0].startswith("scenario_id,question,student_answer,method") and len(results) == 1 + 6
    assert run.summary_csv().splitlines()[0].startswith("model,style,method,layers,setting,level")


def test_a_setting_that_cannot_work_stops_at_once_with_its_message(lm, tmp_path):
    qs = read_question_set(write(tmp_path, "one.csv", "question,student_answer\nWhat is 2+2?,5\n"))
    with pytest.raises(UserError, match="no learned offsets"):
        list(evaluate_set(lm, qs, ["create"], ["sae"], max_new_tokens=4, judge=StandInJudge()))
