"""The attention view's weights, recomputed from the used queries and cached keys, against the
model's own eager attention, unsteered and under a query edit."""

import pytest
import torch
from tiny import tiny_lm

from steer_core.attention import PromptParts, prompt_parts, reply_attention
from steer_core.hooks import active_hook_count, query_edits


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
    from steer_core.attention import line_lift

    flat = torch.full((6, 6, 2), 0.1)
    assert torch.allclose(line_lift(flat), torch.zeros(2))
    picky = flat.clone()
    picky[torch.arange(6), torch.arange(6), 1] = 0.3  # head 1: level-L feedback reads line L 3x as much
    assert torch.allclose(line_lift(picky), torch.tensor([0.0, 2.0]))
