"""Engine tests on a tiny random Llama: hooks, SAEs, descent, batching, isolation."""

import threading
from dataclasses import replace

import pytest
import torch
from tiny import tiny_bank, tiny_lm

from steer_core.model.hooks import FIXED_SHIFT, active_hook_count, capture_queries, dispatchers_held, query_edits
from steer_core.sae.module import (
    HeadSAEs,
    SAEFileError,
    SAETrainConfig,
    load_head_saes,
    save_head_saes,
    train_head_saes,
)
from steer_core.steering.config import SteerConfig
from steer_core.steering.descent import latent_descent, query_descent
from steer_core.steering.edits import RowGroup, make_layer_edit, make_residual_edit, steer_rows


@pytest.fixture(scope="module")
def lm():
    return tiny_lm()


def ids(batch=2, seq=7, seed=0):
    return torch.randint(0, 97, (batch, seq), generator=torch.Generator().manual_seed(seed))


def logits(lm, x):
    with torch.no_grad():
        return lm.model(input_ids=x, use_cache=False).logits


def test_no_edits_is_bit_identical(lm):
    x = ids()
    ref = logits(lm, x)
    with query_edits(lm, {1: lambda q: None}):
        same = logits(lm, x)
    with query_edits(lm, {}):
        same2 = logits(lm, x)
    assert torch.equal(ref, same) and torch.equal(ref, same2)
    assert active_hook_count() == 0


def test_edit_changes_output_and_hooks_leave_on_exception(lm):
    x = ids()
    ref = logits(lm, x)
    with query_edits(lm, {0: lambda q: q * 3}):
        assert not torch.equal(ref, logits(lm, x))
    with pytest.raises(RuntimeError):
        with query_edits(lm, {0: lambda q: q * 3, 2: lambda q: q}):
            raise RuntimeError("boom")
    assert active_hook_count() == 0
    assert all(not m.self_attn.q_proj._forward_hooks for m in lm.model.model.layers)
    assert torch.equal(ref, logits(lm, x))


def test_held_dispatchers_stay_through_their_block_and_leave_outputs_alone(lm):
    x = ids()
    ref = logits(lm, x)
    q0 = lm.model.model.layers[0].self_attn.q_proj
    with dispatchers_held(lm, [0, ("residual", 1)]):
        assert active_hook_count() == 2 and len(q0._forward_hooks) == 1
        assert torch.equal(ref, logits(lm, x))  # held, with no edit in this context: bit for bit
        hook = next(iter(q0._forward_hooks.values()))
        for _ in range(2):  # a step's edits come and go; the held dispatcher is the same one, not registered again
            with query_edits(lm, {0: lambda q: q * 3}):
                assert not torch.equal(ref, logits(lm, x)) and active_hook_count() == 2
            assert next(iter(q0._forward_hooks.values())) is hook
        with query_edits(lm, {2: lambda q: q}):  # a site not held comes and goes as before
            assert active_hook_count() == 3
        assert active_hook_count() == 2 and torch.equal(ref, logits(lm, x))
    assert active_hook_count() == 0 and not q0._forward_hooks


def test_held_dispatchers_leave_on_exception_and_a_bad_site_takes_none(lm):
    with pytest.raises(RuntimeError):
        with dispatchers_held(lm, [0, 1]):
            raise RuntimeError("boom")
    assert active_hook_count() == 0
    with pytest.raises(ValueError):
        with dispatchers_held(lm, [0, 99]):
            pass
    assert active_hook_count() == 0


def test_capture_shapes(lm):
    with capture_queries(lm, [0, 2]) as store:
        logits(lm, ids(3, 5))
    assert store[0][0].shape == (3, 5, 4, 12) and store[2][0].shape == (3, 5, 4, 12)
    assert active_hook_count() == 0


def test_sae_trains_and_reconstructs():
    g = torch.Generator().manual_seed(0)
    basis = torch.randn(2, 40, 12, generator=g)  # each head: sparse mixtures of 40 directions
    codes = torch.relu(torch.randn(4000, 2, 40, generator=g) - 1.2)
    x = torch.einsum("nhk,hkd->nhd", codes, basis) + 0.5
    for arch in ("topk", "standard"):
        sae, rep = train_head_saes(
            x,
            SAETrainConfig(architecture=arch, expansion=4, k=8, l1_coeff=0.05, epochs=30, batch_size=512),
            progress=False,
        )
        assert min(rep.explained_variance) > 0.7, (arch, rep.explained_variance)
        assert max(rep.l0) < 48


