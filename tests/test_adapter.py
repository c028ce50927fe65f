"""The adapter's shared-prompt training loss on a tiny random Llama: one prompt pass whose cache is
repeated for several replies must give the same loss and gradients as running each sequence whole."""

import torch
from tiny import tiny_lm

from steer_core.adapter import prompt_groups, shared_prompt_loss


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
