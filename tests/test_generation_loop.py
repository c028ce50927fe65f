"""The hand-written decoding loop against transformers' own generate(), on a tiny random Llama with a
character tokenizer built in code: unsteered greedy output must be the library's, token for token,
and a mixed-length batch must equal each row run alone."""

import pytest
import torch
from tiny import char_tokenizer, tiny_lm

from steer_core.generation import Request, _sampler, generate_batch
from steer_core.prompts import render
from steer_core.steering.files import SteerFiles


@pytest.fixture(scope="module")
def lm():
    return tiny_lm(seed=3, tokenizer=char_tokenizer())


REQUESTS = [
    ("What is 2 + 2?", "5"),
    ("Name the largest planet of the solar system.", "Saturn, I think."),
    ("Why is the sky blue?", "Because of the sea reflecting on it, which makes it blue."),
]


def library_greedy(lm, req: Request, n: int) -> list[int]:
    ids, _ = render(lm.tokenizer, req.messages())
    stops = sorted(set(lm.tokenizer.all_special_ids))
    out = lm.model.generate(
        torch.tensor([ids]),
        attention_mask=torch.ones(1, len(ids), dtype=torch.long),
        max_new_tokens=n,
        do_sample=False,
        eos_token_id=stops,
        pad_token_id=0,
    )
    new = out[0, len(ids) :].tolist()
    return [t for t in new if t not in stops][: next((i for i, t in enumerate(new) if t in stops), len(new))]


@pytest.mark.parametrize("q,a", REQUESTS)
def test_unsteered_greedy_equals_model_generate(lm, q, a):
    req = Request(q, a, "none", "apply")
    ours = generate_batch(lm, [req], max_new_tokens=24)[0].token_ids
    assert ours == library_greedy(lm, req, 24)
    assert len(ours) > 0


def test_greedy_picks_what_argmax_picks_the_first_of_equal_largest():
    logits = torch.tensor([[0.5, 2.0, 2.0, -1.0], [3.0, 3.0, 3.0, 3.0], [-5.0, -4.0, -4.5, -4.0]])
    pick = _sampler(0.0, 1.0, 0)
    assert pick(logits).tolist() == logits.argmax(-1).tolist() == [1, 0, 1]
    wide = torch.randn(7, 49152, generator=torch.Generator().manual_seed(0))
    wide[3, 100] = wide[3, 40000] = wide[3].max() + 1.0  # a tie far apart: the first one
    assert torch.equal(pick(wide), wide.argmax(-1)) and int(pick(wide)[3]) == 100
    assert pick(wide).dtype == torch.int64 and torch.equal(pick(wide[2:5].t().contiguous().t()), wide[2:5].argmax(-1))
    wide[5, 7] = float("nan")  # a row with a NaN picks it, as torch's max does
    assert int(pick(wide)[5]) == int(wide.max(-1).indices[5]) == 7


def test_mixed_length_batch_equals_each_row_alone(lm):
    reqs = [Request(q, a, "none", "apply") for q, a in REQUESTS]
    lengths = {len(render(lm.tokenizer, r.messages())[0]) for r in reqs}
    assert len(lengths) == len(reqs)  # every row has its own prompt length (left padding is exercised)
    together = [o.token_ids for o in generate_batch(lm, reqs, max_new_tokens=20, ignore_stop=True)]
    alone = [generate_batch(lm, [r], max_new_tokens=20, ignore_stop=True)[0].token_ids for r in reqs]
    assert together == alone


def test_sampling_is_seeded_and_uses_the_library_warpers(lm):
    req = Request(*REQUESTS[0], "none", "apply")
    a = generate_batch(lm, [req], max_new_tokens=12, temperature=1.0, top_p=0.9, seed=7, ignore_stop=True)
    b = generate_batch(lm, [req], max_new_tokens=12, temperature=1.0, top_p=0.9, seed=7, ignore_stop=True)
    c = generate_batch(lm, [req], max_new_tokens=12, temperature=1.0, top_p=0.9, seed=8, ignore_stop=True)
    assert a[0].token_ids == b[0].token_ids != c[0].token_ids
    with pytest.raises(ValueError):
        generate_batch(lm, [req], max_new_tokens=4, temperature=1.0, top_p=1.5)


