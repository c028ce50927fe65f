"""The top-k of TopK SAE training (sae/topk.py, sae/topk_rows.c): the k largest values at their indices, whatever
the layout of the pre-activations, torch's top-k where the kernel cannot say (NaN, switched off), and training
through it reconstructs as the dense encoder does."""

import pytest
import torch

from steer_core import native
from steer_core.sae import topk
from steer_core.sae.module import HeadSAEs

needs_cc = pytest.mark.skipif(native.compiler() is None, reason="no C compiler to build the top-k kernel")


@pytest.fixture
def fresh(tmp_path, monkeypatch):
    monkeypatch.setenv("STEER_CACHE", str(tmp_path))
    topk.topk_kernel.cache_clear()
    yield
    topk.topk_kernel.cache_clear()


def largest(x, idx, k):
    """The values at idx are the k largest of each row (as a multiset)."""
    got = x.gather(-1, idx).sort(-1, descending=True).values
    return torch.equal(got, x.topk(k, dim=-1, sorted=True).values)


@needs_cc
@pytest.mark.parametrize("shape,k", [((300, 512), 16), ((7, 3, 70), 9), ((5, 16), 16), ((4, 33), 1)])
def test_the_kernel_finds_the_k_largest_in_descending_order(fresh, shape, k):
    kernel = topk.topk_kernel()
    assert kernel is not None, "a C compiler is here, yet the kernel was not built"
    x = torch.randn(shape, generator=torch.Generator().manual_seed(k))
    x[..., 3] = x[..., 4]  # equal values: both may be kept, in index order
    vals, idx = kernel(x, k)
    assert torch.equal(vals, x.topk(k, dim=-1, sorted=True).values) and torch.equal(x.gather(-1, idx), vals)
    assert not ((idx[..., :-1] == 4) & (idx[..., 1:] == 3)).any()  # equal values in index order


@needs_cc
def test_a_permuted_layout_is_read_in_place_and_nan_goes_to_torch(fresh):
    x = torch.randn(9, 200, 128).transpose(0, 1)  # an einsum's (n, h, k) output, stored head-major
    idx = topk.topk_indices(x, 16)
    assert idx.shape == (200, 9, 16) and largest(x, idx, 16)
    x = x.contiguous()
    x[5, 2, 7] = float("nan")
    assert topk.topk_kernel()(x, 16) is None
    assert torch.equal(topk.topk_indices(x, 16)[5, 2].sort().values, x[5, 2].topk(16).indices.sort().values)


def test_switched_off_it_is_torchs_topk(fresh, monkeypatch):
    monkeypatch.setenv("STEER_KERNEL", "off")
    assert topk.topk_kernel() is None
    x = torch.randn(40, 64)
    assert torch.equal(topk.topk_indices(x, 8), x.topk(8, dim=-1, sorted=False).indices)


def test_the_sparse_training_forward_is_the_dense_one():
    """forward_sparse (training, through topk_indices) decodes what encode + decode give, and its gradient reaches
    the encoder and the decoder."""
    g = torch.Generator().manual_seed(0)
    sae = HeadSAEs(3, 12, 48, "topk", k=5)
    sae.init_from(torch.randn(100, 3, 12, generator=g), generator=g)
    x = torch.randn(64, 3, 12, generator=g)
    x_hat, vals, idx = sae.forward_sparse(x)
    dense, z = sae(x)
    torch.testing.assert_close(x_hat, dense, rtol=1e-5, atol=1e-5)
    assert torch.equal((z > 0).sum(-1), (vals > 0).sum(-1))
    ((x_hat - x) ** 2).sum().backward()
    assert sae.W_enc.grad.abs().sum() > 0 and sae.W_dec.grad.abs().sum() > 0 and sae.b_dec.grad.abs().sum() > 0


def test_prototypes_from_the_active_latents_are_the_dense_codes_means_bit_for_bit():
    """compute_prototypes reads a TopK SAE's k active latents only: each example's sum adds the same nonzero
    values in the same token order as the dense (tokens, heads, d_sae) code's, so the bits are the same."""
    from steer_core.sae.prototypes import compute_prototypes, example_means, level_means

    g = torch.Generator().manual_seed(3)
    sae = HeadSAEs(3, 12, 48, "topk", k=5)
    sae.init_from(torch.randn(100, 3, 12, generator=g), generator=g)
    queries = torch.randn(700, 3, 12, generator=g)
    example_ids = torch.sort(torch.randint(0, 30, (700,), generator=g)).values
    levels = torch.arange(30) % 6
    got = compute_prototypes(sae, queries, example_ids, levels, batch_size=128)
    with torch.no_grad():
        dense = level_means(example_means(sae.encode(queries), example_ids, 30), levels)
    assert torch.equal(got["codes"], dense)
