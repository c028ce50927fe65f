"""The prompt-prefix cache (prefix_cache.py): the shared prefix of a prompt, a prefill read in two parts that
matches reading it whole, the same bits whether the prefix was cached or not, a bounded memory."""

import pytest
import torch
from tiny import char_tokenizer, tiny_lm

from steer_core.caches import BoundedCache, clear_all
from steer_core.generation import VIEWS, Request, _encode, _prefill, generate_batch, stream_batch
from steer_core.model.hooks import query_edits
from steer_core.model.recording import RowRecording
from steer_core.prefix_cache import PREFIXES, READS
from steer_core.prompts import render, shared_prefix


@pytest.fixture(scope="module")
def lm():
    return tiny_lm(seed=5, tokenizer=char_tokenizer())


@pytest.fixture(autouse=True)
def empty_prefixes():
    PREFIXES.forget(), READS.forget()
    yield
    PREFIXES.forget(), READS.forget()


def _requests():
    q, a = "Why do seasons change?", "Because the Earth gets closer to the Sun in summer."
    return [
        Request(q, a, "none"),
        Request(q, a, "fewshot", "analyze"),
        Request("What is 7 x 8?", "54", "fewshot", "analyze"),  # same examples, another question
        Request(q, a, "instruction", "create"),
    ]


def test_the_shared_prefix_is_the_turns_before_the_question(lm):
    tok = lm.tokenizer
    for req in _requests():
        msgs = req.messages()
        ids, _ = render(tok, msgs)
        n = shared_prefix(tok, msgs, ids)
        before = tok(tok.apply_chat_template(msgs[:-1], tokenize=False), add_special_tokens=False)["input_ids"]
        assert 0 < n < len(ids) and ids[:n] == before[:n]
        assert n >= len(before) - 1  # all of it, bar a token the next turn may merge with
    few = [r for r in _requests() if r.method == "fewshot"]
    cuts = [shared_prefix(tok, r.messages(), render(tok, r.messages())[0]) for r in few]
    prompts = [render(tok, r.messages())[0] for r in few]
    assert prompts[0][: cuts[0]] == prompts[1][: cuts[1]]  # two questions share the few-shot examples
    assert cuts[0] > len(prompts[0]) // 2  # which are most of the prompt