def test_steering_only_the_opening_matches_full_steering_up_to_there(lm, tmp_path):
    from tiny import tiny_bank

    from steer_core.sae.layer_files import save_layer
    from steer_core.steering.config import SteerConfig

    for layer in (1, 2):
        b = tiny_bank(lm, layer, seed=layer)
        tensors = {"codes": b.codes * 20, "queries": b.queries, "query_all": b.query_all}
        save_layer(tmp_path, lm, layer, b.sae, tensors, {}, {}, dtype="float32")
    full = SteerConfig(layers=(1, 2), target="prototype", steps=20, lr=0.5)
    k = 4
    opening = SteerConfig(layers=(1, 2), target="prototype", steps=20, lr=0.5, first_tokens=k)
    q, a = REQUESTS[2]
    reqs = [
        Request(q, a, "none", "apply"),
        Request(q, a, "sae", "apply", steer=full, files=SteerFiles(saes=str(tmp_path))),
    ]
    reqs.append(Request(q, a, "sae", "apply", steer=opening, files=SteerFiles(saes=str(tmp_path))))
    none, steered, opened = (o.token_ids for o in generate_batch(lm, reqs, max_new_tokens=24, ignore_stop=True))
    assert none[: k + 1] != steered[: k + 1]  # steering changes the opening ...
    # ... token 0 comes from the unsteered prompt pass; tokens 1..k from decode steps that run tokens 0..k-1
    assert opened[: k + 1] == steered[: k + 1]
    assert opened != steered  # after the opening the queries are the model's own again


def test_a_schedule_keeps_the_full_strength_opening_and_a_share_of_1_is_every_token(lm, tmp_path):
    from tiny import tiny_bank

    from steer_core.sae.layer_files import save_layer
    from steer_core.steering.config import SteerConfig

    b = tiny_bank(lm, 1, seed=3)
    save_layer(tmp_path, lm, 1, b.sae, {"codes": b.codes * 20, "queries": b.queries, "query_all": b.query_all}, {}, {})
    kw = dict(layers=(1,), target="prototype", steps=20, lr=0.5)
    q, a = REQUESTS[2]

    def run(**sched):
        req = Request(q, a, "sae", "apply", steer=SteerConfig(**kw, **sched), files=SteerFiles(saes=str(tmp_path)))
        return generate_batch(lm, [req], max_new_tokens=24, ignore_stop=True)[0].token_ids

    full, k = run(), 4
    assert run(first_tokens=k, after_first=1.0) == full  # the whole reply at the strength, in two segments
    weak = run(first_tokens=k, after_first=0.1)
    assert weak[: k + 1] == full[: k + 1] and weak != full
    assert weak != run(first_tokens=k)  # the rest is steered (weakly), not left alone


def test_rows_sharing_a_prompt_read_it_once_and_equal_each_row_alone(lm, tmp_path, monkeypatch):
    """The prompt is read once per distinct (tokens, prompt steering): three rows of one prompt, one
    of them steering the prompt too, need two prompt forwards and give what each gives alone."""
    from tiny import tiny_bank

    from steer_core.sae.layer_files import save_layer
    from steer_core.steering.config import SteerConfig

    b = tiny_bank(lm, 1, seed=5)
    save_layer(tmp_path, lm, 1, b.sae, {"codes": b.codes * 20, "queries": b.queries, "query_all": b.query_all}, {}, {})
    gen = SteerConfig(layers=(1,), target="prototype", lr=0.5)
    everywhere = SteerConfig(layers=(1,), target="prototype", lr=0.5, positions="all")
    q, a = REQUESTS[1]
    reqs = [
        Request(q, a, "none"),
        Request(q, a, "sae", "create", steer=gen, files=SteerFiles(saes=str(tmp_path))),
        Request(q, a, "sae", "create", steer=everywhere, files=SteerFiles(saes=str(tmp_path))),
        Request(*REQUESTS[0], "none"),
    ]
    widths = []
    forward = lm.model.forward

    def counting(*args, **kw):
        if kw.get("logits_to_keep") == 1 and kw.get("cache_position") is None:  # a prompt forward
            widths.append(kw["input_ids"].shape[0])
        return forward(*args, **kw)

    monkeypatch.setattr(lm.model, "forward", counting)
    together = [o.token_ids for o in generate_batch(lm, reqs, max_new_tokens=16, ignore_stop=True)]
    assert sum(widths) == 3  # the two unsteered-prompt rows of one question share one read
    monkeypatch.setattr(lm.model, "forward", forward)
    alone = [generate_batch(lm, [r], max_new_tokens=16, ignore_stop=True)[0].token_ids for r in reqs]
    assert together == alone
    assert together[0] != together[1] != together[2]  # generated-only and prompt steering really differ


