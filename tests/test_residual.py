"""The field's baseline: a learned vector per level added to the residual stream (a decoder layer's
output), fitted with the same objectives and data as the SAE offsets, on a tiny random Llama."""

import pytest
import torch
from test_offsets import scenarios
from tiny import char_tokenizer, tiny_lm

from steer_core.bloom import LEVELS
from steer_core.errors import UserError
from steer_core.fit.offsets import LevelOffsets, OffsetFitConfig, OffsetsFileError, fit_encoded, load_offsets
from steer_core.generation import Request, generate_batch
from steer_core.model.hooks import RESIDUAL, active_hook_count, query_edits
from steer_core.steering.config import RESIDUAL_ALPHA, SteerConfig
from steer_core.steering.edits import RowGroup, make_residual_edit
from steer_core.steering.files import SteerFiles


@pytest.fixture(scope="module")
def lm():
    return tiny_lm()


def test_residual_edit_adds_the_levels_vector_to_the_layer_output(lm):
    v = torch.randn(6, 48)
    cfg = SteerConfig(method="residual", layers=(1,), strength=2.0)
    assert cfg.alpha == 2.0 * RESIDUAL_ALPHA  # strength 1: the shipped vectors' validated scale
    group = RowGroup(torch.tensor([0, 1]), torch.tensor([2, 5]), cfg, None, None, v)
    assert make_residual_edit([group], "prompt") is None  # generated tokens only, by default
    edit = make_residual_edit([group], "generated")
    h = torch.randn(2, 4, 48)
    assert torch.allclose(edit(h), h + cfg.alpha * v[[2, 5]][:, None])
    # through the dispatcher: the layer above reads the replaced residual stream
    seen = []
    above = lm.model.model.layers[2].register_forward_pre_hook(
        lambda m, args, kw: seen.append(args[0] if args else kw["hidden_states"]), with_kwargs=True
    )
    ids = torch.randint(1, 97, (2, 5))
    try:
        with torch.no_grad():
            lm.model(input_ids=ids)
            with query_edits(lm, {(RESIDUAL, 1): lambda h: h + 1.0}):
                lm.model(input_ids=ids)
    finally:
        above.remove()
    assert torch.allclose(seen[1], seen[0] + 1.0, atol=1e-5)
    assert active_hook_count() == 0


def test_residual_fit_steers_toward_the_level(lm):
    scs = scenarios()
    cfg = OffsetFitConfig(layers=(1,), epochs=8, lr=0.05, l1=0.0, objective="reps", factors=(1.0,), site="residual")
    fitted = fit_encoded(lm, scs, cfg, None, progress=False)
    assert fitted.delta.shape == (6, 1, 1, 48) and fitted.site == "residual"
    assert "sae_manifests" not in fitted.meta

    from steer_core.fit import offsets as off

    def residual_margin():
        lv = torch.arange(len(LEVELS))
        total = 0.0
        for sc in scs:

            def lp(levels, sc=sc):
                edits = off.offset_edits(fitted, (1,), None, levels, lm.n_heads, lm.head_dim, site="residual")
                with torch.no_grad():
                    return off._reply_logprobs(lm, sc, edits, 1)

            total += float((lp(lv) - lp((lv + 1) % len(LEVELS))).mean())
        return total / len(scs)

    assert residual_margin() > 0.05
    assert active_hook_count() == 0
    with pytest.raises(UserError, match="site"):
        OffsetFitConfig(site="mlp")


