"""The prompt-prefix cache (prefix_cache.py): the shared prefix of a prompt, a prefill read in two parts that
matches reading it whole, the same bits whether the prefix was cached or not, a bounded memory."""

import pytest
import torch
from tiny import char_tokenizer, tiny_lm

from steer_core.caches import BoundedCache, clear_all
from steer_core.generation import Request, _prefill, generate_batch
from steer_core.prefix_cache import PREFIXES
from steer_core.prompts import render, shared_prefix


@pytest.fixture(scope="module")
def lm():
    return tiny_lm(seed=5, tokenizer=char_tokenizer())


@pytest.fixture(autouse=True)
def empty_prefixes():
    PREFIXES.forget()
    yield
    PREFIXES.forget()


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
