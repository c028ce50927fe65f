"""The level ladder and the strength sweep on a tiny random Llama (character tokenizer built in code,
SAEs saved in a temporary cache, a stand-in judge): one batch, the right rows, a complete record."""

import json
import os

import pytest

from steer_core import native
from steer_core.bloom import LEVELS
from steer_core.errors import UserError
from steer_core.views.compare import CompareRequest
from steer_core.views.ladder import ladder_rows, ladder_stream
from steer_core.views.rows import row_request
from steer_core.views.sweep import parse_strengths, sweep_stream


class FakeJudge:
    """Calls every text 'apply' with probability 0.5 (the rest spread evenly)."""

    def judge(self, texts):
        probs = {lv: 0.1 for lv in LEVELS} | {"apply": 0.5}
        return [{"pred": "apply", "probs": dict(probs)} for _ in texts]


@pytest.fixture(scope="module")
def lm(steerable_lm):
    return steerable_lm


def request(**kw):
    base = {"level": "analyze", "layers": (1, 2), "target": "delta", "max_new_tokens": 6}
    return CompareRequest.from_ui(question="What is 3 x 4?", student_answer="It is 7.", **(base | kw))


def test_ladder_rows_and_baseline():
    rows = ladder_rows()
    assert [r.name for r in rows] == ["unsteered", *LEVELS]
    assert [r.method for r in rows] == ["none"] + ["sae"] * 6
    with_fewshot = ladder_rows("fewshot")
    assert len(with_fewshot) == 13 and {r.method for r in with_fewshot[7:]} == {"fewshot"}
    assert [r.level for r in with_fewshot[7:]] == list(LEVELS)
    with pytest.raises(UserError, match="baseline"):
        ladder_rows("sae")


def test_the_residual_baseline_steers_the_shipped_vectors_layer():
    """The ladder's residual rows use the layer the shipped vectors were validated for, not the SAE band."""
    from steer_core.steering.config import RESIDUAL_LAYERS
    from steer_core.views.compare import CompareRequest

    rows = ladder_rows("residual")
    req = row_request(CompareRequest(question="q?", student_answer="a.", level="create"), rows[-1])
    assert req.method == "residual" and req.steer.layers == RESIDUAL_LAYERS and req.steer.strength == 1


def test_parse_strengths():
    assert parse_strengths("2, 0, 0.5,1 ,1") == (0.0, 0.5, 1.0, 2.0)
    assert parse_strengths([3, 1]) == (1.0, 3.0)
    for bad, msg in (("a, 1", "numbers"), ("", "at least one"), ("1,2,3,4,0.5,0.25,0.1", "at most"), ("9", "from 0")):
        with pytest.raises(UserError, match=msg):
            parse_strengths(bad)


def test_ladder_streams_seven_rows_in_one_batch_and_records(lm):
    results = list(ladder_stream(lm, request(), judge=FakeJudge()))
    assert len(results) >= 2 and not results[0].done and results[-1].done
    final = results[-1]
    assert len(final.outputs) == 7 and all(o.new_tokens > 0 for o in final.outputs)
    texts = [o.text for o in final.outputs]
    assert len(set(texts[1:])) > 1  # steering toward different levels gives different replies
    table = final.table()
    assert [t["level"] for t in table] == ["-", *LEVELS]
    assert table[3]["level_prob"] == 0.5 and table[1]["level_prob"] == 0.1  # apply vs remember
    assert table[0]["level_prob"] == ""  # the unsteered reply has no target
    assert all(t["perplexity"] > 0 for t in table)
    rec = json.loads(json.dumps(final.record("tiny")))
    assert rec["view"] == "ladder" and rec["settings"]["layers"] == "1,2" and len(rec["rows"]) == 7
    assert final.csv_text().splitlines()[0].startswith("row,method,level,strength,text")
    untargeted = list(ladder_stream(lm, request(level=None), judge=FakeJudge()))[-1]
    assert "level" not in untargeted.record("tiny")["inputs"]  # a ladder has no single target level


