"""The lean decoding step (model/lean_step.py, model/lean_layers.cpp): the logits of transformers' own forward bit
for bit, in Python and in C++, with steering edits on queries and on the residual stream, an edit's exception
reaching the caller with no hook left behind, other hooks sending their layer through Python, and concurrent
threads each seeing only their own edits. With own_positions (the interactive views), a row padded on the left
attends over its own positions only: the logits it gets alone."""

import contextvars
import threading

import pytest
import torch
from tiny import tiny_lm
from transformers import StaticCache

from steer_core import native
from steer_core.model import lean_step
from steer_core.model.hooks import FIXED_SHIFT, active_hook_count, query_edits
from steer_core.model.small_batch import speed_up_small_batches

needs_cxx = pytest.mark.skipif(
    native.compiler() is None or native.cxx_compiler() is None, reason="no C/C++ compiler for the C++ layers"
)

ROWS, PROMPT, STEPS = 3, 7, 4
LONG, PAD = 40, 5  # own_positions' batch: prompts long enough that SDPA's vector sums see padding; row 1's


@pytest.fixture(scope="module")
def lm():
    lm = tiny_lm(seed=3)
    speed_up_small_batches(lm.model)
    return lm


def _prefilled(lm, prompt=PROMPT, pad=2):
    """A left-padded batch's StaticCache after its prompts (row 1 `pad` tokens shorter), and the decoding inputs of
    its first step."""
    torch.manual_seed(1)
    ids = torch.randint(1, 97, (ROWS, prompt))
    mask = torch.ones(ROWS, prompt, dtype=torch.long)
    mask[1, :pad] = 0
    cache = StaticCache(config=lm.model.config, max_cache_len=prompt + STEPS + 1)
    with torch.no_grad():
        lm.model(input_ids=ids, attention_mask=mask, past_key_values=cache, use_cache=True, logits_to_keep=1)
    return cache, mask


def _decode(lm, step, edits=None, **batch):
    """STEPS decoding steps of the same batch (_prefilled(lm, **batch)) through `step`; every step's logits."""
    cache, mask = _prefilled(lm, **batch)
    pos, width = mask.sum(1, keepdim=True), mask.shape[1]
    out = []
    for s in range(STEPS):
        mask = torch.cat([mask, torch.ones(ROWS, 1, dtype=torch.long)], dim=1)
        inp = torch.full((ROWS, 1), 5 + s)
        with query_edits(lm, edits or {}):
            out.append(step(lm, inp, mask, pos + s, cache, width + s))
    return out


def transformers_step(lm, inp, mask, pos, cache, at):
    with torch.no_grad():
        out = lm.model(
            input_ids=inp, attention_mask=mask, position_ids=pos, past_key_values=cache, use_cache=True,
            logits_to_keep=1, cache_position=pos.new_tensor([at]),
        )  # fmt: skip
    return out.logits[:, -1, :]


def python_step(lm, inp, mask, pos, cache, at):
    return lean_step.decode_logits(lm.model, inp, mask, pos, cache, native_layers=None)


def cxx_step(lm, inp, mask, pos, cache, at):
    layers = lean_step.lean_layers()
    assert layers is not None, "the C++ layers did not build or check"
    logits = lean_step.decode_logits(lm.model, inp, mask, pos, cache, native_layers=layers)
    assert cache._lean_plan is not None, "the C++ layers were not used"
    return logits


def own_python_step(lm, inp, mask, pos, cache, at):
    return lean_step.decode_logits(lm.model, inp, mask, pos, cache, native_layers=None, own_positions=True)


def own_cxx_step(lm, inp, mask, pos, cache, at):
    layers = lean_step.lean_layers()
    assert layers is not None, "the C++ layers did not build or check"
    return lean_step.decode_logits(lm.model, inp, mask, pos, cache, native_layers=layers, own_positions=True)


STEPPERS = [python_step, pytest.param(cxx_step, marks=needs_cxx)]
OWN_STEPPERS = [own_python_step, pytest.param(own_cxx_step, marks=needs_cxx)]


def _decode_both_ways(lm, step, hook):
    """`step`'s and transformers' logits with a hook in place (its handle), removed after on every path."""
    try:
        return _decode(lm, step), _decode(lm, transformers_step)
    finally:
        hook.remove()


def _same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_it_takes_a_llama_and_only_a_llama(lm):
    from transformers import MistralConfig, MistralForCausalLM

    assert lean_step.takes(lm.model)
    cfg = MistralConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                        num_attention_heads=2, num_key_value_heads=1)  # fmt: skip
    assert not lean_step.takes(MistralForCausalLM(cfg))


