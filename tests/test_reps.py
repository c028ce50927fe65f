"""RePS as its authors fit it, on a tiny random Llama: the null intervention, per-example factors, the
pairing of concept and own replies, the loss, and fits at the residual and the SAE site that move the
preference they are fitted for."""

import random

import pytest
import torch
from tiny import tiny_bank, tiny_lm

from steer_core.bloom import LEVELS
from steer_core.errors import UserError
from steer_core.fit.reps import (
    PairGroup,
    RepsConfig,
    _logps,
    draw_factors,
    encode_pairs,
    fit_reps,
    null_coefficient,
    residual_edit,
    sae_edit,
    scaled_simpo,
)
from steer_core.model.hooks import RESIDUAL, active_hook_count, query_edits


@pytest.fixture(scope="module")
def lm():
    return tiny_lm()


def test_the_null_intervention_removes_the_positive_projection_only():
    torch.manual_seed(0)
    h, v, b = torch.randn(4, 7, 16), torch.randn(4, 16), torch.randn(4)
    after = h - null_coefficient(h, v[:, None], b[:, None])[..., None] * v[:, None]
    proj_before, proj_after = (h * v[:, None]).sum(-1) + b[:, None], (after * v[:, None]).sum(-1) + b[:, None]
    pos = proj_before > 0
    assert torch.allclose(proj_after[pos], torch.zeros_like(proj_after[pos]), atol=1e-4)  # projected out
    assert torch.equal(after[~pos], h[~pos])  # where the concept is absent, nothing changes


def test_the_residual_edit_adds_the_factor_toward_and_nulls_away():
    torch.manual_seed(1)
    v, b = torch.randn(3, 8), torch.tensor([0.5, -0.2, 0.1])
    plus = torch.tensor([True, False, True])
    factor = torch.tensor([4.0, 0.0, 8.0])
    h = torch.randn(3, 5, 8)
    out = residual_edit(v, b, plus, factor)(h)
    assert torch.allclose(out[0], h[0] + 4.5 * v[0]) and torch.allclose(out[2], h[2] + 8.1 * v[2])
    coef = null_coefficient(h[1], v[1], b[1])
    assert torch.allclose(out[1], h[1] - coef[:, None] * v[1])


def test_factors_are_drawn_per_example_and_null_rows_get_none():
    plus = torch.tensor([True, True, False, False] * 50)
    f = draw_factors(random.Random(0), plus, (4.0, 8.0, 16.0))
    assert set(f[plus].tolist()) == {4.0, 8.0, 16.0}  # per row, not one factor per step
    assert torch.equal(f[~plus], torch.zeros(100))
    assert len(set(f[::4].tolist())) > 1 and not torch.equal(f[0::4], f[1::4])  # winner and loser drawn apart


def test_pairs_put_every_levels_concept_reply_against_the_own_reply():
    from tiny import char_tokenizer

    tok = char_tokenizer()
    q, a = "What is 2+2?", "5"
    teacher = [
        {"scenario_id": "A01", "sample": s, "level": lv, "question": q, "student_answer": a, "feedback": f"{lv} {s}"}
        for s in (0, 1)
        for lv in LEVELS
    ]
    teacher += [
        {"scenario_id": "A02", "sample": 0, "level": "remember", "question": q, "student_answer": a, "feedback": "x"}
    ]
    own = [{"scenario_id": "A01", "sample": s, "feedback": f"mine {s}"} for s in (0, 1)]
    groups = encode_pairs(tok, teacher, own, "plain", 40)
    assert len(groups) == 2  # A02 lacks levels and an own reply: left out
    g = groups[1]
    assert tok.decode(g.own, skip_special_tokens=True) == "mine 1"
    assert [tok.decode(c, skip_special_tokens=True) for c in g.concept] == [f"{lv} 1" for lv in LEVELS]
    assert tok.decode(groups[0].concept[0], skip_special_tokens=True) == "remember 0"


def test_scaled_simpo_weights_an_unlikely_winner_up():
    win, lose = torch.tensor([-10.0]), torch.tensor([-8.0])
    base = scaled_simpo(win, lose, torch.tensor([-10.0]), torch.tensor([-9.5]), 10.0, 10.0, 1.0)  # weight 1
    assert torch.allclose(base, -torch.nn.functional.logsigmoid(torch.tensor([-1.0 + 0.8])))
    pushed = scaled_simpo(win, lose, torch.tensor([-12.0]), torch.tensor([-9.0]), 10.0, 10.0, 1.0)  # weight 3
    assert torch.allclose(pushed, -torch.nn.functional.logsigmoid(torch.tensor([-3.0 + 0.8])))


def _groups(n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    rand = lambda k: torch.randint(1, 97, (k,), generator=g).tolist()  # noqa: E731
    return [
        PairGroup(rand(6), [rand(int(torch.randint(4, 8, (1,), generator=g))) for _ in LEVELS], rand(6))
        for _ in range(n)
    ]


def _toward_margin(lm, vecs, groups, site, banks=None):
    """Mean over groups and levels of [log p(concept | +8 v_L) - log p(own | +8 v_L)] per token."""
    total = 0.0
    for gr in groups:
        for L in range(len(LEVELS)):
            lv = torch.tensor([L, L])
            plus, factor = torch.tensor([True, True]), torch.tensor([8.0, 8.0])
            b = torch.zeros(2)
            v = vecs.delta[lv, 0]
            layer = vecs.layers[0]
            edit = (
                residual_edit(v[:, 0], b, plus, factor)
                if site == "residual"
                else sae_edit(banks[layer], v, b, plus, factor, lm.n_heads, lm.head_dim)
            )
            key = (RESIDUAL, layer) if site == "residual" else layer
            with torch.no_grad():
                lp = _logps(lm, gr.prompt, [gr.concept[L], gr.own], {key: edit}, False, 0)
            total += float(lp[0] / len(gr.concept[L]) - lp[1] / len(gr.own))
    return total / (len(groups) * len(LEVELS))


@pytest.mark.parametrize("site", ["residual", "sae"])
@pytest.mark.parametrize("positions", ["generated", "all"])
def test_a_reps_fit_moves_the_preference_it_is_fitted_for(lm, site, positions):
    banks = {1: tiny_bank(lm, 1)} if site == "sae" else None
    groups = _groups()
    cfg = RepsConfig(layers=(1,), site=site, epochs=10, lr=0.05, factors=(4.0, 8.0), positions=positions)
    start = fit_reps(lm, groups, RepsConfig(layers=(1,), site=site, epochs=1, lr=0.0, factors=(8.0,)), banks, False)
    fitted = fit_reps(lm, groups, cfg, banks, progress=False)
    assert fitted.delta.shape == ((6, 1, 1, 48) if site == "residual" else (6, 1, lm.n_heads, 48))
    assert fitted.meta["objective"] == "reps_ref" and len(fitted.meta["factor_bias"]) == 6
    assert _toward_margin(lm, fitted, groups, site, banks) > _toward_margin(lm, start, groups, site, banks) + 0.03
    assert active_hook_count() == 0


def test_bad_settings_and_missing_pairs_are_refused(lm):
    with pytest.raises(UserError, match="positions"):
        RepsConfig(positions="prompt")
    with pytest.raises(UserError, match="factors"):
        RepsConfig(factors=(0.0,))
    with pytest.raises(UserError, match="needs pairs"):
        fit_reps(lm, [], RepsConfig(layers=(1,)))
    with pytest.raises(UserError, match="SAEs"):
        fit_reps(lm, _groups(1), RepsConfig(layers=(1,), site="sae"))
    assert query_edits  # the hook machinery is the generation's own
