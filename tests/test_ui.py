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


def test_compare_shows_its_verdicts_before_its_inspection_and_charts(steerable_lm):
    """One yield before the last: every verdict and the judge's chart, no report yet (the last run's cleared); the
    last adds the inspection's charts, the attention text and the report, with the same verdicts."""
    *_, judged, last = compare.run(BASE | {"level": "create"}, model=steerable_lm, judge=FakeJudge())
    plot = compare.PLOTS
    assert judged["report"] is None and "Drawing the charts" in judged["status"]
    assert judged[plot["probs"][2]] is not None and judged[plot["bars"][2]] is None and judged["attn-text"] == ""
    for m in ("none", "sae", "query", "fewshot"):
        assert judged[f"judge-{m}"] == last[f"judge-{m}"] and judged[f"judge-{m}"]
    assert last["report"].endswith(".json") and last[plot["bars"][2]] is not None and last["attn-text"]
    assert "Drawing the charts" not in last["status"]
    assert judged[plot["probs"][2]].to_json() == last[plot["probs"][2]].to_json()


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
    # each new /compare parameter comes last: prompt, then latents by hand
    assert compare.API[-2:] == ("prompt", "latents") and compare.API.index("residual_vector") == len(compare.API) - 3
    assert LadderRequest.__dataclass_fields__["strength"].metadata["knob"] is KNOBS["strength"]  # declared once


def test_training_on_a_shared_server_is_the_visitors_own_or_off(steerable_lm, monkeypatch):
    """private: the visitor's layer comes back as a zip and nothing the server serves changes; off: Train and
    Prepare say why they are off; private leaves Prepare to the owner."""
    import hashlib
    import zipfile

    from tiny import tiny_bank

    from steer_core.fit import sae_training
    from steer_core.sae.layer_files import save_layer
    from steer_core.sae.store import STORE, user_root
    from ui import train

    def fake_train(lm, layers, root, cfg=None, **kw):
        b = tiny_bank(lm, layers[0], seed=99)
        protos = {"codes": b.codes, "queries": b.queries, "query_all": b.query_all}
        save_layer(root, lm, layers[0], b.sae, protos, {}, {}, dtype="float32")
        return {layers[0]: {"seconds": 1.0, "explained_variance": 0.5, "l0": 4.0, "dead_fraction": 0.0}}

    def served_files():
        files = sorted((user_root(steerable_lm) / "layer_1").rglob("*"))
        return {str(f): hashlib.sha256(f.read_bytes()).hexdigest() for f in files if f.is_file()}

    monkeypatch.setattr(sae_training, "train_layers", fake_train)
    monkeypatch.setattr(train, "lm", lambda: steerable_lm)
    before, codes = served_files(), STORE.get(steerable_lm, 1).codes.clone()
    monkeypatch.setattr(train, "TRAINING", "private")
    msg, download = train.train_layer(1, "topk", 4, 1.0, 2, 1, progress=lambda *a, **k: None)
    assert "yours" in msg and "Saved under" not in msg
    assert "layer_1/layer.json" in zipfile.ZipFile(download).namelist()
    assert served_files() == before and STORE.get(steerable_lm, 1).codes.equal(codes)
    with pytest.raises(gr.Error, match="owner's to run"):
        train.prepare_layers("1", progress=lambda *a, **k: None)
    monkeypatch.setattr(train, "TRAINING", "off")
    for call in (lambda: train.train_layer(1, "topk", 4, 1.0, 2, 1), lambda: train.prepare_layers("1")):
        with pytest.raises(gr.Error, match="off on this shared server"):
            call()
    assert served_files() == before


def test_the_visitor_bound_refuses_past_each_visitors_share_and_past_the_queue_size():
    """Against a stand-in for gradio's queue whose push yields before it holds the event (as gradio's does), so
    that requests arriving together are counted while they join."""
    import asyncio
    from types import SimpleNamespace

    from fastapi import HTTPException

    from ui.limits import VisitorBound

    class Queue:
        def __init__(self):
            self.event_ids_to_events, self.waiting = {}, 0

        def __len__(self):
            return self.waiting

        async def push(self, body, request, username):
            await asyncio.sleep(0.01)
            event_id = f"{body.session_hash}-{len(self.event_ids_to_events)}"
            self.event_ids_to_events[event_id] = body
            return True, event_id, "success"

    queue = Queue()
    bound = VisitorBound(queue, queue_size=10, per_client=2)
    push = bound.wrap(queue.push)

    async def join(who):
        try:
            return (await push(SimpleNamespace(session_hash=who), None, None))[1]
        except HTTPException as exc:
            return exc.status_code, exc.detail

    async def main():
        return await asyncio.gather(*(join("a") for _ in range(5)), join("b"))

    got = asyncio.run(main())
    assert sum(isinstance(g, str) for g in got[:5]) == 2 and isinstance(got[5], str)
    assert all(
        g[0] == 429 and "busy with your earlier requests (2 waiting" in g[1] for g in got[:5] if isinstance(g, tuple)
    )
    queue.event_ids_to_events.clear()  # a's requests finished: a may ask again
    assert isinstance(asyncio.run(join("a")), str)
    queue.waiting = 10
    status, why = asyncio.run(join("c"))
    assert status == 503 and "busy (10 requests are waiting)" in why
