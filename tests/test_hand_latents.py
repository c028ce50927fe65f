"""Steering by hand with chosen latents (target "latents"): the written form, the edit it makes (each latent's
decoder row at its own strength, on its own head only), strength 0 off token for token, and the refusals."""

import pytest
import torch
from tiny import tiny_bank

from steer_core.errors import UserError
from steer_core.layer_spec import latents_text, parse_latents
from steer_core.steering.config import SteerConfig
from steer_core.steering.edits import steer_rows


def test_the_written_form_reads_and_writes_back():
    got = parse_latents("18.6:123:+4, 20.1:55:-2; 18.6:123:1")
    assert got == ((18, 6, 123, 5.0), (20, 1, 55, -2.0))  # a latent named twice adds its strengths
    assert parse_latents(latents_text(got)) == got
    assert parse_latents("") is None and parse_latents(None) is None
    assert parse_latents([[3, 1, 7, 2]]) == ((3, 1, 7, 2.0),)


@pytest.mark.parametrize(
    "bad,says",
    [
        ("18:1:2", "18:1:2"),
        ("18.6:x:2", "18.6:x:2"),
        ("18.6:1", "18.6:1"),
        ("18.6:1:100", "strength"),
        ("18.6:1:nan", "strength"),
        ("-1.6:1:2", "-1.6:1:2"),
    ],
)
def test_malformed_latents_are_refused_naming_the_value(bad, says):
    with pytest.raises(UserError, match=says):
        parse_latents(bad)


def test_the_hand_target_needs_latents_and_takes_their_layers_and_heads():
    with pytest.raises(UserError, match="latents you name"):
        SteerConfig(target="latents")
    cfg = SteerConfig(target="latents", latents=parse_latents("2.1:5:+3, 0.3:7:-1, 2.2:5:1"))
    assert cfg.layers == (0, 2) and cfg.layer_heads == ((0, 3), (2, 1), (2, 2)) and cfg.heads is None
    assert cfg.label == "hand 0.3:7:-1, 2.1:5:+3, 2.2:5:+1 pos generated"


def test_the_edit_adds_each_latents_decoder_row_on_its_own_head(lm_and_bank):
    lm, bank = lm_and_bank
    x = torch.randn(2, 3, lm.n_heads, lm.head_dim)
    cfg = SteerConfig(target="latents", latents=((1, 2, 5, 3.0), (1, 2, 9, -1.5), (1, 0, 4, 2.0)), strength=2.0)
    got = steer_rows(bank, x, torch.tensor([0, 3]), None, cfg)
    W_dec = bank.sae.weights(None)[2]  # (heads, K, head_dim)
    want = x.clone()
    want[:, :, 2] += 2.0 * (3.0 * W_dec[2, 5] - 1.5 * W_dec[2, 9])
    want[:, :, 0] += 2.0 * 2.0 * W_dec[0, 4]
    torch.testing.assert_close(got, want)
    off = SteerConfig(target="latents", latents=cfg.latents, strength=0.0)
    assert torch.equal(steer_rows(bank, x, torch.tensor([0, 3]), None, off), x)


def test_a_latent_past_the_saes_width_is_refused_naming_it(lm_and_bank):
    lm, bank = lm_and_bank
    cfg = SteerConfig(target="latents", latents=((1, 2, 48, 1.0),))
    with pytest.raises(UserError, match=r"latent 1\.2:48 does not exist.*48 latents"):
        steer_rows(bank, torch.randn(1, 2, lm.n_heads, lm.head_dim), torch.tensor([0]), None, cfg)


def test_generation_with_latents_moves_the_reply_and_strength_0_is_the_unsteered_one(steerable_lm):
    from steer_core.generation import Request, generate_batch

    def reply(method, steer=None):
        return generate_batch(steerable_lm, [Request("q?", "a.", method, "create", steer=steer)], max_new_tokens=12)[0]

    latents = parse_latents("1.0:3:+40, 1.1:7:+40, 0.2:1:-40")
    none = reply("none")
    on = reply("latents", SteerConfig(target="latents", latents=latents, positions="all").for_method("latents"))
    off = reply("latents", SteerConfig(target="latents", latents=latents, strength=0.0).for_method("latents"))
    assert off.token_ids == none.token_ids  # strength 0 is off, token for token
    assert on.token_ids != none.token_ids
    with pytest.raises(ValueError, match="head"):
        reply("latents", SteerConfig(target="latents", latents=((1, 99, 3, 1.0),)).for_method("latents"))


@pytest.fixture(scope="module")
def lm_and_bank():
    from tiny import tiny_lm

    lm = tiny_lm()
    return lm, tiny_bank(lm, 1)