def test_learned_offsets_shift_the_query_by_the_decoded_offset(lm):
    """Steering with learned offsets is decode(z0 + alpha * offset) - decode(z0) added to the query,
    computed without encoding: check it against the encode-decode it replaces."""
    from tiny import tiny_bank

    from steer_core.steering.config import SteerConfig
    from steer_core.steering.edits import steer_rows

    bank = tiny_bank(lm, 1, seed=2)
    g = torch.Generator().manual_seed(0)
    offsets = torch.relu(torch.randn(6, lm.n_heads, bank.sae.d_sae, generator=g))
    x = torch.randn(2, 5, lm.n_heads, lm.head_dim, generator=g)
    levels = torch.tensor([0, 4])
    cfg = SteerConfig(layers=(1,), strength=0.5)
    z0 = bank.sae.encode(x)
    z = z0 + cfg.alpha * offsets[levels][:, None]
    expected = x + bank.sae.decode(z) - bank.sae.decode(z0)
    torch.testing.assert_close(steer_rows(bank, x, levels, None, cfg, offsets), expected, rtol=1e-4, atol=1e-4)
    heads = torch.tensor([0, 2])
    part = steer_rows(bank, x[:, :, heads], levels, heads, cfg, offsets)
    torch.testing.assert_close(part, expected[:, :, heads], rtol=1e-4, atol=1e-4)


def test_fixed_shift_edits_equal_editing_each_group_s_rows(lm):
    """Learned offsets, mean difference and the query baseline's delta descent add a fixed vector:
    the one dense add that replaces their per-row edits gives the same queries, beside a group whose
    edit depends on the query, for some heads only, and for the reply's opening only."""
    from tiny import tiny_bank

    from steer_core.steering.config import SteerConfig
    from steer_core.steering.edits import RowGroup, make_layer_edit, steer_rows

    bank = tiny_bank(lm, 1, seed=3)
    H, D = lm.n_heads, lm.head_dim
    g = torch.Generator().manual_seed(1)
    offsets = torch.relu(torch.randn(6, H, bank.sae.d_sae, generator=g))
    t = torch.tensor
    groups = [
        RowGroup(t([0, 2]), t([1, 5]), SteerConfig(layers=(1,), strength=0.5), bank, None, offsets),
        RowGroup(t([1]), t([3]), SteerConfig(method="query", target="delta", layers=(1,)), bank, t([0, 2]), None),
        RowGroup(
            t([3]), t([0]), SteerConfig(method="meandiff", target="delta", layers=(1,), strength=0.3), bank, None, None
        ),
        RowGroup(t([4]), t([2]), SteerConfig(layers=(1,), target="prototype", lr=0.3), bank, None, None),
        RowGroup(t([5]), t([4]), SteerConfig(layers=(1,), first_tokens=2), bank, t([1]), offsets),
    ]
    q = torch.randn(7, 5, H * D, generator=g)  # row 6 is not steered
    got = make_layer_edit(groups, "generated", H, D)(q)
    want = q.view(7, 5, H, D).clone()
    for grp in groups:
        n = 2 if grp.cfg.first_tokens else 5
        heads = torch.arange(H) if grp.heads is None else grp.heads
        x = want[grp.rows][:, :n][:, :, heads]
        new = steer_rows(grp.bank, x, grp.levels, grp.heads, grp.cfg, grp.offsets)
        for i, r in enumerate(grp.rows.tolist()):
            want[r, :n, heads] = new[i]
    torch.testing.assert_close(got, want.view(7, 5, H * D), rtol=1e-5, atol=1e-5)
    assert torch.equal(got[6], q[6]) and torch.equal(got[5, 2:], q[5, 2:])  # unsteered; after the opening


