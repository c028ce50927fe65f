"""Latent cards on a tiny model: built from its SAEs and a few dataset rows, checked against a brute-force
computation (every token encoded at once: firing share, top contexts, level means); resumable; opened as a page
opens them (contexts with the token, refusals that name the value); searched by level and by word."""

import pytest
import torch

from steer_core.bloom import LEVELS, load_dataset, writer_of
from steer_core.errors import UserError


@pytest.fixture(scope="module")
def built(steerable_lm, tmp_path_factory):
    from steer_core.fit.cards import build_cards
    from steer_core.inspect.cards import CARDS

    rows = load_dataset(split="train")
    first = sorted({r.scenario_id for r in rows})[:2]
    rows = [r for r in rows if r.scenario_id in first] + [r for r in rows if writer_of(r.scenario_id) == "D"][:6]
    out = build_cards(steerable_lm, list(range(steerable_lm.n_layers)), rows=rows, progress=False)
    yield steerable_lm, rows, out
    CARDS.forget()


def brute_force(lm, rows, layer):
    """Every recorded token's code at once, with its table index, level and whether it is feedback."""
    from steer_core.fit.cards import token_table
    from steer_core.fit.sae_training import capture_train_queries
    from steer_core.sae.store import STORE

    captured = capture_train_queries(lm, [layer], progress=False, rows=rows)
    _, starts, _ = token_table(lm, rows, captured.style)
    z = STORE.get(lm, layer).sae.encode(captured.queries[layer].float())  # (N, H, K)
    where = starts[captured.example_ids] + captured.positions
    return z, where, captured.example_levels[captured.example_ids], captured.is_feedback


def test_cards_equal_a_brute_force_computation(built):
    from steer_core.inspect.cards import CARDS

    lm, rows, _ = built
    cards = CARDS.of(lm)
    for layer in range(lm.n_layers):
        z, where, levels, fb = brute_force(lm, rows, layer)
        lc = cards.layer(layer)
        torch.testing.assert_close(lc.freq, (z > 0).float().mean(0))
        top_v, top_i = z.topk(6, dim=0)  # (C, H, K)
        torch.testing.assert_close(lc.top_act, top_v.permute(1, 2, 0).clamp_min(0), atol=2e-3, rtol=2e-3)
        fired = top_v.permute(1, 2, 0) > 1e-3
        # where it fired: the same tokens (ties aside: compare the activations there, read from the brute force)
        at = {int(w): i for i, w in enumerate(where)}
        H, K = lc.freq.shape
        for h in range(H):
            for k in range(K):
                got = [float(z[at[int(t)], h, k]) for t, f in zip(lc.top_token[h, k], fired[h, k]) if f]
                want = [float(v) for v, f in zip(top_v[:, h, k], fired[h, k]) if f]
                assert got == pytest.approx(want, abs=1e-4)
        for li in range(len(LEVELS)):
            mask = fb & (levels == li)
            want = z[mask].mean(0) if mask.any() else torch.zeros_like(lc.freq)
            torch.testing.assert_close(lc.level_mean[..., li], want, atol=2e-3, rtol=2e-3)


def test_the_attention_shift_is_each_heads_own_computation(built):
    """Every head's latents pushed at once (one batch) give what pushing one head's latents at a time gives: each
    head against its own key/value head (the tiny model shares a key head between two query heads)."""
    from steer_core.fit.cards import attention_shift, reference_rows, references
    from steer_core.inspect.cards import PARTS, push_of
    from steer_core.model.families import attention_weights, rotate
    from steer_core.sae.store import STORE

    lm, rows, _ = built
    layer, H, D = 1, lm.n_heads, lm.head_dim
    refs = references(lm, reference_rows(rows), [layer], "plain")
    sae = STORE.get(lm, layer).sae
    push = push_of(torch.rand(H, sae.d_sae, generator=torch.Generator().manual_seed(0)) + 0.5)
    got = attention_shift(lm, layer, sae, refs, push)
    W_dec = sae.W_dec.float()
    want = torch.zeros(H, sae.d_sae, len(PARTS))
    for ref in refs:
        q = ref.queries[layer].float().view(-1, H, D)
        R, P = q.shape[0], ref.prompt_len
        positions = torch.arange(P, P + R)[None]
        keys = ref.cache.layers[layer].keys
        group = H // keys.shape[1]
        masks = torch.zeros(len(PARTS), P + R)
        for i, (a, b) in enumerate(ref.spans):
            masks[i, a:b] = 1
        masks[2, :P] = 1 - masks[:2, :P].sum(0).clamp_max(1)
        masks[3, P:] = 1
        for h in range(H):
            k = keys[:, h // group : h // group + 1]
            base = q[:, h][None, None]
            pushed = base + (push[h][:, None, None] * W_dec[h][:, None, :])[:, None]
            w0 = attention_weights(lm.model, layer, rotate(lm.model, layer, base, positions), k, P)
            w = attention_weights(lm.model, layer, rotate(lm.model, layer, pushed, positions), k, P)
            want[h] += ((w - w0)[:, 0].mean(1) @ masks.T) / len(refs)
    assert got.shape == want.shape and want.abs().max() > 0
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def test_a_second_build_keeps_what_was_built(built):
    import time

    from steer_core.fit.cards import build_cards

    lm, rows, out = built
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("layer_*.safetensors")}
    time.sleep(0.01)
    build_cards(lm, list(range(lm.n_layers)), rows=rows, progress=False)
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("layer_*.safetensors")} == before


