"""The views' attention kernel (model/attention_kernel.py, decode_attention.c): SDPA's result to float32 rounding over
the positions a row's mask admits, each row the same bits in any batch, at any place in it and any thread count;
without a compiler, or switched off, the views keep SDPA."""

import pytest
import torch
from tiny import char_tokenizer, tiny_lm
from torch.nn import functional as F

from steer_core import native
from steer_core.generation import VIEWS, Request, generate_batch
from steer_core.model import attention_kernel as ak
from steer_core.model import lean_step
from steer_core.model.small_batch import speed_up_small_batches

needs_cc = pytest.mark.skipif(native.compiler() is None, reason="no C compiler to build the attention kernel")


@pytest.fixture
def fresh_kernel(monkeypatch, tmp_path):
    """attention_kernel() built anew into an empty cache."""
    monkeypatch.setenv("STEER_CACHE", str(tmp_path))
    ak.attention_kernel.cache_clear()
    yield
    ak.attention_kernel.cache_clear()


@needs_cc
@pytest.mark.parametrize(("kv_heads", "groups", "dim"), [(3, 3, 64), (2, 1, 12), (1, 4, 37), (1, 80, 16)])
def test_it_is_sdpa_over_each_rows_own_positions_and_a_rows_bits_do_not_depend_on_its_batch(
    fresh_kernel, kv_heads, groups, dim
):
    kernel = ak.attention_kernel()
    assert kernel is not None, "a C compiler is here, yet the kernel was not built"
    g = torch.Generator().manual_seed(dim)
    rows, length = 5, 90
    q = torch.randn(rows, kv_heads, groups, dim, generator=g)
    keys, values = (torch.randn(rows, kv_heads, length, dim, generator=g) for _ in range(2))
    pads = [0, 17, 40, 0, 63]  # left padding, and the last 9 positions not written yet
    mask = torch.zeros(rows, 1, 1, length)
    for r, pad in enumerate(pads):
        mask[r, ..., :pad] = float("-inf")
    mask[..., -9:] = float("-inf")
    got = kernel(q, keys, values, mask, dim**-0.5)
    want = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, scale=dim**-0.5)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    for r, pad in enumerate(pads):  # alone, over its own cache only
        own = slice(pad, length)
        alone = kernel(
            q[r : r + 1], keys[r : r + 1, :, own], values[r : r + 1, :, own], mask[r : r + 1, ..., own], dim**-0.5
        )
        assert torch.equal(alone, got[r : r + 1]), r
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert torch.equal(kernel(q.flip(0), keys.flip(0), values.flip(0), mask.flip(0), dim**-0.5), got.flip(0))
    finally:
        torch.set_num_threads(threads)


@needs_cc
@pytest.mark.parametrize("groups", [1, 3, 4])
def test_query_heads_summed_together_get_the_bits_of_heads_summed_one_by_one(groups):
    """With dims of 64 and up to four query heads a key head (the default model's three), the values are summed for
    all the heads at once (decode_attention.c's values_together); with more heads, one head after another. A query
    head's result depends on its own query only, so the same heads among six give the same bits."""
    kernel = ak.attention_kernel()
    assert kernel is not None
    g = torch.Generator().manual_seed(groups)
    rows, length = 3, 150
    q = torch.randn(rows, 2, 6, 64, generator=g)
    keys, values = (torch.randn(rows, 2, length, 64, generator=g) for _ in range(2))
    mask = torch.zeros(rows, 1, 1, length)
    mask[1, ..., :33] = mask[..., -5:] = float("-inf")
    mask[2, ..., 70] = float("-inf")  # a position inside a row's span that it does not read
    together = kernel(q[:, :, :groups].contiguous(), keys, values, mask, 0.125)
    one_by_one = kernel(q, keys, values, mask, 0.125)[:, :, :groups]
    assert torch.equal(together, one_by_one)