def test_a_target_added_through_the_registry_alone_steers(lm, tmp_path):
    """One register() call: the new target validates, labels, steers generation, is off at strength 0 and falls
    back to delta for query steering (it names no point raw queries have)."""
    from tiny import tiny_bank

    from steer_core.sae.layer_files import save_layer
    from steer_core.steering import targets
    from steer_core.steering.config import SteerConfig

    b = tiny_bank(lm, 1, seed=4)
    save_layer(tmp_path, lm, 1, b.sae, {"codes": b.codes, "queries": b.queries, "query_all": b.query_all}, {}, {})
    targets.register(
        targets.Target(
            "amplify",
            "amplify the code",
            "multiply the code by 1 + 5 alpha",
            1.0,
            codes=lambda c, trace_to: c.z0 * (1 + 5 * c.cfg.alpha),
        )
    )
    try:
        cfg = SteerConfig(layers=(1,), target="amplify")
        assert cfg.label.startswith("amplify a1 T20") and cfg.for_method("query").target == "delta"
        q, a = REQUESTS[1]

        def run(c):
            req = Request(q, a, "sae", "create", steer=c, files=SteerFiles(saes=str(tmp_path)))
            return generate_batch(lm, [req], max_new_tokens=16, ignore_stop=True)[0].token_ids

        plain = generate_batch(lm, [Request(q, a, "none")], max_new_tokens=16, ignore_stop=True)[0].token_ids
        assert run(cfg) != plain
        assert run(SteerConfig(layers=(1,), target="amplify", strength=0.0)) == plain
    finally:
        del targets.REGISTRY["amplify"]


def _compare_like():
    """A plain prompt given to two rows and a few-shot prompt: two distinct prompts, read one after the other."""
    q, a = REQUESTS[2]
    return [Request(q, a, "none"), Request(q, a, "fewshot", "analyze"), Request(q, a, "none")]


def test_first_words_show_the_rows_read_first_and_change_no_token(lm):
    from steer_core.generation import stream_batch

    reqs = _compare_like()
    kw = {"max_new_tokens": 5, "ignore_stop": True, "prefix_cache": True}
    early = list(stream_batch(lm, reqs, first_words=True, **kw))
    plain = list(stream_batch(lm, reqs, **kw))
    assert len(early) == len(plain) + 1  # one yield before the first step's
    first = early[0]
    assert [o.new_tokens for o in first] == [1, 0, 1]  # the plain prompt's rows, read first; the few-shot row not yet
    last = plain[-1]
    assert [o.token_ids for o in first] == [last[0].token_ids[:1], [], last[2].token_ids[:1]]
    assert [o.token_ids for o in early[-1]] == [o.token_ids for o in plain[-1]]
    assert [[o.token_ids for o in outs] for outs in early[1:]] == [[o.token_ids for o in outs] for outs in plain]


def test_first_words_wait_for_one_prompt_or_a_sampler(lm):
    from steer_core.generation import stream_batch

    reqs = _compare_like()
    kw = {"max_new_tokens": 3, "ignore_stop": True, "prefix_cache": True, "first_words": True}
    assert len(list(stream_batch(lm, reqs[::2], **kw))) == 3  # one prompt: nothing to show before the first step
    assert len(list(stream_batch(lm, reqs, temperature=0.7, **kw))) == 3  # the sampler draws every row at once


