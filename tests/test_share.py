"""Keeping and sharing a run, on a tiny random Llama with a stand-in judge: the link carries what differs from
the default and reads back to the same values; bad link values are named and left at their default; a report
restores the run without the model; the history keeps 20; the handout holds the six replies."""

import json
from urllib.parse import parse_qsl

import pytest

from steer_core.bloom import LEVELS
from steer_core.errors import UserError
from steer_core.views import handout, links, reports
from steer_core.views import history as runs
from steer_core.views.compare import CompareRequest, compare_stream
from steer_core.views.ladder import ladder_stream
from steer_core.views.presets import PRESETS
from steer_core.views.sweep import sweep_stream

Q, A = "What is 3 x 4?", "It is 7."


class FakeJudge:
    def judge(self, texts):
        return [
            {
                "pred": LEVELS[len(t) % 6],
                "probs": {lv: (0.5 if i == len(t) % 6 else 0.1) for i, lv in enumerate(LEVELS)},
            }
            for t in texts
        ]


class NoModel:
    """The loaded model's name, sizes and files, without its network or tokenizer: restoring a report that
    generated, judged by the model or replayed a reply would fail the test."""

    def __init__(self, lm):
        self._lm = lm

    def __getattr__(self, name):
        if name in ("model", "tokenizer", "generate", "forward"):
            raise AssertionError(f"restoring a report touched the model ({name})")
        return getattr(self._lm, name)


def request(**kw):
    base = {"level": "analyze", "layers": "1,2", "target": "delta", "max_new_tokens": 5, "strength": 0.5}
    return CompareRequest.from_ui(question=Q, student_answer=A, **(base | kw))


@pytest.fixture(scope="module")
def compare_record(steerable_lm):
    *_, result = compare_stream(steerable_lm, request(heads=[0, 1]), judge=FakeJudge())
    return result.record(steerable_lm.label)


@pytest.fixture(scope="module")
def ladder_record(steerable_lm):
    *_, result = ladder_stream(steerable_lm, request(level=None, layers="1"), judge=FakeJudge())
    return result.record(steerable_lm.label)


def query(link: str) -> dict:
    assert link.startswith("?")
    return dict(parse_qsl(link[1:]))


def test_a_compare_link_carries_what_differs_from_the_default_and_reads_back(steerable_lm, compare_record):
    lm = steerable_lm
    params = query(links.link_query(compare_record, lm))
    assert params["tab"] == "compare" and params["question"] == Q and params["student_answer"] == A
    assert params["level"] == "analyze" and params["layers"] == "1,2" and params["heads"] == "0,1"
    assert params["strength"] == "0.5" and params["target"] == "delta" and params["max_new_tokens"] == "5"
    assert "seed" not in params and "steps" not in params and "instruction" not in params  # defaults are left out
    opened = links.read_link(params, lm)
    assert opened.runs and opened.view == "compare" and not opened.notes
    req = CompareRequest.from_ui(**opened.values)
    assert req == request(heads=[0, 1])  # the same request, so the same greedy replies


def test_ladder_and_sweep_links(steerable_lm, ladder_record):
    params = query(links.link_query(ladder_record, steerable_lm))
    assert params == {"tab": "ladder", "question": Q, "student_answer": A, "strength": "0.5", "max_new_tokens": "5"}
    *_, sweep = sweep_stream(steerable_lm, request(layers="1"), "0, 2", judge=FakeJudge())
    params = query(links.link_query(sweep.record(steerable_lm.label), steerable_lm))
    assert params["tab"] == "sweep" and params["strengths"] == "0, 2" and params["level"] == "analyze"
    opened = links.read_link(params, steerable_lm)
    assert opened.runs and opened.values["strengths"] == "0, 2"


def test_links_and_reports_carry_the_prompt_under_the_steering(steerable_lm):
    *_, result = compare_stream(steerable_lm, request(prompt="instruction"), judge=FakeJudge())
    record = result.record(steerable_lm.label)
    assert record["settings"]["prompt"] == "instruction" and "instruction" in record["outputs"]
    params = query(links.link_query(record, steerable_lm))
    assert params["prompt"] == "instruction"
    opened = links.read_link(params, steerable_lm)
    assert opened.runs and CompareRequest.from_ui(**opened.values) == request(prompt="instruction")
    *_, ladder = ladder_stream(steerable_lm, request(level=None, layers="1", prompt="instruction"), judge=FakeJudge())
    lrec = ladder.record(steerable_lm.label)
    assert lrec["settings"]["prompt"] == "instruction" and lrec["settings"]["baseline"] == "none"
    params = query(links.link_query(lrec, steerable_lm))
    assert params["prompt"] == "instruction" and "baseline" not in params
    assert links.read_link(params, steerable_lm).runs


