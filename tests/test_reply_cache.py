"""Replies kept for a Compare clicked again (reply_cache.py), on a tiny random Llama decoded as the views decode it:
the columns that do not steer are not generated again, every column is token for token what the whole batch gives,
and without the kernels that compute each row on its own, when sampling, or for a reader that stopped early,
nothing is reused or kept."""

import shutil

import pytest

from steer_core import reply_cache
from steer_core.bloom import LEVELS
from steer_core.caches import BoundedCache
from steer_core.model.small_batch import speed_up_small_batches
from steer_core.reply_cache import REPLIES, reuses
from steer_core.views.compare import CompareRequest, compare_stream

needs_cc = pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None, reason="no C compiler")
Q, A = "What is 3 x 4?", "It is 7."


class FakeJudge:
    def judge(self, texts):
        return [{"pred": LEVELS[0], "probs": dict.fromkeys(LEVELS, 1 / 6)} for _ in texts]


def request(**kw):
    base = {"level": "analyze", "layers": "1,2", "target": "delta", "max_new_tokens": 6, "strength": 0.5}
    return CompareRequest.from_ui(question=Q, student_answer=A, **(base | kw))


@pytest.fixture
def lm(steerable_lm):
    speed_up_small_batches(steerable_lm.model)  # the views' decoding: the few-row kernel, C++ layers, own positions
    REPLIES.forget()
    yield steerable_lm
    REPLIES.forget()


@pytest.fixture
def generated(monkeypatch):
    """The methods of each batch reply_cache generates, in order."""
    batches, real = [], reply_cache.stream_batch

    def counting(lm, reqs, **kw):
        batches.append([r.method for r in reqs])
        yield from real(lm, reqs, **kw)

    monkeypatch.setattr(reply_cache, "stream_batch", counting)
    return batches


def _tokens(result) -> dict:
    return {m: o.token_ids for m, o in result.outputs.items()}


@needs_cc
def test_a_compare_clicked_again_generates_only_its_steered_columns(lm, generated):
    assert reuses(lm, 4, {"own_positions": True})
    *_, first = compare_stream(lm, request(), judge=FakeJudge())
    *_, again = compare_stream(lm, request(), judge=FakeJudge())
    assert generated == [["none", "sae", "query", "fewshot"], ["sae", "query"]]
    assert _tokens(again) == _tokens(first)
    assert again.inspection is not None and again.inspection.latents is not None  # the SAE row was recorded


@needs_cc
def test_with_other_steering_every_column_is_what_the_whole_batch_gives(lm, generated):
    stopped = compare_stream(lm, request(), judge=FakeJudge(), inspect=False)
    next(stopped)  # a reader that stops after the first token: nothing is kept
    stopped.close()
    assert REPLIES.bytes_held() == 0
    *_, _ = compare_stream(lm, request(), judge=FakeJudge(), inspect=False)
    assert REPLIES.bytes_held() == 2  # the unsteered and few-shot replies
    other = request(strength=1.0, heads="0,1")
    *_, whole = compare_stream(lm, other, judge=FakeJudge(), inspect=False, reuse=False)
    *_, reused = compare_stream(lm, other, judge=FakeJudge(), inspect=False)
    assert generated[-1] == ["sae", "query"]
    assert _tokens(reused) == _tokens(whole)
    *_, level = compare_stream(lm, request(level="create"), judge=FakeJudge(), inspect=False)
    assert generated[-1] == ["sae", "query", "fewshot"]  # another level: another few-shot prompt


@needs_cc
def test_nothing_is_reused_where_rows_are_not_computed_on_their_own(lm, generated, monkeypatch):
    compare_stream(lm, request(), judge=FakeJudge(), inspect=False)
    *_, _ = compare_stream(lm, request(), judge=FakeJudge(), inspect=False)
    monkeypatch.setattr(reply_cache, "attention_kernel", lambda: None)  # the views' attention through SDPA
    *_, _ = compare_stream(lm, request(), judge=FakeJudge(), inspect=False)
    assert generated[-1] == ["none", "sae", "query", "fewshot"]
    assert not reuses(lm, 4, {"own_positions": True, "temperature": 0.7})  # sampling draws every row at once
    assert not reuses(lm, 4, {})  # attention over the padded batch (the evaluation's)


def test_a_bounded_cache_can_be_read_and_filled_without_building():
    cache = BoundedCache("test", max_bytes=2, size_of=lambda _: 1)
    assert cache.peek("a") is None
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.peek("a") == 1  # now the most recent
    cache.put("c", 3)  # over the budget: b goes
    assert cache.has("a") and cache.has("c") and not cache.has("b")