@pytest.mark.parametrize("step", STEPPERS)
def test_the_same_logits_as_transformers_bit_for_bit(lm, step):
    assert _same(_decode(lm, step), _decode(lm, transformers_step))


def _alone(lm, row: int, step) -> list[torch.Tensor]:
    """`step`'s logits for one row of the long padded batch run alone: its own cache (the batch's keys and values
    from its first position on), no padding."""
    cache, mask = _prefilled(lm, prompt=LONG, pad=PAD)
    start = int((mask[row] == 0).sum())
    n = LONG - start  # its prompt
    own = StaticCache(config=lm.model.config, max_cache_len=n + STEPS + 1)
    for i, kv in enumerate(cache.layers):
        keys, values = kv.keys[row : row + 1, :, start:LONG], kv.values[row : row + 1, :, start:LONG]
        own.update(keys.clone(), values.clone(), i, {"cache_position": torch.arange(n)})
    mask = torch.ones(1, n, dtype=torch.long)
    out = []
    for s in range(STEPS):
        mask = torch.cat([mask, torch.ones(1, 1, dtype=torch.long)], dim=1)
        out.append(step(lm, torch.full((1, 1), 5 + s), mask, torch.full((1, 1), n + s), own, n + s)[0])
    return out


@pytest.mark.parametrize("step", OWN_STEPPERS)
def test_with_own_positions_each_row_gets_the_logits_it_gets_alone(lm, step):
    """The attention kernel: each row of a padded batch, bit for bit what it gets alone (where SDPA's padded call
    gives the padded row other bits than alone), within float32 rounding of transformers' batch; the C++ and Python
    layers agree."""
    got = _decode(lm, step, prompt=LONG, pad=PAD)
    for row in range(ROWS):
        alone = _alone(lm, row, step)
        assert all(torch.equal(g[row], a) for g, a in zip(got, alone, strict=True)), row
    padded, sdpa_alone = _decode(lm, transformers_step, prompt=LONG, pad=PAD), _alone(lm, 1, transformers_step)
    assert not all(torch.equal(p[1], a) for p, a in zip(padded, sdpa_alone)), "too short to tell padding apart"
    for g, p in zip(got, padded, strict=True):
        torch.testing.assert_close(g, p, rtol=1e-5, atol=1e-5)
    assert _same(got, _decode(lm, own_python_step, prompt=LONG, pad=PAD))


@needs_cxx
def test_with_own_positions_a_hooked_layer_keeps_the_kernel(lm):
    """A forward hook on a layer sends it through the Python layers, which run the hook themselves: the same logits
    as the C++ layers' callback."""
    hook = lm.model.model.layers[1].register_forward_hook(lambda m, args, out: out * 0.5 + 0.25)
    try:
        want = _decode(lm, own_cxx_step, prompt=LONG, pad=PAD)
        got = _decode(lm, own_python_step, prompt=LONG, pad=PAD)
    finally:
        hook.remove()
    assert _same(got, want)


@pytest.mark.parametrize("step", STEPPERS)
def test_query_and_residual_edits_act_as_they_do_through_transformers(lm, step):
    calls = []

    def on_query(q):
        calls.append("query")
        return q * 1.5

    def on_residual(h):
        calls.append("residual")
        return h + 0.25

    edits = {1: on_query, ("residual", 2): on_residual}
    want = _decode(lm, transformers_step, edits)
    count = len(calls)
    got = _decode(lm, step, edits)
    assert _same(got, want)
    assert calls[count:] == calls[:count] == ["query", "residual"] * STEPS
    assert not _same(got, _decode(lm, transformers_step)), "the edits changed nothing"
    assert active_hook_count() == 0


def _fixed_shift(width, seed):
    """An edit adding one vector a row at every position, saying so as steering's fixed shifts do (FIXED_SHIFT)."""
    vector = torch.randn(ROWS, 1, width, generator=torch.Generator().manual_seed(seed))
    calls = []

    def edit(q):
        calls.append(q.shape)
        return q + vector

    setattr(edit, FIXED_SHIFT, lambda rows, dtype, device: vector)
    return edit, calls