def test_links_and_reports_restore_a_hand_steered_run(steerable_lm, tmp_path):
    hand = "1.0:3:+40, 1.1:7:-2.5"
    *_, result = compare_stream(steerable_lm, request(latents=hand), judge=FakeJudge())
    record = json.loads(json.dumps(result.record(steerable_lm.label)))  # as the report file holds it
    assert record["settings"]["latents"] == [[1, 0, 3, 40.0], [1, 1, 7, -2.5]] and "latents" in record["outputs"]
    params = query(links.link_query(record, steerable_lm))
    assert params["latents"] == hand
    opened = links.read_link(params, steerable_lm)
    assert opened.runs and CompareRequest.from_ui(**opened.values) == request(latents=hand)
    path = tmp_path / "hand.json"
    path.write_text(json.dumps(record))
    saved = reports.read_report(str(path), NoModel(steerable_lm))
    assert saved.restorable, saved.message()
    restored = reports.restore(saved)
    assert restored.request == request(latents=hand)
    assert restored.outputs["latents"].text == record["outputs"]["latents"]["text"]


@pytest.mark.parametrize(
    "params,name,why",
    [
        ({"prompt": "shout"}, "prompt", "one of plain, fewshot, instruction"),
        ({"latents": "1.0:3"}, "latents", "could not read"),
        ({"latents": "1.9:3:1"}, "latents", "head"),
        ({"strength": "9"}, "strength", "from 0 to 4"),
        ({"strength": "lots"}, "strength", "must be a number"),
        ({"layers": "99"}, "layers", "out of range"),
        ({"heads": "7"}, "heads", "head"),
        ({"level": "wise"}, "level", "unknown Bloom level"),
        ({"target": "moon"}, "target", "one of"),
        ({"instruction": "maybe"}, "instruction", "true or false"),
        ({"max_new_tokens": "2.5"}, "max_new_tokens", "whole number"),
        ({"colour": "red"}, "colour", "not a setting"),
        ({"question": "x" * 5000}, "question", "too long"),
    ],
)
def test_a_bad_link_value_is_named_left_at_its_default_and_not_run(steerable_lm, params, name, why):
    opened = links.read_link({"tab": "compare", "question": Q, "student_answer": A, **params}, steerable_lm)
    assert opened.view == "compare" and not opened.runs
    assert name not in opened.values and opened.values["question" if name != "question" else "student_answer"]
    assert len(opened.notes) == 1 and name in opened.notes[0] and why in opened.notes[0], opened.notes
    assert name in opened.message() and "Press the compare button" in opened.message()


def test_links_that_open_nothing(steerable_lm):
    assert links.read_link({}, steerable_lm).view is None and links.read_link({}, steerable_lm).message() == ""
    assert links.read_link({"__theme": "dark"}, steerable_lm).view is None
    odd = links.read_link({"tab": "moon"}, steerable_lm)
    assert odd.view is None and not odd.runs and "not a view" in odd.message()
    assert links.read_link({"question": Q, "student_answer": A}, steerable_lm).view == "compare"
    ladder = links.read_link({"tab": "ladder", "question": Q, "baseline": "sae", "level": "create"}, steerable_lm)
    assert not ladder.runs and any("baseline" in n for n in ladder.notes) and any("`level`" in n for n in ladder.notes)


def test_a_compare_report_restores_without_the_model(steerable_lm, compare_record, tmp_path):
    path = tmp_path / "run.json"
    path.write_text(json.dumps(compare_record))
    saved = reports.read_report(str(path), NoModel(steerable_lm))
    assert saved.restorable and saved.view == "compare", saved.message()
    result = reports.restore(saved)
    assert {m: o.text for m, o in result.outputs.items()} == {
        m: o["text"] for m, o in compare_record["outputs"].items()
    }
    assert result.judgements == {m: o["judge"] for m, o in compare_record["outputs"].items()}
    assert result.request == request(heads=[0, 1])
    figures = result.figures()
    assert set(figures) == {"bars", "heat", "trace", "probs", "sep", "attention"}
    assert figures["probs"].layout.template.layout.paper_bgcolor  # the shared look is put back
    assert result.attention_html() == compare_record["attention_html"] and "span" in result.attention_html()
    again = result.record(steerable_lm.label)  # a restored run records the same report
    assert again["outputs"] == compare_record["outputs"] and again["figures"] == compare_record["figures"]
    assert result.figures() is figures  # a finished run's charts are drawn once: shown, then recorded


