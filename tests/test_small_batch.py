"""The CPU few-row products (model/small_batch.py, model/rows_kernel.py): the same products as F.linear,
gradients too, each row's product the same in any batch, and a batched greedy generation that matches
one row at a time."""

import copy
import subprocess
import sys
import threading

import pytest
import torch
from tiny import char_tokenizer, tiny_lm
from torch.nn import functional as F

from steer_core import native
from steer_core.generation import Request, generate_batch
from steer_core.model import rows_kernel as rk
from steer_core.model.small_batch import KERNEL_ROWS, SMALL_ROWS, bf16_products, speed_up_small_batches

needs_cc = pytest.mark.skipif(native.compiler() is None, reason="no C compiler to build the few-row kernel")


@pytest.fixture
def fresh_kernel(monkeypatch, tmp_path):
    """rows_kernel() built anew into an empty cache."""
    monkeypatch.setenv("STEER_CACHE", str(tmp_path))
    rk.rows_kernel.cache_clear()
    yield
    rk.rows_kernel.cache_clear()


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
    if rows in SMALL_ROWS:  # with autograd: MKL's (W @ x.T).T
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    else:
        assert torch.equal(got, want)  # outside the small range it is F.linear itself
    want.square().sum().backward()
    got.square().sum().backward()
    torch.testing.assert_close(x2.grad, x.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(fast.weight.grad, plain.weight.grad, rtol=1e-4, atol=1e-4)
    with torch.no_grad():  # without: the kernel from 1 to 11 rows
        got = fast(x2)
    if rows in KERNEL_ROWS and fast._rows_kernel is not None:
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    elif rows not in SMALL_ROWS:
        assert torch.equal(got, want)


@needs_cc
@pytest.mark.parametrize("shape", [(160, 96), (70, 37), (33, 600), (1, 16), (33, 1300), (9, 656)])
def test_the_kernel_gives_each_row_the_same_product_in_any_batch_and_thread_count(fresh_kernel, shape):
    """Close to the float64 product; a row's bits do not depend on its batch, its place or the threads
    (a weight's width that is not a multiple of 16, an odd count of outputs, a bias or none)."""
    kernel = rk.rows_kernel()
    assert kernel is not None, "a C compiler is here, yet the kernel was not built"
    g = torch.Generator().manual_seed(sum(shape))
    out, k = shape
    w, b = torch.randn(out, k, generator=g), torch.randn(out, generator=g)
    x = torch.randn(rk.MAX_ROWS, k, generator=g)
    for bias in (b, None):
        full = kernel(x, w, bias)
        exact = F.linear(x.double(), w.double(), None if bias is None else bias.double())
        torch.testing.assert_close(full.double(), exact, rtol=1e-5, atol=1e-5 * k**0.5)
        for rows in KERNEL_ROWS:
            assert torch.equal(kernel(x[:rows], w, bias), full[:rows]), rows
            assert torch.equal(kernel(x[rows - 1 : rows], w, bias), full[rows - 1 : rows]), rows
        threads = torch.get_num_threads()
        try:
            torch.set_num_threads(1)
            assert torch.equal(kernel(x, w, bias), full)
        finally:
            torch.set_num_threads(threads)


@needs_cc
def test_a_wide_weight_read_in_chunks_gives_the_bits_of_one_pass_over_its_width(monkeypatch, tmp_path):
    """A weight wider than a chunk (here 3 chunks, the last with K % 16 floats) keeps its sums between chunks: each
    row's product is the same bits as the kernel's built to read every width in one pass, at every row count."""
    monkeypatch.setenv("STEER_CACHE", str(tmp_path))
    one_pass = native.build(native.compiler(), rk.SOURCE, native.FLAGS + ("-DMAX_CHUNK_PIECES=100000",))
    chunked = rk.RowsKernel(native.build(native.compiler(), rk.SOURCE))
    g = torch.Generator().manual_seed(3)
    w, b = torch.randn(21, 16 * 2 * rk.MAX_CHUNK_PIECES + 37, generator=g), torch.randn(21, generator=g)
    x = torch.randn(rk.MAX_ROWS, w.shape[1], generator=g)
    assert len(rk.chunk_starts(w.shape[1] // 16)) == 4  # three chunks
    with monkeypatch.context() as m:  # the one-pass build's layout
        m.setattr(rk, "MAX_CHUNK_PIECES", 100000)
        whole = rk.pack(w)
    with pytest.raises(AssertionError, match="pieces a chunk"):
        rk.RowsKernel(one_pass)  # a library that chunks otherwise is refused by this module
    for rows in KERNEL_ROWS:
        for bias in (b, None):
            assert torch.equal(chunked(x[:rows], w, bias), _call(one_pass, x[:rows], w, bias, whole)), rows


def _call(library, x, w, bias, packed):
    """The library's product with its own packed weight, past RowsKernel's checks (it chunks otherwise)."""
    y = torch.empty(x.shape[0], w.shape[0])
    fail = rk.rows_linear(library)(
        packed.data_ptr(), x.contiguous().data_ptr(), None if bias is None else bias.data_ptr(), y.data_ptr(),
        w.shape[0], w.shape[1], x.shape[0], torch.get_num_threads(),
    )  # fmt: skip
    assert not fail
    return y


@needs_cc
def test_a_broken_cached_kernel_is_built_again(fresh_kernel, tmp_path):
    """In a new process (one that has loaded the library keeps its mapping): the file is rebuilt."""
    path = rk.rows_kernel().path
    broken = path.with_name("broken")
    broken.write_bytes(b"not a shared library")
    broken.replace(path)  # a new file: a loaded library must never change under its process
    code = "from steer_core.model.rows_kernel import rows_kernel; print(rows_kernel() is not None)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert out.stdout.strip() == "True", out.stderr
    assert path.read_bytes()[:4] == b"\x7fELF"
    assert not list(path.parent.glob("*.part")), "a partial build was left behind"


def test_without_a_compiler_or_when_switched_off_mkl_keeps_the_products(fresh_kernel, monkeypatch, caplog):
    monkeypatch.setenv("CC", "/nonexistent/cc")
    assert rk.rows_kernel() is None
    assert "keeps MKL" in caplog.text
    rk.rows_kernel.cache_clear()
    monkeypatch.delenv("CC")
    monkeypatch.setenv("STEER_KERNEL", "off")
    assert rk.rows_kernel() is None
    fast = torch.nn.Linear(96, 160)
    speed_up_small_batches(fast)
    assert fast._rows_kernel is None
    x = torch.randn(1, 96)
    with torch.no_grad():
        assert torch.equal(fast(x), F.linear(x, fast.weight, fast.bias))  # one row: F.linear itself


def test_small_batches_route_only_plain_cpu_linears():
    lm = tiny_lm(seed=3)
    n_linear = sum(type(m) is torch.nn.Linear for m in lm.model.modules())
    assert speed_up_small_batches(lm.model) == n_linear > 0
    assert speed_up_small_batches(torch.nn.Sequential(torch.nn.Conv1d(2, 2, 1))) == 0


def test_a_sped_up_batch_keeps_each_rows_greedy_reply():
    """Four rows decoded together through the few-row path give the replies each gets alone, on a model
    whose logits are not tied by chance."""
    lm = tiny_lm(seed=4, tokenizer=char_tokenizer())
    speed_up_small_batches(lm.model)
    reqs = [Request(f"Question {i}?", f"Answer {i}.", "none") for i in range(4)]
    together = [o.token_ids for o in generate_batch(lm, reqs, max_new_tokens=12, ignore_stop=True)]
    alone = [generate_batch(lm, [r], max_new_tokens=12, ignore_stop=True)[0].token_ids for r in reqs]
    assert together == alone


def test_a_weight_no_longer_contiguous_falls_back_to_torch():
    """The kernel reads raw memory; a weight reassigned after loading as a transposed view is read by torch."""
    fast = torch.nn.Linear(96, 160)
    speed_up_small_batches(fast)
    fast.weight = torch.nn.Parameter(torch.randn(96, 160).t(), requires_grad=False)
    assert not fast.weight.is_contiguous()
    x = torch.randn(3, 96)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), F.linear(x, fast.weight, fast.bias), rtol=1e-5, atol=1e-5)


def test_bfloat16_products_are_the_fitting_threads_only_and_end_with_the_context():
    """A fit's products in bfloat16: close to float32's, gradients reach the input; a thread decoding meanwhile
    (a Space's visitor) keeps float32's bits, and so does everything after the context."""
    fast = torch.nn.Linear(96, 160)
    speed_up_small_batches(fast)
    fast.requires_grad_(False)
    x = torch.randn(20, 96, requires_grad=True)
    want = F.linear(x, fast.weight, fast.bias)
    seen = {}

    def visitor():
        with torch.no_grad():
            seen["y"] = fast(x.detach()[:1])

    with bf16_products(fast):
        y = fast(x)
        thread = threading.Thread(target=visitor)
        thread.start()
        thread.join()
        assert y.dtype == torch.float32 and not torch.equal(y, want)
        torch.testing.assert_close(y, want, rtol=3e-2, atol=3e-2)
        y.sum().backward()
    torch.testing.assert_close(x.grad, fast.weight.sum(0).expand_as(x), rtol=3e-2, atol=3e-2)
    with torch.no_grad():
        assert torch.equal(seen["y"], fast(x.detach()[:1]))  # the visitor's row: float32, as outside the context
    assert torch.equal(fast(x), want)


@needs_cc
def test_the_packed_weight_is_made_once_and_again_after_the_weight_changes(fresh_kernel):
    """The kernel reads a packed copy kept with the module: made by pack_weights (or at first use), reused, and
    made again when the weight is written to in place or replaced, so a product never reads a stale copy."""
    from steer_core.model.small_batch import pack_weights

    fast = torch.nn.Linear(96, 160, bias=False)
    speed_up_small_batches(fast)
    assert pack_weights(fast) == 160 * 96 * 4
    packed = fast._rows_packed[1]
    x = torch.randn(3, 96)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), F.linear(x, fast.weight), rtol=1e-5, atol=1e-5)
        assert fast._rows_packed[1] is packed  # reused
        fast.weight.mul_(-2.0)
        torch.testing.assert_close(fast(x), F.linear(x, fast.weight), rtol=1e-5, atol=1e-5)
        fast.weight = torch.nn.Parameter(torch.randn(160, 96), requires_grad=False)
        torch.testing.assert_close(fast(x), F.linear(x, fast.weight), rtol=1e-5, atol=1e-5)