@needs_cxx
def test_a_fixed_shift_is_added_without_a_callback_and_gives_the_same_logits(lm, monkeypatch):
    """The C++ layers add a fixed-shift edit themselves, and skip a dispatcher with no edit in this context: the
    logits of transformers running the edits, bit for bit, with no callback for either."""
    width = lm.n_heads * lm.head_dim
    shifted, calls = _fixed_shift(width, 0)
    other, other_calls = _fixed_shift(width, 1)
    edits = {0: shifted, 2: shifted, ("residual", 1): lambda h: h - 0.5}
    want = _decode(lm, transformers_step, edits)
    assert len(calls) == 2 * STEPS
    assert lean_step.lean_layers() is not None  # built and checked (its check calls back) before counting
    callbacks = []
    run_hooks = lean_step.Plan._run_hooks
    monkeypatch.setattr(
        lean_step.Plan, "_run_hooks", lambda plan, i, where: callbacks.append((i, where)) or run_hooks(plan, i, where)
    )
    elsewhere, another_context = query_edits(lm, {1: other}), contextvars.copy_context()
    another_context.run(elsewhere.__enter__)  # a dispatcher on layer 1's query, its edit not in this context
    try:
        got = _decode(lm, cxx_step, edits)
    finally:
        another_context.run(elsewhere.__exit__, None, None, None)
    assert not other_calls
    assert _same(got, want) and not _same(got, _decode(lm, transformers_step))
    assert len(calls) == 2 * STEPS, "the C++ layers called the fixed-shift edit back"
    assert callbacks == [(1, lean_step.OUTPUT)] * STEPS  # the residual edit only
    assert active_hook_count() == 0


@needs_cxx
def test_a_steps_edits_are_planned_again_when_they_change_and_kept_when_they_do_not(lm, monkeypatch):
    """A plan keeps a site's answer while its hooks and its edit are the objects of the last step (Plan._planned_site).
    Over one generation a held site's edit changes: a fixed shift, the same again, another, none, one to call back
    for. Every step gives transformers' logits with that step's edits, bit for bit (a kept answer gone stale would
    add the first shift at the third step), and the site is planned again at every step but the second."""
    from steer_core.model.hooks import dispatchers_held

    width = lm.n_heads * lm.head_dim
    first, _ = _fixed_shift(width, 0)
    second, _ = _fixed_shift(width, 1)
    per_step = [{0: first}, {0: first}, {0: second}, {}, {0: lambda q: q * 1.25}]
    query = lm.query_site(0)
    planned, step_of = [], [0]
    real = lean_step.planned_edit
    monkeypatch.setattr(
        lean_step, "planned_edit", lambda m, *a: (m is query and planned.append(step_of[0])) or real(m, *a)
    )

    def steps(step):
        cache, mask = _prefilled(lm)
        pos, at = mask.sum(1, keepdim=True), mask.shape[1]
        out = []
        with dispatchers_held(lm, [0]):
            for s, edits in enumerate(per_step):
                step_of[0], mask = s, torch.cat([mask, torch.ones(ROWS, 1, dtype=torch.long)], dim=1)
                with query_edits(lm, edits):
                    out.append(step(lm, torch.full((ROWS, 1), 5 + s), mask, pos + s, cache, at + s))
        return out

    got = steps(cxx_step)
    assert planned == [0, 2, 3, 4]
    assert _same(got, steps(transformers_step))
    assert active_hook_count() == 0


class Stop(Exception):
    pass


@pytest.mark.parametrize("step", STEPPERS)
@pytest.mark.parametrize("site", [0, ("residual", 1)])
def test_an_edits_exception_reaches_the_caller_and_no_hook_stays(lm, step, site):
    def raising(t):
        raise Stop

    with pytest.raises(Stop):
        _decode(lm, step, {site: raising})
    assert active_hook_count() == 0
    assert _same(_decode(lm, step), _decode(lm, transformers_step))  # and the next call is unaffected


@pytest.mark.parametrize("step", STEPPERS)
def test_a_hook_the_callbacks_do_not_cover_runs_its_layer_in_python(lm, step):
    """A pre-hook on a key projection: the layer runs through transformers' modules, and the hook fires."""
    seen = []
    k_proj = lm.model.model.layers[1].self_attn.k_proj
    hook = k_proj.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape) or (args[0] * 2,))
    got, want = _decode_both_ways(lm, step, hook)
    assert _same(got, want)
    assert len(seen) == 2 * STEPS + 2  # each decoding step of both runs, and both prefills