def test_saelens_round_trip_and_bad_files(tmp_path):
    sae = HeadSAEs(3, 12, 24, "topk", k=5)
    sae.init_from(torch.randn(50, 3, 12))
    save_head_saes(sae, tmp_path, "tiny", 1, dtype="float32")
    import json

    from safetensors.torch import load_file

    t = load_file(str(tmp_path / "head_2" / "sae_weights.safetensors"))
    assert t["W_enc"].shape == (12, 24) and t["W_dec"].shape == (24, 12)
    cfg = json.loads((tmp_path / "head_2" / "cfg.json").read_text())
    assert cfg["metadata"]["hook_name"] == "model.layers.1.self_attn.q_proj.head.2" and cfg["k"] == 5
    back = load_head_saes(tmp_path, 3, 12)
    x = torch.randn(10, 3, 12)
    assert torch.allclose(back(x)[0], sae(x)[0], atol=1e-6)
    w = tmp_path / "head_1" / "sae_weights.safetensors"
    w.write_bytes(w.read_bytes()[:100])
    with pytest.raises(SAEFileError, match="unreadable"):
        load_head_saes(tmp_path, 3, 12)
    save_head_saes(sae, tmp_path, "tiny", 1, dtype="float32")
    (tmp_path / "head_0" / "cfg.json").write_text(json.dumps({**cfg, "d_sae": 99}))
    with pytest.raises(SAEFileError, match="shape"):
        load_head_saes(tmp_path, 3, 12)


def test_descent_lowers_distance_to_prototype():
    g = torch.Generator().manual_seed(0)
    z0, p = torch.rand(5, 3, 16, generator=g), torch.rand(5, 3, 16, generator=g)
    d0 = (z0 - p).norm(dim=-1)
    for dist in ("l2", "cosine"):
        z = latent_descent(z0, p, steps=10, lr=0.1, distance=dist)
        assert (z >= 0).all()
        if dist == "l2":
            assert ((z - p).norm(dim=-1) < d0).all()
        else:
            cos = torch.nn.functional.cosine_similarity
            assert (cos(z, p, dim=-1) > cos(z0, p, dim=-1)).all()
    z, trace = latent_descent(z0, p, 4, 0.1, trace_to=p.unsqueeze(0))
    assert trace.shape == (5, 1, 5, 3) and (trace[-1] < trace[0]).all()
    assert torch.equal(latent_descent(z0, p, steps=0, lr=0.1), z0)


@pytest.mark.parametrize("lr,mu,steps", [(0.2, 0.0, 20), (0.1, 0.5, 7), (0.05, 2.0, 3), (0.4, 0.0, 5), (0.6, 0.0, 4)])
def test_closed_form_descent_equals_the_step_loop(lr, mu, steps):
    """The l2 fast path must give what T explicit steps give (lr 0.6 overshoots: loop fallback)."""
    g = torch.Generator().manual_seed(1)
    z0 = torch.relu(torch.randn(6, 3, 32, generator=g))
    target = 2 * torch.randn(6, 3, 32, generator=g)  # negative coordinates exercise the relu clamp
    fast = latent_descent(z0, target, steps, lr, mu)
    loop, _ = latent_descent(z0, target, steps, lr, mu, trace_to=torch.zeros(1, 1, 1, 32))
    assert torch.allclose(fast, loop, atol=1e-5)
    q0 = torch.randn(6, 3, 32, generator=g)
    assert torch.allclose(
        query_descent(q0, target, steps, lr, mu),
        latent_descent(q0, target, steps, lr, mu, nonneg=False, trace_to=torch.zeros(1, 32))[0],
        atol=1e-5,
    )