def test_a_ladder_is_shown_judged_before_its_perplexities_are_read(lm):
    """The ladder's chart and verdicts come one yield before its perplexities (its downloads hold them): the same
    replies and verdicts, no downloads until they are read (nor the last run's); the sweep, whose chart shows
    perplexity, waits for them."""
    from ui import ladder as ladder_ui

    *_, judged, final = ladder_stream(lm, request(), judge=FakeJudge())
    assert judged.done and not judged.complete and not judged.perplexities and final.complete
    assert [o.token_ids for o in judged.outputs] == [o.token_ids for o in final.outputs]
    assert judged.verdicts == final.verdicts and judged.chart().to_json() == final.chart().to_json()
    assert "perplexity" in judged.status() and "perplexity" not in final.status()
    shown = ladder_ui.show(judged, "tiny")
    assert shown["ladder-plot"] is not None and (shown["ladder-json"], shown["ladder-csv"]) == (None, None)
    files = ladder_ui.show(final, "tiny")
    assert all(files[k] for k in ("ladder-json", "ladder-csv"))
    assert json.load(open(files["ladder-json"]))["rows"][0]["perplexity"] > 0
    for k in ("ladder-json", "ladder-csv"):
        os.unlink(files[k])
    *_, before, last = sweep_stream(lm, request(positions="all", target="prototype"), "0, 1", judge=FakeJudge())
    assert not before.done and last.complete


def test_sweep_runs_each_strength_and_zero_is_unsteered(lm):
    req = request(positions="all", target="prototype", max_new_tokens=12)
    final = list(sweep_stream(lm, req, "0, 1, 3", judge=FakeJudge()))[-1]
    assert [r.strength for r in final.rows] == [0.0, 1.0, 3.0]
    unsteered = list(ladder_stream(lm, req, judge=FakeJudge()))[-1].outputs[0]
    assert final.outputs[0].token_ids == unsteered.token_ids  # strength 0 leaves the queries as they are
    from steer_core.steering.config import unit_alpha

    assert [row_request(req, r).steer.alpha for r in final.rows] == [
        0.0,
        unit_alpha("sae", "prototype"),
        3 * unit_alpha("sae", "prototype"),
    ]
    assert len(final.perplexities) == 3


@pytest.mark.skipif(
    native.compiler() is None or native.cxx_compiler() is None, reason="no compiler: the views' kernels keep no reply"
)
def test_a_ladder_takes_the_reply_and_prompt_read_kept_from_a_click_on_its_question_unless_told_not_to(lm, monkeypatch):
    """The ladder's rows share the plain prompt (steering reaches only the reply): read once and kept, with the
    unsteered reply; the next ladder on the question reads no prompt and generates only its six steered rows, the
    same replies. Bench's new question (reuse=False) reads and generates everything again."""
    from steer_core import generation
    from steer_core.model.small_batch import speed_up_small_batches
    from steer_core.prefix_cache import READS
    from steer_core.reply_cache import REPLIES

    speed_up_small_batches(lm.model)  # the views' decoding, in which a row's reply is its own in any batch
    READS.forget(), REPLIES.forget()
    first = list(ladder_stream(lm, request(), judge=FakeJudge()))[-1]
    assert len(READS._values) == 1 and len(REPLIES._values) == 1
    reads, forward, batches, stream = [], lm.model.forward, [], generation.stream_batch
    monkeypatch.setattr(lm.model, "forward", lambda *a, **kw: reads.append(1) or forward(*a, **kw))
    monkeypatch.setattr("steer_core.views.rows.perplexities", lambda *a: [1.0] * 7)  # its own reads, not counted
    for where in ("steer_core.reply_cache.stream_batch", "steer_core.views.rows.stream_batch"):
        monkeypatch.setattr(where, lambda lm, reqs, **kw: batches.append(len(reqs)) or stream(lm, reqs, **kw))
    again = list(ladder_stream(lm, request(), judge=FakeJudge()))[-1]
    assert not reads and batches == [6]
    assert [o.token_ids for o in again.outputs] == [o.token_ids for o in first.outputs]
    fresh = list(ladder_stream(lm, request(), judge=FakeJudge(), reuse=False))[-1]
    assert len(reads) == 1 and batches == [6, 7]
    assert [o.token_ids for o in fresh.outputs] == [o.token_ids for o in first.outputs]
    READS.forget(), REPLIES.forget()
