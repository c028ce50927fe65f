"""The CPU small-batch matmul (model/small_batch.py): the same products as F.linear, gradients too, and
a batched greedy generation that matches one row at a time."""

import copy

import pytest
import torch
from tiny import char_tokenizer, tiny_lm

from steer_core.generation import Request, generate_batch
from steer_core.model.small_batch import SMALL_ROWS, speed_up_small_batches


@pytest.mark.parametrize("rows", [1, 2, 3, 4, 7, 11, 12, 40])
def test_small_batch_linear_matches_f_linear(rows):
    torch.manual_seed(rows)
    plain = torch.nn.Linear(96, 160)
    fast = copy.deepcopy(plain)
    assert speed_up_small_batches(fast) == 1
    x = torch.randn(rows, 1, 96, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    want, got = plain(x), fast(x2)
    assert got.shape == want.shape == (rows, 1, 160)
    if rows in SMALL_ROWS:
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    else:
        assert torch.equal(got, want)  # outside the small range it is F.linear itself
    want.square().sum().backward()
    got.square().sum().backward()
    torch.testing.assert_close(x2.grad, x.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(fast.weight.grad, plain.weight.grad, rtol=1e-4, atol=1e-4)


def test_small_batches_route_only_plain_cpu_linears():
    lm = tiny_lm(seed=3)
    n_linear = sum(type(m) is torch.nn.Linear for m in lm.model.modules())
    assert speed_up_small_batches(lm.model) == n_linear > 0
    assert speed_up_small_batches(torch.nn.Sequential(torch.nn.Conv1d(2, 2, 1))) == 0


def test_a_sped_up_batch_keeps_each_rows_greedy_reply():
    """Four rows decoded together through the small-batch path give the replies each gets alone (one
    row takes the plain F.linear path), on a model whose logits are not tied by chance."""
    lm = tiny_lm(seed=4, tokenizer=char_tokenizer())
    speed_up_small_batches(lm.model)
    reqs = [Request(f"Question {i}?", f"Answer {i}.", "none") for i in range(4)]
    together = [o.token_ids for o in generate_batch(lm, reqs, max_new_tokens=12, ignore_stop=True)]
    alone = [generate_batch(lm, [r], max_new_tokens=12, ignore_stop=True)[0].token_ids for r in reqs]
    assert together == alone
