"""Learned sparse offsets, the prototype-softmax objective and the bootstrap, on a tiny random Llama."""

import pytest
import torch
from tiny import tiny_bank, tiny_lm

from steer_core.bloom import LEVELS
from steer_core.errors import UserError
from steer_core.evaluation import bootstrap_over_scenarios
from steer_core.fit.offsets import (
    EncodedScenario,
    LevelOffsets,
    OffsetFitConfig,
    OffsetsFileError,
    _reply_logprobs,
    _teacher_logprobs,
    fit_encoded,
    manifest_digest,
    offset_edits,
    reps_logits,
)
from steer_core.model.hooks import active_hook_count
from steer_core.steering.config import SteerConfig
from steer_core.steering.descent import level_probabilities, softmax_descent
from steer_core.steering.edits import RowGroup, make_layer_edit, steer_rows


@pytest.fixture(scope="module")
def lm():
    return tiny_lm()


def scenarios(n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        prompt = torch.randint(1, 97, (6,), generator=g).tolist()
        replies = [
            torch.randint(1, 97, (int(torch.randint(4, 8, (1,), generator=g)),), generator=g).tolist() for _ in LEVELS
        ]
        out.append(EncodedScenario(prompt, replies))
    return out


def margin(lm, offsets: LevelOffsets, banks, scs) -> float:
    """Mean over scenarios and levels of log p(reply L | steer L) - log p(reply L | steer L+1)."""
    lv = torch.arange(len(LEVELS))
    total = 0.0
    for sc in scs:

        def lp(levels, sc=sc):
            edits = offset_edits(offsets, offsets.layers, banks, levels, lm.n_heads, lm.head_dim)
            with torch.no_grad():
                return _reply_logprobs(lm, sc, edits, 1)

        total += float((lp(lv) - lp((lv + 1) % len(LEVELS))).mean())
    return total / len(scs)


def test_fitting_offsets_makes_steering_prefer_the_level(lm):
    banks = {1: tiny_bank(lm, 1), 2: tiny_bank(lm, 2, seed=2)}
    scs = scenarios()
    cfg = OffsetFitConfig(layers=(1, 2), epochs=8, lr=0.05, beta=1.0, l1=0.0, sft=0.0)
    zero = LevelOffsets(torch.zeros(6, 2, lm.n_heads, 48), (1, 2))
    fitted = fit_encoded(lm, scs, cfg, banks, progress=False)
    assert fitted.delta.shape == (6, 2, lm.n_heads, 48)
    assert margin(lm, zero, banks, scs) == pytest.approx(0.0, abs=1e-5)
    assert margin(lm, fitted, banks, scs) > 0.05  # a random tiny model is not very steerable
    assert fitted.meta["loss_last"] < fitted.meta["loss_first"]
    assert active_hook_count() == 0
    assert not any(p.requires_grad for p in lm.model.parameters())


def test_a_bfloat16_fit_moves_the_offsets_as_the_float32_fit_does():
    """A fit in bfloat16 products (model/small_batch.bf16_products): on a model whose Linear products are
    routed (every CPU model the loader gives), the offsets go the same way as float32's and steer as well."""
    from dataclasses import replace

    from steer_core.model.small_batch import speed_up_small_batches

    lm = tiny_lm()
    speed_up_small_batches(lm.model)
    banks = {1: tiny_bank(lm, 1), 2: tiny_bank(lm, 2, seed=2)}
    scs = scenarios()
    cfg = OffsetFitConfig(layers=(1, 2), epochs=8, lr=0.05, beta=1.0, l1=0.0, sft=0.0)
    full = fit_encoded(lm, scs, cfg, banks, progress=False)
    half = fit_encoded(lm, scs, replace(cfg, precision="bfloat16"), banks, progress=False)
    assert not torch.equal(full.delta, half.delta)  # the products were bfloat16's
    assert torch.nn.functional.cosine_similarity(full.delta.flatten(), half.delta.flatten(), dim=0) > 0.9
    assert margin(lm, half, banks, scs) > 0.5 * margin(lm, full, banks, scs) > 0
    with pytest.raises(UserError, match="precision"):
        OffsetFitConfig(precision="float8")


def test_the_scale_sizes_the_saved_offsets_and_nothing_else(lm):
    """prepare saves its shorter-reply fit at 0.75 of its fitted size (strength 1 = the setting chosen on
    validation): the fit itself is the same, the saved offsets are scaled, the config records it."""
    from dataclasses import replace

    banks = {1: tiny_bank(lm, 1)}
    scs = scenarios(2)
    cfg = OffsetFitConfig(layers=(1,), epochs=2, lr=0.05, l1=0.0)
    full = fit_encoded(lm, scs, cfg, banks, progress=False)
    half = fit_encoded(lm, scs, replace(cfg, scale=0.5), banks, progress=False)
    assert full.delta.abs().sum() > 0 and torch.equal(half.delta * 2, full.delta)
    assert half.meta["fit"]["scale"] == 0.5 and half.meta["loss_last"] == full.meta["loss_last"]
    with pytest.raises(UserError, match="scale"):
        OffsetFitConfig(scale=-1.0)


def test_a_prompt_read_once_for_every_pass_gives_the_same_bits(lm):
    """A fit keeps each scenario's unsteered prompt (shared_prompt's memo): its replies' likelihoods, steered or
    not, are bit for bit those of reading the prompt again, and the prompt is read once."""
    banks = {1: tiny_bank(lm, 1)}
    sc = scenarios(1)[0]
    offsets = LevelOffsets(torch.randn(6, 1, lm.n_heads, 48, generator=torch.Generator().manual_seed(1)), (1,))
    levels = torch.arange(len(LEVELS)).repeat(2)
    edits = offset_edits(offsets, (1,), banks, levels, lm.n_heads, lm.head_dim)
    memo = {}
    with torch.no_grad():
        for rows, step_edits in ((1, {}), (2, edits), (2, edits)):
            want = _reply_logprobs(lm, sc, step_edits, rows)
            assert torch.equal(_reply_logprobs(lm, sc, step_edits, rows, memo=memo), want)
    assert list(memo) == [tuple(sc.prompt)]


def test_reps_fit_steers_both_ways_at_the_strength_it_was_fitted_for(lm):
    banks = {1: tiny_bank(lm, 1), 2: tiny_bank(lm, 2, seed=2)}
    scs = scenarios()
    cfg = OffsetFitConfig(layers=(1, 2), epochs=8, lr=0.05, l1=0.0, objective="reps", factors=(1.0,))
    fitted = fit_encoded(lm, scs, cfg, banks, progress=False)
    assert fitted.meta["fit"]["objective"] == "reps" and fitted.meta["loss_last"] < fitted.meta["loss_first"]
    assert margin(lm, fitted, banks, scs) > 0.05  # toward L, L's reply beats the next level's
    against = LevelOffsets(-fitted.delta, fitted.layers)  # against L, the other reply wins (RePS's second term)
    assert margin(lm, against, banks, scs) < -0.05
    assert active_hook_count() == 0 and not any(p.requires_grad for p in lm.model.parameters())
    with pytest.raises(ValueError, match="objective"):
        OffsetFitConfig(objective="dpo")
    with pytest.raises(ValueError, match="factors"):
        OffsetFitConfig(objective="reps", factors=(0.0,))


def with_teachers(scs, seed=5):
    g = torch.Generator().manual_seed(seed)
    for sc in scs:
        sc.teacher_prompts = [
            torch.randint(1, 97, (int(torch.randint(7, 11, (1,), generator=g)),), generator=g).tolist() for _ in LEVELS
        ]
    return scs


def test_teacher_distribution_is_read_where_each_reply_token_is_predicted(lm):
    sc = with_teachers(scenarios(1))[0]
    got = _teacher_logprobs(lm, sc)
    for lv, (tp, reply) in enumerate(zip(sc.teacher_prompts, sc.replies)):
        with torch.no_grad():
            alone = torch.log_softmax(lm.model(input_ids=torch.tensor([tp + reply])).logits[0].float(), -1)
        # position len(tp) + t holds reply token t and predicts token t + 1
        want = alone[len(tp) : len(tp) + len(reply) - 1]
        assert torch.allclose(got[lv, : len(reply) - 1], want, atol=1e-4)


def test_kl_fit_moves_the_steered_plain_prompt_toward_the_teacher(lm):
    from steer_core.fit.offsets import _ScenarioForward

    banks = {1: tiny_bank(lm, 1), 2: tiny_bank(lm, 2, seed=2)}
    scs = with_teachers(scenarios())
    cfg = OffsetFitConfig(layers=(1, 2), epochs=6, lr=0.05, l1=0.0, objective="kl")
    fitted = fit_encoded(lm, scs, cfg, banks, progress=False)

    def kl(delta):
        with torch.no_grad():
            return sum(float(_ScenarioForward(lm, sc, (1, 2), banks).kl_to_teacher(delta).mean()) for sc in scs)

    assert kl(fitted.delta) < 0.97 * kl(torch.zeros_like(fitted.delta))
    assert "kl_per_token_last" in fitted.meta and active_hook_count() == 0
    with pytest.raises(ValueError, match="instruction prompts"):
        fit_encoded(lm, scenarios(1), cfg, banks, progress=False)


def test_reps_logit_is_the_scaled_simpo_form():
    pref, disp = torch.tensor([-20.0, -8.0]), torch.tensor([-12.0, -12.0])
    ref_pref, ref_disp = torch.tensor([-30.0, -10.0]), torch.tensor([-10.0, -20.0])
    n_pref, n_disp = torch.tensor([10.0, 4.0]), torch.tensor([6.0, 6.0])
    got = reps_logits(pref, disp, ref_pref, ref_disp, n_pref, n_disp, scaler=0.5)
    # row 0: the unsteered model finds the preferred reply 20 nats less likely: weight 0.5 * 20 = 10;
    # row 1: it already prefers it, so the weight is the floor, 1
    want = torch.tensor([10 * -20.0 / 10 + 12.0 / 6, 1 * -8.0 / 4 + 12.0 / 6])
    assert torch.allclose(got, want)


def test_l1_moves_few_latents(lm):
    banks = {1: tiny_bank(lm, 1)}
    scs = scenarios(2)
    dense = fit_encoded(lm, scs, OffsetFitConfig(layers=(1,), epochs=2, lr=0.05, l1=0.0), banks, progress=False)
    sparse = fit_encoded(lm, scs, OffsetFitConfig(layers=(1,), epochs=2, lr=0.05, l1=0.9), banks, progress=False)
    assert sparse.sparsity()["nonzero_fraction"] < 0.5 * dense.sparsity()["nonzero_fraction"]


def test_learned_target_adds_the_decoded_offset(lm):
    bank = tiny_bank(lm, 1)
    delta = torch.randn(6, lm.n_heads, 48)
    x = torch.randn(2, 5, lm.n_heads, lm.head_dim)
    levels = torch.tensor([0, 5])
    cfg = SteerConfig(layers=(1,), target="learned", strength=SteerConfig.strength_for("learned", 2.0))
    out = steer_rows(bank, x, levels, None, cfg, delta)
    want = x + 2.0 * torch.einsum("rhk,hkd->rhd", delta[levels], bank.sae.W_dec)[:, None]
    assert torch.allclose(out, want, atol=1e-5)
    heads = torch.tensor([1, 3])  # a head subset steers only those heads, with their own offsets
    sub = steer_rows(bank, x[:, :, heads], levels, heads, cfg, delta)
    assert torch.allclose(sub, want[:, :, heads], atol=1e-5)
    with pytest.raises(ValueError, match="learned offsets"):
        steer_rows(bank, x, levels, None, cfg, None)
    # through the layer edit: only the generated phase is steered by default
    group = RowGroup(torch.tensor([0, 1]), levels, cfg, bank, None, delta)
    assert make_layer_edit([group], "prompt", lm.n_heads, lm.head_dim) is None
    edit = make_layer_edit([group], "generated", lm.n_heads, lm.head_dim)
    q = x.reshape(2, 5, -1)
    assert torch.allclose(edit(q), want.reshape(2, 5, -1), atol=1e-5)


def test_offsets_round_trip_and_refuse_corrupt_or_foreign_files(tmp_path, lm):
    bank = tiny_bank(lm, 1)
    bank.meta = {"files": {"head_0/sae_weights.safetensors": "1", "prototypes.safetensors": "x"}}
    off = LevelOffsets(torch.randn(6, 1, lm.n_heads, 48), (1,), {"sae_manifests": {"1": manifest_digest(bank.meta)}})
    off.save(tmp_path / "o")
    back = LevelOffsets.load(tmp_path / "o")
    assert torch.equal(back.delta, off.delta) and back.layers == (1,)
    back.check_matches({1: bank})
    fold = tiny_bank(lm, 1)  # other prototypes, same SAE weights (a cross-writer fold): still valid
    fold.meta = {"files": {"head_0/sae_weights.safetensors": "1", "prototypes.safetensors": "y"}}
    back.check_matches({1: fold})
    other = tiny_bank(lm, 1)
    other.meta = {"files": {"head_0/sae_weights.safetensors": "2", "prototypes.safetensors": "x"}}
    with pytest.raises(OffsetsFileError, match="other SAEs"):
        back.check_matches({1: other})
    with pytest.raises(OffsetsFileError, match="no learned offsets for layer 2"):
        back.for_layer(2)
    blob = bytearray((tmp_path / "o" / "offsets.safetensors").read_bytes())
    blob[-3] ^= 0xFF
    (tmp_path / "o" / "offsets.safetensors").write_bytes(bytes(blob))
    with pytest.raises(OffsetsFileError, match="corrupt"):
        LevelOffsets.load(tmp_path / "o")
    (tmp_path / "o" / "offsets.json").write_text("{not json")
    with pytest.raises(OffsetsFileError, match="unreadable"):
        LevelOffsets.load(tmp_path / "o")
    with pytest.raises(OffsetsFileError, match="no learned offsets here"):
        LevelOffsets.load(tmp_path / "missing")


def test_softmax_descent_follows_its_objective():
    g = torch.Generator().manual_seed(0)
    protos = torch.rand(6, 3, 16, generator=g)
    z0 = torch.rand(4, 5, 3, 16, generator=g)
    target = torch.tensor([0, 2, 4, 5])[:, None].expand(4, 5)
    # one step equals autograd on the scaled loss tau/2 * -log softmax(-d^2/tau)[target]
    from steer_core.steering.descent import prototype_scale

    _, tau = prototype_scale(protos)
    z = z0.clone().requires_grad_(True)
    d2 = ((z.unsqueeze(-2) - protos.permute(1, 0, 2)) ** 2).sum(-1)  # (4, 5, 3, 6)
    nll = -torch.log_softmax(-d2 / tau[:, None], -1).gather(-1, target[..., None, None].expand(4, 5, 3, 1))
    (nll.squeeze(-1) * tau / 2).sum().backward()
    one = softmax_descent(z0, protos, target, steps=1, lr=0.1, nonneg=False)
    assert torch.allclose(one, z0 - 0.1 * z.grad, atol=1e-5)

    # more steps raise the target level's probability under the prototypes
    def target_prob(codes):
        dist = torch.linalg.vector_norm(codes.unsqueeze(-2) - protos.permute(1, 0, 2), dim=-1)  # (4, 5, 3, 6)
        probs = level_probabilities(dist, tau[:, None])
        return probs.gather(-1, target[..., None, None].expand(4, 5, 3, 1))

    before = target_prob(z0)
    after_z = softmax_descent(z0, protos, target, steps=30, lr=0.5)
    after = target_prob(after_z)
    assert bool((after > before).float().mean() > 0.9) and bool((after_z >= 0).all())


def test_bootstrap_intervals():
    import numpy as np

    rng = np.random.default_rng(0)
    sids = [f"s{i}" for i in range(30) for _ in range(6)]
    targets = [t for _ in range(30) for t in range(6)]
    preds = [t if rng.random() < 0.5 else int(rng.integers(0, 6)) for t in targets]
    b = bootstrap_over_scenarios(sids, targets, preds)
    assert b["accuracy_lo"] < b["accuracy"] < b["accuracy_hi"]
    assert b["level_corr_lo"] < b["level_corr"] < b["level_corr_hi"]
    assert b["accuracy"] == pytest.approx(np.mean(np.array(targets) == np.array(preds)))
    assert b["n_scenarios"] == 30
    assert 0.05 < b["accuracy_hi"] - b["accuracy_lo"] < 0.3
    wide = bootstrap_over_scenarios(sids[:36], targets[:36], preds[:36])  # 6 scenarios: wider interval
    assert wide["accuracy_hi"] - wide["accuracy_lo"] > b["accuracy_hi"] - b["accuracy_lo"]
    perfect = bootstrap_over_scenarios(sids, targets, targets)
    assert perfect["accuracy_lo"] == perfect["accuracy_hi"] == 1.0 and perfect["level_corr"] == pytest.approx(1.0)
    assert bootstrap_over_scenarios(sids, targets, preds) == b  # seeded: reproducible


def test_steering_the_prompt_while_fitting_reads_the_same_likelihoods_unsteered(lm):
    """The per-row full forward (prompt steered too) and the shared-prompt cache agree when nothing
    steers, and differ once the offsets reach the prompt's queries."""
    banks = {1: tiny_bank(lm, 1)}
    sc = scenarios(1, seed=3)[0]
    with torch.no_grad():
        shared = _reply_logprobs(lm, sc, {}, 2)
        full = _reply_logprobs(lm, sc, {}, 2, steer_prompt=True)
        assert torch.allclose(shared, full, atol=1e-4)
        delta = torch.randn(6, 1, lm.n_heads, 48, generator=torch.Generator().manual_seed(0))
        edits = offset_edits(delta, (1,), banks, torch.arange(6), lm.n_heads, lm.head_dim, scale=3.0)
        reply_only = _reply_logprobs(lm, sc, edits, 1)
        with_prompt = _reply_logprobs(lm, sc, edits, 1, steer_prompt=True)
    assert not torch.allclose(reply_only, with_prompt, atol=1e-3)
    assert active_hook_count() == 0


def test_fitting_with_the_prompt_steered_makes_steering_prefer_the_level(lm):
    banks = {1: tiny_bank(lm, 1), 2: tiny_bank(lm, 2, seed=2)}
    scs = scenarios()
    cfg = OffsetFitConfig(layers=(1, 2), epochs=8, lr=0.05, beta=1.0, l1=0.0, sft=0.0, positions="all")
    fitted = fit_encoded(lm, scs, cfg, banks, progress=False)
    assert fitted.meta["fit"]["positions"] == "all"
    assert fitted.meta["loss_last"] < fitted.meta["loss_first"]
    lv = torch.arange(len(LEVELS))

    def lp(levels, sc):
        edits = offset_edits(fitted, fitted.layers, banks, levels, lm.n_heads, lm.head_dim)
        with torch.no_grad():
            return _reply_logprobs(lm, sc, edits, 1, steer_prompt=True)

    assert sum(float((lp(lv, sc) - lp((lv + 1) % 6, sc)).mean()) for sc in scs) / len(scs) > 0.05
    with pytest.raises(Exception, match="positions"):
        OffsetFitConfig(positions="prompt")


def test_per_token_sae_offsets_read_each_heads_coefficient_from_its_query(lm, tmp_path):
    """A zero gate is the constant offsets' edit, token for token; a fitted gate lowers the KL below the constant
    offsets it starts from, and saves and loads with them."""
    from steer_core.fit.offsets import _ScenarioForward
    from steer_core.steering.edits import token_coefficients

    banks = {1: tiny_bank(lm, 1), 2: tiny_bank(lm, 2, seed=2)}
    scs = with_teachers(scenarios())
    base = OffsetFitConfig(layers=(1, 2), epochs=3, lr=0.05, l1=0.0, objective="kl")
    constant = fit_encoded(lm, scs, base, banks, progress=False)
    constant.save(tmp_path / "constant")
    gated = OffsetFitConfig(**{**base.__dict__, "per_token": True, "init": str(tmp_path / "constant")})
    fitted = fit_encoded(lm, scs, gated, banks, progress=False)
    assert fitted.gate.shape == (6, 2, lm.n_heads, lm.head_dim + 1)

    def kl(delta, gate):
        with torch.no_grad():
            return sum(
                float(_ScenarioForward(lm, sc, (1, 2), banks, gate=gate).kl_to_teacher(delta).mean()) for sc in scs
            )

    zero = torch.zeros_like(fitted.gate)
    assert kl(constant.delta, zero) == pytest.approx(kl(constant.delta, None), rel=1e-5)
    assert kl(fitted.delta, fitted.gate) < kl(constant.delta, None)
    fitted.save(tmp_path / "gated")
    assert torch.equal(LevelOffsets.load(tmp_path / "gated").gate, fitted.gate)
    # the edit: the constant shift of each head, times that head's coefficient from its own query
    q = torch.randn(2, 3, lm.n_heads * lm.head_dim)
    levels = torch.tensor([1, 4])
    cfg = SteerConfig(method="sae", layers=(1,), strength=1.0)
    g = RowGroup(torch.arange(2), levels, cfg, banks[1], None, fitted.delta[:, 0], fitted.gate[:, 0])
    plain = make_layer_edit(
        [RowGroup(torch.arange(2), levels, cfg, banks[1], None, fitted.delta[:, 0])],
        "generated",
        lm.n_heads,
        lm.head_dim,
    )
    got = make_layer_edit([g], "generated", lm.n_heads, lm.head_dim)(q).view(2, 3, lm.n_heads, lm.head_dim)
    shift = plain(q).view(2, 3, lm.n_heads, lm.head_dim) - q.view(2, 3, lm.n_heads, lm.head_dim)
    x = q.view(2, 3, lm.n_heads, lm.head_dim)
    want = x + shift * token_coefficients(x, fitted.gate[levels, 0])[..., None]
    assert torch.allclose(got, want, atol=1e-5)
    assert active_hook_count() == 0


def test_per_token_sae_offsets_steer_generation_through_their_gate(steerable_lm, tmp_path):
    from steer_core.generation import Request, generate_batch
    from steer_core.sae.store import STORE
    from steer_core.steering.files import SteerFiles

    lm = steerable_lm
    bank = STORE.get(lm, 1)
    delta = 4.0 * torch.rand(6, 1, lm.n_heads, bank.sae.d_sae)
    shut, neutral = torch.zeros(6, 1, lm.n_heads, lm.head_dim + 1), torch.zeros(6, 1, lm.n_heads, lm.head_dim + 1)
    shut[..., -1] = -40.0  # every coefficient ~ 0: the offsets are read but not added
    LevelOffsets(delta, (1,), {"site": "sae"}).save(tmp_path / "constant")
    for name, gate in (("shut", shut), ("neutral", neutral)):
        LevelOffsets(delta, (1,), {"site": "sae", "form": "per_token"}, gate).save(tmp_path / name)
    q, a = "What is 2 + 2?", "5"
    plain = generate_batch(lm, [Request(q, a, "none", "create")], max_new_tokens=10, ignore_stop=True)[0].token_ids

    def run(folder, strength=1.0):
        cfg = SteerConfig(method="sae", layers=(1,), target="learned", strength=strength)
        req = Request(q, a, "sae", "create", steer=cfg, files=SteerFiles(offsets=str(tmp_path / folder)))
        return generate_batch(lm, [req], max_new_tokens=10, ignore_stop=True)[0].token_ids

    assert run("constant") != plain
    assert run("neutral") == run("constant") and run("shut") == plain and run("neutral", 0.0) == plain
    assert active_hook_count() == 0
