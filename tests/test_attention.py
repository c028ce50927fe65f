"""The attention view's weights, recomputed from the used queries and cached keys, against the
model's own eager attention, unsteered and under a query edit."""

import pytest
import torch
from tiny import tiny_lm

from steer_core.inspect.attention import PromptParts, prompt_parts, reply_attention
from steer_core.model.hooks import active_hook_count, query_edits


@pytest.fixture(scope="module")
def lm():
    lm = tiny_lm()
    lm.model.set_attn_implementation("eager")
    return lm


def eager_attention(lm, ids, n_reply, edits):
    with query_edits(lm, edits):
        out = lm.model(input_ids=torch.tensor([ids]), output_attentions=True)
    return torch.stack([a[0, :, -n_reply:] for a in out.attentions])  # (layers, heads, reply, seq)


@pytest.mark.parametrize("steered", [False, True])
def test_reply_attention_matches_eager(lm, steered):
    prompt, reply = [3, 14, 15, 92, 65, 35, 89], [79, 32, 38, 46]
    scale = torch.linspace(0.2, 3.0, lm.n_heads * lm.head_dim)

    def edit(q):
        return q * scale

    edits = {1: edit} if steered else {}
    got = reply_attention(lm, prompt, reply, [0, 1, 2], (lambda phase: edits) if steered else None)
    want = eager_attention(lm, prompt + reply, len(reply), edits)
    assert got.shape == (3, lm.n_heads, len(reply), len(prompt) + len(reply))
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got.sum(-1), torch.ones(got.shape[:-1]))
    assert active_hook_count() == 0
    if steered:
        assert not torch.allclose(got[1], reply_attention(lm, prompt, reply, [1])[0])


def test_prompt_parts_spans_and_mass():
    class CharTokenizer:
        def decode(self, ids):
            return "".join(chr(i) for i in ids)

    text = "Rules:\n- apply: use it\nQuestion: why?"
    ids = [ord(c) for c in text]
    parts = prompt_parts(CharTokenizer(), ids, {"apply": "- apply: use it", "question": "why?"})
    assert [text[a:b] for a, b in parts.spans] == ["- apply: use it", "why?"]
    w = torch.zeros(2, len(ids))
    w[:, parts.spans[1][0]] = 1.0
    assert parts.mass(w).tolist() == [[0.0, 1.0], [0.0, 1.0]]
    with pytest.raises(ValueError, match="not in the prompt"):
        prompt_parts(CharTokenizer(), ids, {"create": "- create"})
    assert isinstance(parts, PromptParts)


def test_line_lift_is_zero_without_preference_and_counts_own_line():
    from steer_core.inspect.attention import line_lift

    flat = torch.full((6, 6, 2), 0.1)
    assert torch.allclose(line_lift(flat), torch.zeros(2))
    picky = flat.clone()
    picky[torch.arange(6), torch.arange(6), 1] = 0.3  # head 1: level-L feedback reads line L 3x as much
    assert torch.allclose(line_lift(picky), torch.tensor([0.0, 2.0]))


def test_attention_view_equals_attention_of_the_steered_forward_pass(tmp_path):
    """The view's steered numbers are the eager attention of one forward pass under generation's own
    steering edit (positions 'all': the same edit on prompt and reply), recomputed independently."""
    from tiny import char_tokenizer, tiny_bank

    from steer_core.generation import Request, generate_batch
    from steer_core.inspect.attention import steering_attention
    from steer_core.prompts import render
    from steer_core.sae.layer_files import save_layer
    from steer_core.steering.assets import steering_groups
    from steer_core.steering.config import SteerConfig
    from steer_core.steering.edits import layer_edits
    from steer_core.steering.files import SteerFiles

    lm = tiny_lm(seed=5, tokenizer=char_tokenizer())
    lm.model.set_attn_implementation("eager")
    for layer in (1, 2):
        b = tiny_bank(lm, layer, seed=layer)
        protos = {"codes": b.codes * 4, "queries": b.queries, "query_all": b.query_all}
        save_layer(tmp_path, lm, layer, b.sae, protos, {}, {}, dtype="float32")
    cfg = SteerConfig(layers=(1, 2), target="prototype", positions="all", steps=10, lr=0.3)
    files = SteerFiles(saes=str(tmp_path))
    q, a = "Why do leaves change colour?", "Because it is cold."
    req = Request(q, a, "sae", "create", steer=cfg, files=files)
    reply = generate_batch(lm, [req], max_new_tokens=10, ignore_stop=True)[0].token_ids
    view = steering_attention(lm, q, a, "create", cfg, reply, layer=2, files=files)

    prompt, _ = render(lm.tokenizer, req.messages())
    edits = layer_edits(lm, steering_groups(lm, [req]), "prompt")
    with query_edits(lm, edits):
        out = lm.model(input_ids=torch.tensor([prompt + reply]), output_attentions=True)
    eager = out.attentions[2][0, :, len(prompt) :, : len(prompt)].mean(dim=(0, 1))
    with torch.no_grad():
        plain = lm.model(input_ids=torch.tensor([prompt + reply]), output_attentions=True)
    eager_plain = plain.attentions[2][0, :, len(prompt) :, : len(prompt)].mean(dim=(0, 1))
    torch.testing.assert_close(view.steered, eager, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(view.unsteered, eager_plain, rtol=1e-4, atol=1e-6)
    assert not torch.allclose(view.steered, view.unsteered)  # the steering did change where it looks
    names, u, s = view.part_shares()
    assert names == ["instructions", "question", "student answer"] and len(u) == len(s) == 3
    assert len(view.tokens) == len(prompt) and active_hook_count() == 0


def test_a_replay_up_to_a_layer_keeps_its_keys_and_queries_and_skips_the_layers_above():
    """The views read one layer: a replay stops above it, with that layer's keys and queries bit for bit those of a
    whole replay, the layers above never run, and no hook left behind (the stop is an exception)."""
    from steer_core.inspect.replay import replay

    lm = tiny_lm(seed=5)
    prompt, reply = [3, 9, 27, 4, 5], [11, 12, 13]
    seen: dict = {}

    def recording(run):
        def edits(phase):
            def keep(layer):
                def fn(q):
                    seen[run, phase, layer] = q.clone()  # and leave the queries as they are

                return fn

            return {layer: keep(layer) for layer in range(lm.n_layers)}

        return edits

    whole = replay(lm, prompt, reply, recording("whole"))
    part = replay(lm, prompt, reply, recording("part"), upto=1)
    for layer in (0, 1):
        assert torch.equal(part.layers[layer].keys, whole.layers[layer].keys)
        for phase in ("prompt", "generated"):
            assert torch.equal(seen["part", phase, layer], seen["whole", phase, layer])
    assert ("part", "prompt", 2) not in seen and ("part", "generated", 2) not in seen
    assert ("whole", "generated", 2) in seen
    assert active_hook_count() == 0
