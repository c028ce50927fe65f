"""The UI's handlers called as plain functions, without a browser or a Gradio server, on a tiny random Llama with
a stand-in judge: each returns (or streams) its outputs by name; bad input gives the one wrapper's user error;
the widget table covers every Knob kind."""

import gradio as gr
import pytest
from test_share import FakeJudge

from steer_core.bloom import LEVELS
from steer_core.steering.knobs import KINDS
from steer_core.views.compare import KNOBS
from steer_core.views.ladder import LadderRequest
from steer_core.views.sweep import SweepRequest
from ui import compare, errors, ladder, sweep, widgets

Q, A = "What is 3 x 4?", "It is 7."
BASE = {"question": Q, "student_answer": A, "layers": "1,2", "target": "delta", "max_new_tokens": 4}


def test_the_widget_table_has_a_widget_for_every_knob_kind():
    assert set(widgets.WIDGETS) == set(KINDS)
    assert {k.kind for k in KNOBS.values()} <= set(widgets.WIDGETS)


def test_compare_streams_and_its_last_output_is_every_reply_by_method_name(steerable_lm):
    outs = list(compare.run(BASE | {"level": "create"}, model=steerable_lm, judge=FakeJudge()))
    assert len(outs) > 1 and outs[0]["status"].startswith("Generating")
    last = outs[-1]
    assert set(compare.output_names()) <= set(last)
    replies = last["compare-replies"]
    assert list(replies) == ["none", "sae", "query", "fewshot"]
    for m, r in replies.items():
        assert r["text"] == last[f"out-{m}"] and r["label"].startswith(("Unsteered", "SAE", "Query", "Few"))
        assert r["judge"]["pred"] in LEVELS and set(r["judge"]["probs"]) == set(LEVELS)
    assert compare.output_names()[-1] == "compare-replies"  # the positions before it stay as they were
    assert last["report"].endswith(".json") and "Done in" in last["status"]


def test_compare_on_top_of_the_instruction_prompt_shows_the_prompt_alone_beside_it(steerable_lm):
    last = list(compare.run(BASE | {"level": "create", "prompt": "instruction"}, model=steerable_lm, judge=FakeJudge()))
    replies = last[-1]["compare-replies"]
    assert list(replies) == ["none", "sae", "query", "fewshot", "instruction"]  # the steered columns' strength 0
    assert replies["sae"]["label"].startswith("Instruction + SAE") and replies["none"]["label"] == "Unsteered"
    assert last[-1]["out-instruction"] and "on top of the instruction prompt" in last[-1]["status"]
    heads = compare.prompt_shown("instruction", {"instruction": False, "residual": False})
    assert heads[compare.columns().index("sae")]["label"].startswith("Instruction + SAE")
    assert heads[-2]["visible"] is True and heads[-1]["visible"] is False  # the prompt's column shows, unticked
    with pytest.raises(gr.Error, match="Prompt under the steering must be one of plain, fewshot, instruction"):
        list(compare.run(BASE | {"level": "create", "prompt": "rubric"}, model=steerable_lm, judge=FakeJudge()))


def test_the_ladder_on_top_of_a_prompt_has_the_prompt_alone_as_its_second_row(steerable_lm, monkeypatch):
    plain = LadderRequest.compare_request  # the tiny model has SAEs, no learned offsets: steer toward delta
    monkeypatch.setattr(LadderRequest, "compare_request", lambda self, layers=None: plain(self, layers, target="delta"))
    values = {"question": Q, "student_answer": A, "max_new_tokens": 3, "prompt": "instruction"}
    *_, out = ladder.run(values, model=steerable_lm, judge=FakeJudge())
    assert out["ladder-base-create"] and "on top of the instruction prompt" in out["status"]
    with pytest.raises(gr.Error, match="second row is that prompt alone"):
        list(ladder.run(values | {"baseline": "fewshot"}, model=steerable_lm, judge=FakeJudge()))


def test_a_bad_input_is_the_one_wrappers_user_error(steerable_lm):
    with pytest.raises(gr.Error) as err:
        list(compare.run(BASE | {"level": "create", "strength": 99}, model=steerable_lm, judge=FakeJudge()))
    assert err.value.title == errors.CHECK_INPUT and "strength" in str(err.value).lower()
    with pytest.raises(gr.Error) as err:
        list(sweep.run({"question": Q, "student_answer": A, "level": "create", "strengths": "1, x"}, steerable_lm))
    assert err.value.title == errors.CHECK_INPUT and "strengths" in str(err.value)


def test_an_internal_error_is_logged_and_the_app_keeps_serving(caplog):
    @errors.guarded("boom")
    def boom():
        raise KeyError("x")

    with pytest.raises(gr.Error, match="Internal error \\(KeyError\\); the app is still running"):
        boom()
    assert "boom failed" in caplog.text


def test_the_ladder_and_the_sweep_return_their_outputs_by_name(steerable_lm, monkeypatch):
    for request in (LadderRequest, SweepRequest):  # the tiny model has no learned offsets: a descent target
        plain = request.compare_request
        monkeypatch.setattr(
            request, "compare_request", lambda self, layers=None, f=plain: f(self, layers, target="delta")
        )
    values = {"question": Q, "student_answer": A, "max_new_tokens": 3}
    *_, out = ladder.run(values, model=steerable_lm, judge=FakeJudge())
    assert set(ladder.output_names()) <= set(out) and all(out[f"ladder-{n}"] for n in ladder.NAMES)
    assert out["ladder-base-create"] == "" and out["ladder-judge-create"]
    *_, out = sweep.run(values | {"level": "apply", "strengths": "0, 2"}, model=steerable_lm, judge=FakeJudge())
    assert out["sweep-0"] and out["sweep-1"] and out["sweep-2"] == "" and out["sweep-json"].endswith(".json")


def test_ladder_and_sweep_endpoints_take_what_they_took():
    """...and the prompt under the steering last, so a caller's positional arguments keep their places."""
    assert str(LadderRequest.api_signature()) == (
        "(question, student_answer, baseline='none', strength=1.0, max_new_tokens=80, prompt='plain')"
    )
    assert str(SweepRequest.api_signature()) == (
        "(question, student_answer, level, strengths='0, 0.5, 1, 2, 3', max_new_tokens=80, prompt='plain')"
    )
    assert ladder.PARAMS == ("question", "student_answer", "baseline", "strength", "max_new_tokens", "prompt")
    assert sweep.PARAMS == ("question", "student_answer", "level", "strengths", "max_new_tokens", "prompt")
    assert compare.API[-1] == "prompt" and compare.API.index("residual_vector") == len(compare.API) - 2
    assert LadderRequest.__dataclass_fields__["strength"].metadata["knob"] is KNOBS["strength"]  # declared once