def test_reading_in_two_parts_matches_reading_whole(lm):
    reqs = _requests()
    prompts = [render(lm.tokenizer, r.messages())[0] for r in reqs]
    cuts = [shared_prefix(lm.tokenizer, r.messages(), p) for r, p in zip(reqs, prompts)]
    width = max(map(len, prompts))
    whole_cache, whole = _prefill(lm, reqs, prompts, width, 4)
    parts_cache, parts = _prefill(lm, reqs, prompts, width, 4, cuts)
    torch.testing.assert_close(parts, whole, rtol=1e-4, atol=1e-5)
    for a, b in zip(whole_cache.layers, parts_cache.layers):
        torch.testing.assert_close(b.keys, a.keys, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(b.values, a.values, rtol=1e-4, atol=1e-5)
    assert len(PREFIXES._values) == 2  # the system turn (the instruction is in the question turn), the examples


def test_a_cached_prefix_gives_the_same_bits_as_a_fresh_one(lm):
    reqs = _requests()
    fresh = generate_batch(lm, reqs, max_new_tokens=16, ignore_stop=True, prefix_cache=True)
    assert PREFIXES.bytes_held() > 0
    cached = generate_batch(lm, reqs, max_new_tokens=16, ignore_stop=True, prefix_cache=True)
    assert [o.token_ids for o in cached] == [o.token_ids for o in fresh]
    alone = [generate_batch(lm, [r], max_new_tokens=16, ignore_stop=True, prefix_cache=True)[0] for r in reqs]
    assert [o.token_ids for o in alone] == [o.token_ids for o in fresh]


def test_the_cache_keeps_its_budget_and_is_cleared_with_the_others(lm):
    reqs = _requests()
    generate_batch(lm, reqs[:2], max_new_tokens=2, prefix_cache=True)
    one = max(PREFIXES._sizes.values())
    budget = PREFIXES.max_bytes
    try:
        PREFIXES.max_bytes = one + 1  # room for the largest prefix only
        PREFIXES.forget()
        generate_batch(lm, reqs, max_new_tokens=2, prefix_cache=True)
        assert 0 < PREFIXES.bytes_held() <= one + 1
    finally:
        PREFIXES.max_bytes = budget
    clear_all()
    assert PREFIXES.bytes_held() == 0


def test_a_bounded_cache_forgets_the_least_recently_used():
    cache = BoundedCache("test", max_bytes=10, size_of=len)
    cache.get("a", lambda: "xxxx")
    cache.get("b", lambda: "xxxx")
    cache.get("a", lambda: pytest.fail("a is cached"))  # a is now the most recent
    cache.get("c", lambda: "xxxx")  # 12 bytes: b goes
    assert cache.has("a") and cache.has("c") and not cache.has("b")
    assert cache.get("big", lambda: "x" * 11) == "x" * 11 and not cache.has("big")  # over the budget: not kept
    assert cache.bytes_held() == 8


def test_warming_reads_every_level_s_compare_prefixes(lm):
    """After the app's warm-up a Compare at any level reads no prefix of its own."""
    from steer_core.views.compare import CompareRequest, warm_prefixes

    assert warm_prefixes(lm) == 7  # the system turn, and the six levels' few-shot examples
    held = dict(PREFIXES._sizes)
    for level in ("remember", "create"):
        reqs = CompareRequest(
            question="What is a prime number?", student_answer="An odd number.", level=level
        ).requests()
        unsteered = [r for r in reqs if r.steer is None]  # the tiny model has no offsets to steer with
        assert {r.method for r in unsteered} == {"none", "fewshot"}
        generate_batch(lm, unsteered, max_new_tokens=2, prefix_cache=True)
    assert PREFIXES._sizes == held


def test_perplexities_read_together_are_each_replys_own(lm, monkeypatch):
    """fluency.perplexities (a ladder's or a sweep's replies: the prompt read once after its cached prefix, the
    replies right-padded in batches) gives perplexity() of each reply to float32 rounding: replies of different
    lengths, one of a single token, an empty one (nan), more replies than one batch holds, and a prompt without a
    shared prefix."""
    from steer_core import fluency

    monkeypatch.setattr(fluency, "POSITIONS", 3 * 14)  # three replies a batch: the longest has 14 tokens
    q, a = "Why do seasons change?", "Because the Earth gets closer to the Sun in summer."
    g = torch.Generator().manual_seed(0)
    replies = [torch.randint(3, 90, (n,), generator=g).tolist() for n in (9, 1, 0, 14, 5, 12, 2)]
    together = fluency.perplexities(lm, q, a, replies)
    assert len(PREFIXES._values) == 1  # the prompt's shared prefix, read through the cache
    monkeypatch.setattr(fluency, "shared_prefix", lambda *args: 0)  # a prompt without one: read whole
    whole = fluency.perplexities(lm, q, a, replies)
    for reply, value, read_whole in zip(replies, together, whole):
        if not reply:
            assert value != value and read_whole != read_whole  # nan
        else:
            one = fluency.perplexity(lm, q, a, reply)
            assert value == pytest.approx(one, rel=1e-4) and read_whole == pytest.approx(one, rel=1e-4)


def _reads_counted(lm, monkeypatch) -> list[int]:
    """The model's forwards from now on, counted (a prompt's read; the decoding steps do not call the model)."""
    calls, forward = [], lm.model.forward

    def counted(*args, **kw):
        calls.append(1)
        return forward(*args, **kw)

    monkeypatch.setattr(lm.model, "forward", counted)
    return calls


def test_a_prompt_read_again_is_the_kept_read_bit_for_bit(lm, monkeypatch):
    reqs = _requests()[:2]  # the plain prompt and the few-shot one: each read alone
    prompts, cuts = zip(*[_encode(lm.tokenizer, r, True) for r in reqs])
    width = max(map(len, prompts))
    kept = generate_batch(lm, reqs, max_new_tokens=12, ignore_stop=True, **VIEWS, keep_prompts=True)
    fresh_cache, fresh_logits = _prefill(lm, reqs, list(prompts), width, 12, list(cuts), keep=False)
    assert len(READS._values) == 2
    reads = _reads_counted(lm, monkeypatch)
    again = generate_batch(lm, reqs, max_new_tokens=12, ignore_stop=True, **VIEWS, keep_prompts=True)
    cache, logits = _prefill(lm, reqs, list(prompts), width, 12, list(cuts), keep=True)
    assert not reads  # neither prompt read again
    assert [o.token_ids for o in again] == [o.token_ids for o in kept]
    assert torch.equal(logits, fresh_logits)
    for a, b in zip(cache.layers, fresh_cache.layers, strict=True):
        assert torch.equal(a.keys, b.keys) and torch.equal(a.values, b.values)
    plain = generate_batch(lm, reqs, max_new_tokens=12, ignore_stop=True, **VIEWS)  # keeps nothing, reads both
    assert [o.token_ids for o in plain] == [o.token_ids for o in kept] and len(reads) == 2
    clear_all()
    assert READS.bytes_held() == 0


def _recorded(lm, req, layer) -> RowRecording:
    record = RowRecording(0, layer)
    for _ in stream_batch(lm, [req], max_new_tokens=3, record=record, **VIEWS, keep_prompts=True):
        pass
    return record


def test_a_kept_read_gives_the_queries_recorded_at_its_layer_or_is_read_again(lm, monkeypatch):
    req = _requests()[0]
    first = _recorded(lm, req, 1)
    reads = _reads_counted(lm, monkeypatch)
    again = _recorded(lm, req, 1)
    assert not reads and again.prefix == first.prefix > 0
    assert all(torch.equal(a, b) for a, b in zip(again.prompt, first.prompt))
    other = _recorded(lm, req, 2)  # a layer the kept read did not record: read again, and kept beside the first
    assert len(reads) == 1 and other.prompt is not None
    (held,) = READS._values.values()
    assert sorted(held.queries) == [1, 2]


def test_a_read_under_edits_of_its_context_is_neither_kept_nor_taken(lm, monkeypatch):
    req = _requests()[0]
    generate_batch(lm, [req], max_new_tokens=2, **VIEWS, keep_prompts=True)
    assert len(READS._values) == 1
    reads = _reads_counted(lm, monkeypatch)
    with query_edits(lm, {1: lambda q: q * 1.5}):
        generate_batch(lm, [req], max_new_tokens=2, **VIEWS, keep_prompts=True)  # the kept read not taken
        READS.forget()
        generate_batch(lm, [req], max_new_tokens=2, **VIEWS, keep_prompts=True)  # nor this read kept
    assert len(reads) == 2 and len(READS._values) == 0