def test_residual_method_generates_from_saved_vectors_and_strength_0_is_unsteered(tmp_path):
    lm = tiny_lm(seed=3, tokenizer=char_tokenizer())
    vec = LevelOffsets(3.0 / RESIDUAL_ALPHA * torch.randn(6, 1, 1, 48), (1,), {"site": "residual"})
    vec.save(tmp_path / "vec")
    vectors = SteerFiles(residual=str(tmp_path / "vec"))
    q, a = "What is 2 + 2?", "5"
    plain = generate_batch(lm, [Request(q, a, "none", "create")], max_new_tokens=12, ignore_stop=True)[0]

    def run(alpha):
        cfg = SteerConfig(method="residual", layers=(1,), target="learned", strength=alpha)
        return generate_batch(
            lm, [Request(q, a, "residual", "create", steer=cfg, files=vectors)], max_new_tokens=12, ignore_stop=True
        )[0]

    assert run(0.0).token_ids == plain.token_ids
    assert run(1.0).token_ids != plain.token_ids
    assert active_hook_count() == 0
    with pytest.raises(OffsetsFileError, match="layer 2"):
        cfg = SteerConfig(method="residual", layers=(2,))
        generate_batch(lm, [Request(q, a, "residual", "create", steer=cfg, files=vectors)], max_new_tokens=2)
    with pytest.raises(OffsetsFileError, match="not learned offsets"):
        load_offsets(lm, tmp_path / "vec", site="sae")
    with pytest.raises(UserError, match="target is 'learned'"):
        SteerConfig(method="residual", target="delta")


def test_level_centroids_are_each_levels_mean_stream_over_its_feedback_tokens():
    """Against a brute-force reading, one row at a time from the model's hidden states."""
    lm = tiny_lm(tokenizer=char_tokenizer())
    from steer_core.bloom import FeedbackExample
    from steer_core.inspect.centroids import calibrated_strengths, level_centroids
    from steer_core.prompts import messages, render

    rows = [
        FeedbackExample(f"s{i}-{lv}", f"s{i}", "maths", f"What is {i}+{i}?", "Four.", lv, f"Try {lv} {i}.", "train")
        for i in range(2) for lv in LEVELS
    ]  # fmt: skip
    cent = level_centroids(lm, 1, rows, batch_size=5, max_tokens=6)
    want = torch.zeros(len(LEVELS), lm.model.config.hidden_size, dtype=torch.float64)
    count = [0] * len(LEVELS)
    for r in rows:
        ids, start = render(lm.tokenizer, messages(r.question, r.student_answer), r.feedback)
        ids = ids[: start + 6]
        with torch.no_grad():
            h = lm.model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states[2][0]
        i = LEVELS.index(r.level)
        want[i] += h[start:].double().sum(0)
        count[i] += len(ids) - start
    want /= torch.tensor(count, dtype=torch.float64)[:, None]
    assert cent.tokens == count and torch.allclose(cent.means.double(), want, atol=1e-4)
    others = (want.sum(0) - want) / 5
    assert torch.allclose(cent.distances().double(), (want - others).norm(dim=-1), atol=1e-4)
    v = torch.randn(6, lm.model.config.hidden_size)
    (s,) = calibrated_strengths(v, [2.0], cent)
    units = 2.0 * v.norm(dim=-1) / cent.distances()
    assert s["alpha"] == 2.0 and s["units"] == pytest.approx(float(units.mean()), rel=1e-5)
    assert s["create"] == pytest.approx(float(units[-1]), rel=1e-5)
    with pytest.raises(UserError, match="every level; none for create"):
        level_centroids(lm, 1, [r for r in rows if r.level != "create"])


def test_per_token_coefficients_are_read_from_each_tokens_own_activation():
    """Against the formula written out one token at a time; a zero gate is the constant vector."""
    from steer_core.steering.edits import token_coefficients

    h, gate = torch.randn(2, 3, 48), torch.randn(2, 49)
    got = token_coefficients(h, gate)
    for r in range(2):
        for s in range(3):
            n = h[r, s] / (h[r, s].pow(2).mean() + 1e-6).sqrt()
            z = float(n @ gate[r, :48]) / 48**0.5 + float(gate[r, 48])
            want = float(torch.nn.functional.softplus(torch.tensor(z))) / 0.693147
            assert float(got[r, s]) == pytest.approx(want, rel=1e-4)
    v = torch.randn(6, 48)
    cfg = SteerConfig(method="residual", layers=(1,), strength=1.0)
    rows, levels = torch.tensor([0, 1]), torch.tensor([2, 5])
    constant = make_residual_edit([RowGroup(rows, levels, cfg, None, None, v)], "generated")
    zero = make_residual_edit([RowGroup(rows, levels, cfg, None, None, v, torch.zeros(6, 49))], "generated")
    gated = make_residual_edit([RowGroup(rows, levels, cfg, None, None, v, gate.repeat(3, 1))], "generated")
    assert torch.allclose(zero(h), constant(h))
    want = h + cfg.alpha * token_coefficients(h, gate.repeat(3, 1)[[2, 5]])[..., None] * v[[2, 5]][:, None]
    assert torch.allclose(gated(h), want)


