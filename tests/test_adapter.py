"""The adapter's shared-prompt training loss on a tiny random Llama: one prompt pass whose cache is
repeated for several replies must give the same loss and gradients as running each sequence whole."""

import pytest
import torch
from tiny import tiny_lm

from steer_core.errors import UserError
from steer_core.fit.adapter import prompt_groups, shared_prompt_loss, training_examples


def test_prompt_groups_share_each_prompt_once():
    examples = [([1, 2, 3, 7, 8], 3), ([1, 2, 3, 9], 3), ([4, 5, 6], 2)]
    groups = prompt_groups(examples)
    assert groups[0] == ([1, 2, 3], [[7, 8], [9]])
    assert groups[1] == ([4, 5], [[6]])


def test_shared_prompt_loss_equals_whole_sequences():
    lm = tiny_lm()
    model = lm.model.requires_grad_(True)
    prompt = [5, 17, 3, 42, 8, 11]
    replies = [[20, 21, 22, 23], [30, 31], [40, 41, 42, 43, 44, 45]]

    loss, n = shared_prompt_loss(model, prompt, replies, pad_id=0, device=lm.device)
    assert n == sum(map(len, replies))
    loss.backward()
    shared_grad = model.model.layers[0].self_attn.q_proj.weight.grad.clone()
    model.zero_grad()

    expected = torch.zeros(())
    for reply in replies:
        ids = torch.tensor([prompt + reply])
        logits = model(input_ids=ids).logits[0, len(prompt) - 1 : -1]
        expected = expected + torch.nn.functional.cross_entropy(logits, torch.tensor(reply), reduction="sum")
    expected.backward()
    whole_grad = model.model.layers[0].self_attn.q_proj.weight.grad
    model.requires_grad_(False)

    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(shared_grad, whole_grad, rtol=1e-4, atol=1e-6)


def test_instruction_examples_come_only_from_the_named_writers():
    from tiny import char_tokenizer

    from steer_core.bloom import DESCRIPTIONS, load_dataset

    tok = char_tokenizer()
    rows = load_dataset(split="train")
    fold = [r for r in rows if r.scenario_id[0] in "AB"]
    examples = training_examples(tok, rows, ("plain", "instruction"), instruction_writers=("a", "B"))
    assert len(examples) == len(rows) + len(fold)
    plain, instruction = examples[: len(rows)], examples[len(rows) :]
    described = [DESCRIPTIONS[r.level] in tok.decode(ids[:start]) for r, (ids, start) in zip(fold, instruction)]
    assert all(described)  # the instruction prompt describes the feedback's level; the plain one never does
    assert not any(DESCRIPTIONS[r.level] in tok.decode(ids[:start]) for r, (ids, start) in zip(rows, plain))
    assert all(tok.decode(ids[start:]).startswith(r.feedback.strip()) for r, (ids, start) in zip(fold, instruction))


def test_training_examples_refuse_unknown_prompts_and_writers():
    from steer_core.bloom import load_dataset

    rows = load_dataset(split="train")
    with pytest.raises(UserError, match="prompts"):
        training_examples(None, rows, ("fewshot",))
    with pytest.raises(UserError, match="writers Z"):
        training_examples(None, rows, ("instruction",), instruction_writers=("Z",))