@pytest.mark.parametrize(
    "method,target", [("sae", "prototype"), ("sae", "delta"), ("query", "prototype"), ("meandiff", "delta")]
)
def test_batched_heads_equal_per_head_reference(lm, method, target):
    bank = tiny_bank(lm, 1)
    cfg = SteerConfig(method=method, layers=(1,), steps=5, lr=0.1, strength=2.0, target=target)
    x = torch.randn(3, 4, lm.n_heads, lm.head_dim)
    levels = torch.tensor([0, 3, 5])
    heads = [0, 2, 3]
    batched = steer_rows(bank, x[:, :, heads], levels, torch.tensor(heads), cfg)
    every = steer_rows(bank, x, levels, None, cfg)
    for j, h in enumerate(heads):
        single = steer_rows(bank, x[:, :, [h]], levels, torch.tensor([h]), cfg)
        assert torch.allclose(batched[:, :, j : j + 1], single, atol=1e-5)
        assert torch.allclose(every[:, :, h : h + 1], single, atol=1e-5)


@pytest.mark.parametrize("architecture", ["standard", "topk"])
@pytest.mark.parametrize(
    "target,strength,mu,heads,rows,extra",
    [
        ("prototype", 1.0, 0.0, None, [0, 1, 2], {}),  # the paper's own: every row, head and position
        ("prototype", 0.5, 0.5, (1, 3), [0, 1, 2], {}),
        ("delta", 1.0, 0.0, None, [2, 0], {}),
        ("delta", 2.0, 0.0, (0,), [1], {}),
        ("prototype", 1.0, 0.0, None, [0, 1, 2], {"first_tokens": 2, "after_first": 0.5}),  # a schedule: two parts
        ("delta", 1.0, 0.0, (1, 2), [1, 2], {"positions": "all"}),  # the prompt steered too
    ],
)
def test_a_descent_to_a_point_made_once_gives_steer_rows_bits(
    lm, architecture, target, strength, mu, heads, rows, extra
):
    """A layer edit runs a closed-form descent to a point with its weights, points and constants made once
    (edits.PointDescent), and one group of every row and head returns its steered queries whole: the same bits as
    steer_rows on each group's rows, heads and positions (each segment of a schedule with its own config), in the
    prompt and in the reply, one position or several."""
    from steer_core.steering.edits import PointDescent

    bank = tiny_bank(lm, 1)
    if architecture == "topk":
        bank.sae.architecture, bank.sae.k = "topk", 5
    cfg = SteerConfig(
        method="sae", layers=(1,), heads=heads, steps=6, lr=0.2, mu=mu, target=target, strength=strength, **extra
    )
    head_idx = None if heads is None else torch.tensor(heads)
    levels = torch.tensor([4, 1, 2][: len(rows)])
    group = RowGroup(torch.tensor(rows), levels, cfg, bank, head_idx)
    assert PointDescent.of(group) is not None
    for phase, start in [("generated", 0), ("generated", 1)] + ([("prompt", 0)] if "positions" in extra else []):
        edit = make_layer_edit([group], phase, 4, 12, start)
        for seq in (1, 3):
            q = torch.randn(3, seq, 48)
            want = q.view(3, seq, 4, 12).clone()
            picked = torch.tensor(list(heads or range(4)))
            for a, b, seg in cfg.segments(phase, start):
                b = seq if b is None else min(b, seq)
                if a < b:
                    x = want[rows][:, a:b][:, :, picked]
                    # (rows, positions, heads, dim) -> the indexed assignment's (rows, heads, positions, dim)
                    want[torch.tensor(rows)[:, None], a:b, picked] = steer_rows(
                        bank, x, levels, head_idx, seg
                    ).transpose(1, 2)
            assert torch.equal(edit(q), want.view(3, seq, 48)), (phase, start, seq)
    for other in (dict(distance="cosine"), dict(target="softmax"), dict(target="learned"), dict(lr=0.6)):
        assert PointDescent.of(RowGroup(torch.tensor(rows), levels, replace(cfg, **other), bank, head_idx)) is None