@pytest.mark.parametrize("target", ["prototype", "delta"])
def test_a_descent_made_ready_once_gives_the_tokens_of_steer_rows(lm, tmp_path, monkeypatch, target):
    """Generation with each layer's descent to a point made ready once (edits.PointDescent), alone in its batch (its
    queries the edit's whole output) and beside other rows, through the views' decoding: the tokens of steer_rows
    at every call."""
    from tiny import tiny_bank

    from steer_core.generation import VIEWS
    from steer_core.sae.layer_files import save_layer
    from steer_core.steering import edits
    from steer_core.steering.config import SteerConfig

    for layer in (1, 2):
        b = tiny_bank(lm, layer, seed=layer)
        protos = {"codes": b.codes * 20, "queries": b.queries, "query_all": b.query_all}
        save_layer(tmp_path, lm, layer, b.sae, protos, {}, {})
    files = SteerFiles(saes=str(tmp_path))
    steer = SteerConfig(layers=(1, 2), target=target, lr=0.3, strength=0.5 if target == "prototype" else 1.0)
    q, a = REQUESTS[2]
    one = [Request(q, a, "sae", "evaluate", steer=steer, files=files)]
    mixed = [Request(q, a, "none"), *one, Request(*REQUESTS[0], "sae", "remember", steer=steer, files=files)]

    def tokens(reqs):
        return [o.token_ids for o in generate_batch(lm, reqs, max_new_tokens=12, ignore_stop=True, **VIEWS)]

    made_once = [tokens(one), tokens(mixed)]
    monkeypatch.setattr(edits.PointDescent, "of", classmethod(lambda cls, g: None))  # steer_rows at every call
    monkeypatch.setattr(edits._Part, "whole", property(lambda part: False))  # queries copied out and back
    assert made_once == [tokens(one), tokens(mixed)]
    assert made_once[1][0] != made_once[1][1]  # it steers


def test_a_generation_registers_each_hook_once_and_leaves_none(lm, tmp_path, monkeypatch):
    """The decoding loop holds its sites' dispatchers (hooks.dispatchers_held): each step switches its edits on and
    off without registering a hook again; the tokens are those of registering them at every step; a stream closed
    part way leaves no hook behind."""
    import contextlib
    from collections import Counter

    from tiny import tiny_bank

    from steer_core import generation
    from steer_core.generation import VIEWS, stream_batch
    from steer_core.model import hooks
    from steer_core.model.recording import RowRecording
    from steer_core.sae.layer_files import save_layer
    from steer_core.steering.config import SteerConfig

    for layer in (1, 2):
        b = tiny_bank(lm, layer, seed=layer)
        protos = {"codes": b.codes * 20, "queries": b.queries, "query_all": b.query_all}
        save_layer(tmp_path, lm, layer, b.sae, protos, {}, {})
    files = SteerFiles(saes=str(tmp_path))
    q, a = REQUESTS[2]
    reqs = [
        Request(q, a, "none"),
        Request(q, a, "sae", "evaluate", steer=SteerConfig(layers=(1, 2), target="prototype", lr=0.3), files=files),
        Request(q, a, "sae", "remember", steer=SteerConfig(layers=(1,), target="delta", first_tokens=3), files=files),
    ]
    made = []
    dispatcher = hooks._dispatcher
    monkeypatch.setattr(hooks, "_dispatcher", lambda key: made.append(key) or dispatcher(key))

    def tokens():
        record = RowRecording(1, 0)  # a recorded layer that no edit steers: held too
        outs = list(stream_batch(lm, reqs, max_new_tokens=12, ignore_stop=True, record=record, **VIEWS))[-1]
        return [o.token_ids for o in outs]

    held = tokens()
    # each site's hook registered once for the loop (the recorded layer's once more, for the prompt's read)
    assert len(set(made)) == 3 and max(Counter(made).values()) <= 2
    assert hooks.active_hook_count() == 0
    made.clear()
    monkeypatch.setattr(generation, "dispatchers_held", lambda lm, sites: contextlib.nullcontext())
    assert tokens() == held and min(Counter(made).values()) >= 11  # registered at every step, the same tokens
    monkeypatch.undo()
    stream = stream_batch(lm, reqs, max_new_tokens=12, ignore_stop=True, **VIEWS)
    next(stream), next(stream)
    assert hooks.active_hook_count() == 2  # layers 1 and 2 held between steps, with no edit active
    stream.close()
    assert hooks.active_hook_count() == 0