def test_per_token_fit_saves_its_gate_and_lowers_the_kl_below_the_constant_vector_it_starts_from(lm, tmp_path):
    from test_offsets import with_teachers

    from steer_core.fit.offsets import _ScenarioForward

    scs = with_teachers(scenarios())
    base = OffsetFitConfig(layers=(1,), epochs=4, lr=0.05, l1=0.0, objective="kl", site="residual")
    constant = fit_encoded(lm, scs, base, None, progress=False)
    constant.save(tmp_path / "constant")
    cfg = OffsetFitConfig(**{**base.__dict__, "per_token": True, "init": str(tmp_path / "constant"), "epochs": 4})
    fitted = fit_encoded(lm, scs, cfg, None, progress=False)
    assert fitted.gate.shape == (6, 1, 49) and fitted.meta["form"] == "per_token"

    def kl(offsets):
        total = 0.0
        for sc in scs:
            fwd = _ScenarioForward(lm, sc, (1,), None, site="residual", gate=offsets.gate)
            with torch.no_grad():
                total += float(fwd.kl_to_teacher(offsets.delta).mean())
        return total

    assert kl(fitted) < kl(constant)
    fitted.save(tmp_path / "gated")
    loaded = LevelOffsets.load(tmp_path / "gated")
    assert torch.equal(loaded.gate, fitted.gate) and loaded.gate_for_layer(1).shape == (6, 49)
    with pytest.raises(UserError, match="not of this site's shape"):  # SAE offsets cannot start a residual fit
        sae = LevelOffsets(torch.zeros(6, 1, 4, 24), (1,), {"site": "sae"})
        sae.save(tmp_path / "sae")
        fit_encoded(lm, scs, OffsetFitConfig(**{**cfg.__dict__, "init": str(tmp_path / "sae")}), None, progress=False)
    assert active_hook_count() == 0


def test_a_per_token_fit_steers_generation_through_its_gate_and_strength_0_is_unsteered(tmp_path):
    lm = tiny_lm(seed=3, tokenizer=char_tokenizer())
    v = 3.0 / RESIDUAL_ALPHA * torch.randn(6, 1, 1, 48)
    shut, neutral = torch.zeros(6, 1, 49), torch.zeros(6, 1, 49)
    shut[..., -1] = -40.0  # every token's coefficient ~ 0: the vector is read but not added
    LevelOffsets(v, (1,), {"site": "residual"}).save(tmp_path / "constant")
    for name, gate in (("shut", shut), ("neutral", neutral)):
        LevelOffsets(v, (1,), {"site": "residual", "form": "per_token"}, gate).save(tmp_path / name)
    q, a = "What is 2 + 2?", "5"
    plain = generate_batch(lm, [Request(q, a, "none", "create")], max_new_tokens=12, ignore_stop=True)[0]

    def run(folder, strength=1.0):
        cfg = SteerConfig(method="residual", layers=(1,), strength=strength)
        files = SteerFiles(residual=str(tmp_path / folder))
        req = Request(q, a, "residual", "create", steer=cfg, files=files)
        return generate_batch(lm, [req], max_new_tokens=12, ignore_stop=True)[0].token_ids

    assert run("constant") != plain.token_ids
    assert run("neutral") == run("constant") and run("shut") == plain.token_ids
    assert run("neutral", 0.0) == plain.token_ids
    assert active_hook_count() == 0