def test_layer_edit_touches_only_its_rows_and_heads(lm):
    bank = tiny_bank(lm, 1)
    cfg = SteerConfig(method="sae", layers=(1,), heads=(1,), steps=5, lr=0.2, target="prototype", positions="all")
    edit = make_layer_edit(
        [RowGroup(torch.tensor([1]), torch.tensor([4]), cfg, bank, torch.tensor([1]))], "prompt", 4, 12
    )
    q = torch.randn(2, 5, 48)
    out = edit(q).view(2, 5, 4, 12)
    q4 = q.view(2, 5, 4, 12)
    assert torch.equal(out[0], q4[0])
    assert torch.equal(out[1][:, [0, 2, 3]], q4[1][:, [0, 2, 3]])
    assert not torch.equal(out[1][:, 1], q4[1][:, 1])
    gen_only = SteerConfig(method="sae", layers=(1,), positions="generated")
    assert make_layer_edit([RowGroup(torch.tensor([0]), torch.tensor([0]), gen_only, bank)], "prompt", 4, 12) is None


def test_a_fixed_shift_edit_says_what_it_adds_and_others_do_not(lm):
    """The lean decoding step adds a fixed-shift edit's vector itself (hooks.FIXED_SHIFT): it must be what the edit
    adds, bit for bit; an edit that reads the query has no such vector."""
    bank = tiny_bank(lm, 1)
    offsets = torch.rand(6, lm.n_heads, 48)
    learned = SteerConfig(method="sae", layers=(1,), heads=(1, 3), target="learned", strength=2.0)
    edit = make_layer_edit([RowGroup(torch.tensor([0, 2]), torch.tensor([4, 1]), learned, bank, torch.tensor([1, 3]),
                                     offsets=offsets)], "generated", 4, 12)  # fmt: skip
    q = torch.randn(3, 1, 48)
    shift = getattr(edit, FIXED_SHIFT)(3, q.dtype, q.device)
    assert shift.shape == (3, 1, 48) and torch.equal(edit(q), q + shift)
    assert torch.count_nonzero(shift[1]) == 0 and torch.count_nonzero(shift.view(3, 4, 12)[0, 1]) > 0
    descent = SteerConfig(method="sae", layers=(1,), steps=5, lr=0.2, target="prototype")
    reads = make_layer_edit([RowGroup(torch.tensor([0]), torch.tensor([4]), descent, bank)], "generated", 4, 12)
    assert not hasattr(reads, FIXED_SHIFT)


def test_first_tokens_steers_only_the_replys_opening(lm):
    bank = tiny_bank(lm, 1)
    full = SteerConfig(method="sae", layers=(1,), steps=5, lr=0.2, target="prototype", positions="all")
    opening = SteerConfig(method="sae", layers=(1,), steps=5, lr=0.2, target="prototype", first_tokens=3)

    def edit(cfg, phase, start=0):
        return make_layer_edit([RowGroup(torch.tensor([0, 1]), torch.tensor([4, 2]), cfg, bank)], phase, 4, 12, start)

    q = torch.randn(2, 5, 48)
    whole = edit(full, "generated")(q)
    teacher_forced = edit(opening, "generated")(q)  # a whole reply from token 0: tokens 0-2 steered
    torch.testing.assert_close(teacher_forced[:, :3], whole[:, :3])
    assert torch.equal(teacher_forced[:, 3:], q[:, 3:]) and not torch.allclose(whole[:, :3], q[:, :3])
    step = edit(opening, "generated", start=2)(q[:, :1])  # a decode step running token 2: still steered
    torch.testing.assert_close(step, whole[:, :1])
    assert edit(opening, "generated", start=3) is None  # token 3 onward: no hook at all
    assert edit(opening, "prompt") is None  # the default positions steer no prompt token