def test_queries_already_captured_give_the_same_cards(built, tmp_path, monkeypatch):
    """prepare hands the cards its SAEs' captured queries: the layers they hold are not captured again, and the
    files are the same bytes as a build that captures its own."""
    from steer_core.fit import cards as fit_cards
    from steer_core.fit.sae_training import capture_train_queries

    lm, rows, out = built
    given = capture_train_queries(lm, [0, 1], progress=False, rows=rows)
    calls = []
    real = fit_cards.capture_train_queries

    def counting(lm_, layers, *a, **k):
        calls.append(list(layers))
        return real(lm_, layers, *a, **k)

    monkeypatch.setattr(fit_cards, "capture_train_queries", counting)
    fit_cards.build_cards(lm, list(range(lm.n_layers)), tmp_path, rows=rows, progress=False, captured=given)
    assert lm.n_layers > 2 and calls == [[layer for layer in range(lm.n_layers) if layer not in (0, 1)]]
    for layer in range(lm.n_layers):
        name = f"layer_{layer}.safetensors"
        assert (tmp_path / name).read_bytes() == (out / name).read_bytes(), name


def test_a_card_opens_with_its_contexts_and_bad_values_are_refused(built):
    from steer_core.views.latents import card_figure, card_html, open_card

    lm = built[0]
    card = open_card(lm, 1, 2, 5)
    assert card.name == "1.2:5" and len(card.level_mean) == 6 and len(card.prototype) == 6
    assert card.contexts and all(c.token for c in card.contexts)
    assert card.contexts[0].activation == pytest.approx(card.top_activation, abs=1e-2)
    assert set(card.attention) == {"question", "student answer", "rest of the prompt", "reply so far"}
    assert "<mark>" in card_html(card) and len(card_figure(card).data) >= 3
    for bad, says in (((9, 0, 0), "layer"), ((1, 7, 0), "head"), ((1, 0, 48), "latent 48"), ((1, "x", 0), "head")):
        with pytest.raises((UserError, ValueError), match=says):
            open_card(lm, *bad)


def test_search_by_level_and_by_word(built):
    from steer_core.views.latents import open_card, parse_name, search

    lm = built[0]
    by_level = search(lm, level="create")
    assert by_level and all("create" in r["why"] for r in by_level)
    scores = [r["score"] for r in by_level]
    assert scores == sorted(scores, reverse=True)
    card = open_card(lm, *parse_name(by_level[0]["latent"]))
    li = LEVELS.index("create")
    others = (sum(card.level_mean) - card.level_mean[li]) / 5
    assert card.level_mean[li] - others == pytest.approx(by_level[0]["score"], abs=2e-3)
    hits = search(lm, word="q")
    assert hits
    for r in hits[:3]:  # each fires on a token with the word among its top contexts, at the score it is ranked by
        found = open_card(lm, *parse_name(r["latent"]))
        score = pytest.approx(r["score"], abs=1e-2)
        assert any("q" in c.token.lower() and c.activation == score for c in found.contexts)
    with pytest.raises(UserError, match="a level, a word"):
        search(lm)


def test_the_shipped_cards_were_built_from_the_shipped_saes():
    """Every layer's cards name the SAE files they were built from: those that ship (a retrained SAE without new
    cards would show another SAE's latents). And they stay small enough for a Space."""
    import json

    from steer_core.inspect.cards import ASSET_CARDS
    from steer_core.paths import ASSET_SAES, DEFAULT_FOLDER
    from steer_core.steering.offset_files import manifest_digest

    folder = ASSET_CARDS / DEFAULT_FOLDER
    meta = json.loads((folder / "cards.json").read_text())
    saes = {p.parent.name: json.loads(p.read_text()) for p in (ASSET_SAES / DEFAULT_FOLDER).glob("layer_*/layer.json")}
    assert len(saes) == 30 and set(meta["layers"]) == {str(i) for i in range(30)}
    for layer, digest in meta["layers"].items():
        assert manifest_digest(saes[f"layer_{layer}"]) == digest, layer
        assert (folder / f"layer_{layer}.safetensors").is_file()
    assert sum(p.stat().st_size for p in folder.iterdir()) < 12e6
    assert meta["effects"]["unsteered"]["texts"] and len(meta["references"]) == 3