@pytest.mark.parametrize("step", STEPPERS)
def test_a_hook_may_keep_what_it_is_given(lm, step):
    """As it may keep a module's output: later steps do not write over what an earlier step handed it."""

    def recording(kept):
        def keep(module, args, out):
            kept.append((args[0], out))

        return keep

    got, want = [], []
    for kept, stepper in ((got, step), (want, transformers_step)):
        handles = [lm.model.model.layers[i].self_attn.q_proj.register_forward_hook(recording(kept)) for i in (0, 2)]
        handles.append(lm.model.model.layers[1].register_forward_hook(recording(kept)))
        try:
            _decode(lm, stepper)
        finally:
            for handle in handles:
                handle.remove()
    assert len(got) == len(want) == 3 * (STEPS + 1)
    for (a_in, a_out), (b_in, b_out) in zip(got, want, strict=True):
        assert torch.equal(a_in, b_in) and torch.equal(a_out, b_out)


@pytest.mark.parametrize("step", STEPPERS)
def test_a_hook_on_a_norm_fires_and_its_layer_runs_through_transformers(lm, step):
    seen = []
    norm = lm.model.model.layers[2].post_attention_layernorm
    hook = norm.register_forward_hook(lambda m, args, out: seen.append(1) or out + 0.125)
    got, want = _decode_both_ways(lm, step, hook)
    assert _same(got, want)
    assert len(seen) == 2 * STEPS + 2


@needs_cxx
def test_threads_decoding_at_once_each_see_their_own_edits(lm):
    edits = [{1: lambda q: q * 2.0}, {("residual", 0): lambda h: h - 0.5}, {}]
    want = [_decode(lm, transformers_step, e) for e in edits]
    got, errors = [None] * len(edits), []

    def run(i):
        try:
            for _ in range(3):
                got[i] = _decode(lm, cxx_step, edits[i])
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(edits))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert all(_same(g, w) for g, w in zip(got, want))
    assert active_hook_count() == 0


@needs_cxx
def test_a_weight_written_between_generations_is_read_by_the_next():
    twin = tiny_lm(seed=3)
    speed_up_small_batches(twin.model)
    before = _decode(twin, cxx_step)
    with torch.no_grad():
        twin.model.model.layers[0].mlp.down_proj.weight.mul_(0.5)
    assert _same(_decode(twin, cxx_step), _decode(twin, transformers_step))
    assert not _same(_decode(twin, cxx_step), before)


@pytest.mark.parametrize("step", STEPPERS)
def test_held_dispatchers_with_no_edit_leave_the_step_bit_for_bit_and_are_not_called_back(lm, step, monkeypatch):
    """A decoding loop holds its sites' dispatchers (hooks.dispatchers_held) across steps that may edit none of them,
    and another thread's held dispatchers are there during this thread's steps: a query's and a layer's output with
    no edit in this context give transformers' logits, and the C++ layers do not call back for them."""
    from steer_core.model.hooks import dispatchers_held

    lean_step.lean_layers()  # built and checked first (its check calls back for hooks of its own)
    calls = []
    run_hooks = lean_step.Plan._run_hooks
    monkeypatch.setattr(
        lean_step.Plan, "_run_hooks", lambda plan, idx, where: calls.append(idx) or run_hooks(plan, idx, where)
    )
    with dispatchers_held(lm, [0, ("residual", 1)]):
        held = _decode(lm, step)
        edited = _decode(lm, step, {("residual", 1): lambda h: h * 1.5})  # an edit on one held site: called back
    assert _same(held, _decode(lm, transformers_step)) and active_hook_count() == 0
    assert not _same(edited, held)
    if step is cxx_step:
        assert calls == [1] * STEPS


def test_a_steps_mask_is_the_last_ones_with_its_new_position_and_made_again_otherwise(lm):
    from transformers.masking_utils import create_causal_mask

    def made(mask, pos, cache):  # create_causal_mask's mask as SDPA converts it, the way it is made from scratch
        h = lm.model.model.embed_tokens(torch.zeros(ROWS, 1, dtype=torch.long))
        bool_mask = create_causal_mask(
            config=lm.model.config, inputs_embeds=h, attention_mask=mask, cache=cache, position_ids=pos
        )
        return torch.zeros_like(bool_mask, dtype=h.dtype).masked_fill_(bool_mask.logical_not(), float("-inf"))

    cache, mask = _prefilled(lm)
    pos, width = mask.sum(1, keepdim=True), mask.shape[1]
    for s in range(STEPS):
        mask = torch.cat([mask, torch.ones(ROWS, 1, dtype=torch.long)], dim=1)
        if s == 2:  # a row whose new position is not attended: not the last mask with one more position
            mask[0, -1] = 0
        expected = made(mask, pos + s, cache)
        python_step(lm, torch.full((ROWS, 1), 5 + s), mask, pos + s, cache, width + s)  # no compiler needed
        kept_2d, kept = cache._lean_mask
        assert kept_2d is mask and torch.equal(kept, expected), f"step {s}"