@pytest.mark.parametrize("target", ["prototype", "learned"])
def test_a_schedule_steers_the_opening_fully_and_the_rest_at_its_share(lm, target):
    """first_tokens N with after_first f: positions < N at the strength, the rest at f x the strength, in a
    teacher-forced reply and in decode steps alike (a descent target and a fixed shift)."""
    bank = tiny_bank(lm, 1)
    offsets = torch.rand(6, lm.n_heads, 48)
    kw = dict(method="sae", layers=(1,), steps=5, lr=0.2, target=target, strength=2.0)
    full, half = SteerConfig(**kw), SteerConfig(**{**kw, "strength": 1.0})
    sched = SteerConfig(**kw, first_tokens=3, after_first=0.5)
    assert sched.segments("generated") == [(0, 3, sched), (3, None, half)]
    assert sched.segments("generated", start=5) == [(0, None, half)] and sched.segments("prompt") == []
    assert "first 3 then x0.5" in sched.label

    def edit(cfg, start=0):
        g = RowGroup(torch.tensor([0, 1]), torch.tensor([4, 2]), cfg, bank, offsets=offsets)
        return make_layer_edit([g], "generated", 4, 12, start)

    q = torch.randn(2, 6, 48)
    out = edit(sched)(q)
    torch.testing.assert_close(out[:, :3], edit(full)(q)[:, :3])
    torch.testing.assert_close(out[:, 3:], edit(half)(q)[:, 3:])
    torch.testing.assert_close(edit(sched, start=4)(q[:, :1]), edit(half)(q[:, :1]))  # a decode step past the opening
    with pytest.raises(ValueError, match="needs first tokens"):
        SteerConfig(after_first=0.5)


def test_a_residual_schedule_adds_the_share_after_the_opening():
    v = torch.randn(6, 48)
    cfg = SteerConfig(method="residual", layers=(1,), strength=1.0, first_tokens=2, after_first=0.25)
    g = RowGroup(torch.tensor([0]), torch.tensor([3]), cfg, None, None, v)
    h = torch.randn(1, 5, 48)
    out = make_residual_edit([g], "generated")(h)
    torch.testing.assert_close(out[:, :2], h[:, :2] + cfg.alpha * v[3])
    torch.testing.assert_close(out[:, 2:], h[:, 2:] + 0.25 * cfg.alpha * v[3])


def test_threads_with_different_settings_are_isolated(lm):
    x = ids(2, 9, seed=3)
    scales = [1.0, 2.0, 0.5, 3.0]
    alone = {}
    for s in scales:
        with query_edits(lm, {1: (lambda q, s=s: q * s)}):
            alone[s] = logits(lm, x)
    results, errors = {}, []
    barrier = threading.Barrier(len(scales))

    def worker(s):
        try:
            barrier.wait()
            for _ in range(5):
                with query_edits(lm, {1: (lambda q, s=s: q * s)}):
                    out = logits(lm, x)
                assert torch.equal(out, alone[s])
            results[s] = True
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(s,)) for s in scales]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not errors and len(results) == len(scales)
    assert active_hook_count() == 0


@pytest.mark.parametrize(
    "bad",
    [
        dict(steps=-1),
        dict(lr=float("nan")),
        dict(mu=-1.0),
        dict(strength=float("inf")),
        dict(method="magic"),
        dict(positions="middle"),
        dict(layers=()),
        dict(first_tokens=0),
        dict(first_tokens=True),
        dict(first_tokens=2, positions="prompt"),
    ],
)
def test_steer_config_rejects_bad_values(bad):
    with pytest.raises(ValueError):
        SteerConfig(**bad)


def test_layer_head_pairs_give_each_layer_its_own_heads(lm, tmp_path):
    from steer_core.generation import Request
    from steer_core.sae.layer_files import save_layer
    from steer_core.steering.assets import steering_groups
    from steer_core.steering.files import SteerFiles

    for layer in (0, 2):
        b = tiny_bank(lm, layer)
        save_layer(
            tmp_path,
            lm,
            layer,
            b.sae,
            {"codes": b.codes, "queries": b.queries, "query_all": b.query_all},
            {},
            {},
            dtype="float32",
        )
    cfg = SteerConfig(layers=(0, 2), layer_heads=((0, 3), (2, 1), (2, 2)), target="prototype")
    files = SteerFiles(saes=str(tmp_path))
    groups = steering_groups(lm, [Request("q", "a", "sae", "apply", steer=cfg, files=files)])
    assert groups[0][0].heads.tolist() == [3] and groups[2][0].heads.tolist() == [1, 2]
    bad = SteerConfig(layers=(0,), layer_heads=((0, 9),), target="prototype")
    with pytest.raises(ValueError, match="head"):
        steering_groups(lm, [Request("q", "a", "sae", "apply", steer=bad, files=files)])