@needs_cc
@pytest.mark.parametrize("dim", [64, 37])
def test_rows_sharing_a_prompt_read_it_from_the_row_that_holds_it_and_keep_their_bits(dim):
    """Rows 2 and 3 were given row 0's prompt (the first 50 positions, row 0's padding included): told so, they read
    those positions from row 0 (their own copies, made NaN here, are never read) and get the bits they get reading
    their own."""
    kernel = ak.attention_kernel()
    assert kernel is not None
    g = torch.Generator().manual_seed(dim)
    rows, length, prompt = 4, 80, 50
    q = torch.randn(rows, 3, 3, dim, generator=g)
    keys, values = (torch.randn(rows, 3, length, dim, generator=g) for _ in range(2))
    mask = torch.zeros(rows, 1, 1, length)
    mask[[0, 2, 3], ..., :7] = float("-inf")  # one prompt, padded alike
    mask[1, ..., :30] = float("-inf")
    mask[..., -6:] = float("-inf")
    copied = [0, 1, 0, 0]
    for r in (2, 3):
        keys[r, :, :prompt], values[r, :, :prompt] = keys[0, :, :prompt], values[0, :, :prompt]
    own = kernel(q, keys, values, mask, dim**-0.5)
    for t in (keys, values):
        t[2:, :, :prompt] = float("nan")
    shared = kernel(q, keys, values, mask, dim**-0.5, ak.PromptCopies.of(copied, prompt))
    assert torch.equal(shared, own)
    assert ak.PromptCopies.of([0, 1, 2], 9) is None  # no row shares: nothing to tell


def _rows_of_different_lengths():
    lm = tiny_lm(seed=4, tokenizer=char_tokenizer())
    speed_up_small_batches(lm.model)
    reqs = [Request("Two plus two?", "4"), Request("Name a prime number greater than ten, please.", "13, I think.")]
    return lm, reqs + [Request("Why?", "Because.")]


@needs_cc
def test_a_views_rows_are_the_replies_they_get_alone():
    """Prompts of different lengths, so the short rows are padded on the left: with the kernel, each row's reply in
    the batch is the one it gets alone."""
    lm, reqs = _rows_of_different_lengths()
    assert ak.attention_kernel() is not None
    together = [o.token_ids for o in generate_batch(lm, reqs, max_new_tokens=12, ignore_stop=True, **VIEWS)]
    alone = [generate_batch(lm, [r], max_new_tokens=12, ignore_stop=True, **VIEWS)[0].token_ids for r in reqs]
    assert together == alone


@needs_cc
def test_a_views_rows_on_one_prompt_read_it_once_and_are_the_replies_they_get_alone(monkeypatch):
    """The ladder's shape: several rows given one prompt, beside a row with another. The kernel is told which rows
    hold copies of which, and each row's reply is still the one it gets alone."""
    lm, reqs = _rows_of_different_lengths()
    reqs = [reqs[0], reqs[1], reqs[0], reqs[0]]
    kernel = ak.attention_kernel()
    told = []

    def spying(q, keys, values, mask, scale, prompts=None):
        told.append(prompts)
        return kernel(q, keys, values, mask, scale, prompts)

    spy = type("Spy", (), {"__call__": staticmethod(spying), "address": kernel.address})()
    monkeypatch.setattr(lean_step, "attention_kernel", lambda: spy)
    monkeypatch.setattr(lean_step, "lean_layers", lambda: None)  # the Python layers, where the spy sees each call
    together = [o.token_ids for o in generate_batch(lm, reqs, max_new_tokens=10, ignore_stop=True, **VIEWS)]
    assert told and all(p is not None and p.holder.tolist() == [0, 1, 0, 0] for p in told)
    monkeypatch.undo()
    alone = [generate_batch(lm, [r], max_new_tokens=10, ignore_stop=True, **VIEWS)[0].token_ids for r in reqs]
    assert together == alone
    cxx = [o.token_ids for o in generate_batch(lm, reqs, max_new_tokens=10, ignore_stop=True, **VIEWS)]
    assert cxx == alone  # and through the C++ layers


def test_switched_off_the_views_keep_sdpa(fresh_kernel, monkeypatch, caplog):
    monkeypatch.setenv("STEER_KERNEL", "off")
    assert ak.attention_kernel() is None
    ak.attention_kernel.cache_clear()
    monkeypatch.delenv("STEER_KERNEL")
    monkeypatch.setenv("CC", "/nonexistent/cc")
    assert ak.attention_kernel() is None
    assert "keeps SDPA" in caplog.text
    lm, reqs = _rows_of_different_lengths()
    sdpa = generate_batch(lm, reqs, max_new_tokens=6, ignore_stop=True, prefix_cache=True)
    views = generate_batch(lm, reqs, max_new_tokens=6, ignore_stop=True, **VIEWS)
    assert [o.token_ids for o in views] == [o.token_ids for o in sdpa]
