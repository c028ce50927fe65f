"""Capturing the train split's queries for SAE training: a prompt shared by a scenario's six feedbacks is
recorded once (its queries are the same six times over), every feedback token is recorded, and what is
recorded is exactly what one example's own forward gives."""

import torch
from tiny import char_tokenizer, tiny_lm

from steer_core.bloom import by_writers, load_dataset
from steer_core.fit.sae_training import capture_train_queries
from steer_core.prompts import DEFAULT_STYLE, messages, render


def test_a_shared_prompt_is_recorded_once_and_every_feedback_token_always():
    lm = tiny_lm(seed=2, tokenizer=char_tokenizer())
    rows = by_writers(load_dataset(split="train"), ["A"])[:12]  # two scenarios, six feedbacks each
    encoded = [render(lm.tokenizer, messages(r.question, r.student_answer, DEFAULT_STYLE), r.feedback) for r in rows]
    prompts = {tuple(ids[:n]) for ids, n in encoded}
    assert len(prompts) == 2
    cap = capture_train_queries(lm, [1], rows=rows, progress=False)
    n_feedback = sum(len(ids) - n for ids, n in encoded)
    assert int(cap.is_feedback.sum()) == n_feedback
    assert len(cap.example_ids) == n_feedback + sum(len(p) for p in prompts)
    for j in {int(e) for e in cap.example_ids}:  # each example's recorded tokens are its own forward's
        ids, n = encoded[j]
        with torch.no_grad():
            own = capture_train_queries(lm, [1], rows=[rows[j]], progress=False).queries[1]
        got = cap.queries[1][cap.example_ids == j]
        want = own if bool((~cap.is_feedback[cap.example_ids == j]).any()) else own[n:]
        assert got.shape == want.shape and torch.allclose(got.float(), want.float(), atol=1e-3)


def test_the_capture_reads_the_offsets_fits_reference_in_the_same_forward():
    """score_tokens: each feedback's unsteered log-likelihood over its first N tokens, as the offsets fit would
    read it (prompt, then the truncated replies after its cache), to float32 rounding."""
    from steer_core.fit.offsets import _encode_scenarios, _references

    lm = tiny_lm(seed=2, tokenizer=char_tokenizer())
    rows = by_writers(load_dataset(split="train"), ["A"])[:12]
    cap = capture_train_queries(lm, [1], rows=rows, progress=False, score_tokens=20)
    scenarios = _encode_scenarios(lm.tokenizer, rows, DEFAULT_STYLE, 20)
    want = _references(lm, scenarios, lm.tokenizer.pad_token_id, {}, False)
    assert len(scenarios) == 2 and cap.reply_logprobs.shape == (12,)
    for sc, ref in zip(scenarios, want):
        torch.testing.assert_close(cap.reply_logprobs[sc.rows], ref, rtol=1e-5, atol=1e-4)
    assert capture_train_queries(lm, [1], rows=rows, progress=False).reply_logprobs is None