STEERABLE = [
    ("sae", "prototype"),
    ("sae", "delta"),
    ("sae", "softmax"),
    ("sae", "learned"),
    ("query", "prototype"),
    ("query", "delta"),
    ("meandiff", "delta"),
    ("residual", "learned"),
]


@pytest.mark.parametrize("method,target", STEERABLE)
def test_strength_0_steers_nothing_for_every_method_and_target(lm, method, target):
    """Strength 0 is off: no hook is built for any phase, and the edit itself is the identity."""
    from steer_core.steering.edits import make_residual_edit

    bank = tiny_bank(lm, 1)
    off = torch.rand(6, 48) if method == "residual" else torch.rand(6, lm.n_heads, 48)
    for strength, built in ((0.0, False), (1.0, True)):
        cfg = SteerConfig(method=method, layers=(1,), target=target, strength=strength, positions="all")
        group = RowGroup(torch.tensor([0, 1]), torch.tensor([2, 5]), cfg, bank, None, off)
        for phase in ("prompt", "generated"):
            edit = (
                make_residual_edit([group], phase)
                if method == "residual"
                else make_layer_edit([group], phase, lm.n_heads, lm.head_dim)
            )
            assert (edit is not None) == built
    if method != "residual":
        x = torch.randn(2, 3, lm.n_heads, lm.head_dim)
        cfg = SteerConfig(method=method, layers=(1,), target=target, strength=0.0)
        assert torch.equal(steer_rows(bank, x, torch.tensor([2, 5]), None, cfg, off), x)


def test_prototype_strength_is_the_fraction_of_the_way_to_the_prototype(lm):
    bank = tiny_bank(lm, 1)
    z0 = torch.rand(2, 3, lm.n_heads, 48)
    levels = torch.tensor([1, 4])
    proto = bank.codes[levels][:, None]
    from steer_core.steering.edits import steer_codes

    def dist(strength):
        cfg = SteerConfig(target="prototype", strength=strength, steps=200, lr=0.2)
        return float((steer_codes(bank, z0, levels, None, cfg) - proto).norm())

    start = float((z0 - proto).norm())
    assert dist(1.0) < 1e-3 * start  # the paper's target: all the way
    assert dist(0.5) == pytest.approx(0.5 * start, rel=1e-3)  # codes and prototypes are >= 0: no clamping
    assert dist(0.0) == pytest.approx(start)


@pytest.mark.parametrize("method", ["sae", "query", "meandiff", "residual"])
@pytest.mark.parametrize("target", ["learned", "delta", "prototype", "softmax"])
def test_for_method_is_idempotent_and_the_label_states_the_scale_applied(method, target):
    """A config passes through for_method more than once (the eval grid, then the Request): a second
    pass must change nothing, or the row's label names another scale than the one that ran (the residual
    rows once read "a48" and ran at alpha 3)."""
    from steer_core.generation import Request

    cfg = SteerConfig(target=target, strength=1.5).for_method(method)
    assert cfg.for_method(method) == cfg
    req = Request("What is 2 + 2?", "5", method, "create", steer=cfg)
    assert req.steer == cfg and req.steer.label == cfg.label
    assert f"a{cfg.alpha:g}" in cfg.label or (cfg.target == "prototype" and cfg.alpha == 1)


def test_separability_is_kept_while_its_prototypes_stay_loaded_and_unchanged():
    from steer_core.inspect import latents
    from steer_core.sae.prototypes import separability

    codes = torch.rand(6, 3, 16, generator=torch.Generator().manual_seed(0))
    first = latents._separability(codes)
    assert latents._separability(codes) is first  # kept: the same prototypes
    assert (first == separability(codes).numpy()).all()
    codes[0] *= 3  # changed in place: read again
    again = latents._separability(codes)
    assert again is not first and (again == separability(codes).numpy()).all()
    other = codes.clone()  # other prototypes with the same values: their own entry
    assert latents._separability(other) is not again
    del other
    fresh = torch.rand(6, 3, 16)
    latents._separability(fresh)  # a miss drops the entries of prototypes since unloaded
    assert all(ref() is not None for ref, _, _ in latents._SEPARABILITY.values())