def test_a_ladder_report_restores_and_prints(steerable_lm, ladder_record):
    saved = reports.read_report(ladder_record, NoModel(steerable_lm))
    assert saved.restorable, saved.message()
    result = reports.restore(saved)
    assert [o.text for o in result.outputs] == [r["text"] for r in ladder_record["rows"]]
    assert [v["probs"] for v in result.verdicts] == [r["probs"] for r in ladder_record["rows"]]
    assert result.chart() is not None and result.perplexities == [r["perplexity"] for r in ladder_record["rows"]]
    page = handout.handout_html(ladder_record, link="http://host/?tab=ladder")
    import html

    for row in ladder_record["rows"]:
        assert html.escape(row["text"]) in page
    assert page.count('class="level') == 6 and 'class="ref"' in page and "@page" in page
    assert html.escape(Q) in page and "http://host/?tab=ladder" in page
    with pytest.raises(UserError, match="ladder"):
        handout.handout_html({"view": "compare"})


def test_a_report_from_elsewhere_says_what_differs_and_is_not_restored(steerable_lm, compare_record):
    other = compare_record | {"model": "someone/else"}
    saved = reports.read_report(other, steerable_lm)
    assert not saved.restorable and "someone/else" in saved.message() and "Run again" in saved.message()
    assert saved.opened.values["question"] == Q  # the inputs are still filled in, to run again
    old = {k: v for k, v in compare_record.items() if k not in ("format", "version", "figures", "view")}
    saved = reports.read_report(old, steerable_lm)
    assert not saved.restorable and "format 1" in saved.message()
    rescaled = compare_record | {"settings": compare_record["settings"] | {"alpha": 123.0}}
    assert "alpha 123" in reports.read_report(rescaled, steerable_lm).message()
    with pytest.raises(UserError):
        reports.restore(saved)
    for bad in (b"not json", {"hello": 1}, {"inputs": {}, "outputs": {}, "view": "moon"}):
        with pytest.raises(UserError, match="report"):
            reports.read_report(bad, steerable_lm)


def test_the_history_keeps_the_newest_twenty_runs_once_each(compare_record, ladder_record):
    history = []
    for i in range(25):
        record = compare_record | {"inputs": compare_record["inputs"] | {"question": f"Question {i} " + "w " * 10}}
        history = runs.add_to_history(history, runs.history_entry(record, f"?tab=compare&q={i}"))
    assert len(history) == runs.HISTORY_SIZE == 20
    assert history[0]["question"].startswith("Question 24") and history[0]["question"].endswith("...")
    history = runs.add_to_history(history, runs.history_entry(compare_record, "?tab=compare&q=10"))
    assert len(history) == 20 and history[0]["query"] == "?tab=compare&q=10"
    assert sum(h["query"] == "?tab=compare&q=10" for h in history) == 1
    history = runs.add_to_history(history, runs.history_entry(ladder_record, "?tab=ladder"))
    rows = runs.history_rows(history)
    assert rows[0][1:3] == ["ladder", "every level"] and rows[1][1:3] == ["compare", "analyze"]
    assert runs.add_to_history(None, history[0]) == [history[0]]


def test_presets_are_valid_requests_and_quote_the_shipped_rows():
    """Each figure a preset's line quotes is what `summarize results/frontier/validation.csv` reads."""
    from conftest import ROOT

    from steer_core.evaluation.results import read_csv
    from steer_core.evaluation.stats import summarize, variant_text

    summary = {
        (s["method"], variant_text(s["layers"], s["setting"])): s
        for s in summarize(read_csv(ROOT / "results/frontier/validation.csv"))
        if s["level"] == "ALL"
    }
    assert len({p.name for p in PRESETS}) == len(PRESETS) >= 4
    for p in PRESETS:
        CompareRequest.from_ui(question=Q, student_answer=A, level="apply", **p.values)
        assert p.why.endswith(".") and len(p.why) < 260
        for method, variant, accuracy, ratio in p.quotes:
            s = summary[(method, variant)]
            assert s["n"] == 216 and (round(s["accuracy"], 3), round(s["ppl_ratio"], 2)) == (accuracy, ratio), p.name
            assert f"{accuracy:.3f} at {ratio:.2f}x" in p.why
