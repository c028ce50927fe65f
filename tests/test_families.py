"""Every supported decoder family, on a tiny random model built in code from its transformers config: the
query site is found, an edit of one head changes that head's attention output and no other's, the attention
view recomputes the model's own attention (rotary, scaling, soft-capping, sliding windows), and `prepare`
builds one layer that then steers (strength 0 token-identical) and that the latent and attention views read.
OLMo 2 runs without a chat template (a base model's plain prompt)."""

import pytest
import torch
from tiny import FAMILY_CONFIGS, char_tokenizer, tiny_family_lm

from steer_core.errors import ModelLoadError
from steer_core.fit.offsets import OffsetFitConfig
from steer_core.fit.prepare import PrepareConfig, prepare
from steer_core.generation import Request, generate_batch
from steer_core.inspect.attention import attention_view
from steer_core.inspect.latents import latent_view
from steer_core.inspect.replay import replay_at, replay_pair
from steer_core.model import families
from steer_core.model.hooks import active_hook_count, capture_queries, query_edits
from steer_core.prompts import FEEDBACK_CUE, render
from steer_core.sae.module import SAETrainConfig
from steer_core.steering.assets import steering_groups
from steer_core.steering.config import SteerConfig
from steer_core.steering.edits import layer_edits
from steer_core.steering.files import SteerFiles

FAMILIES = list(FAMILY_CONFIGS)
NO_TEMPLATE = "olmo2"
Q, A = "What is 2 + 2?", "5, because 2 and 2 make 5."
LAYER = 1


def tokenizer_for(family: str):
    return char_tokenizer(chat=family != NO_TEMPLATE)


def prompt_ids(lm) -> torch.Tensor:
    ids, _ = render(lm.tokenizer, Request(Q, A).messages())
    return torch.tensor([ids])


def attention_outputs(lm, ids, edits=None) -> torch.Tensor:
    """Layer LAYER's attention output before o_proj, (seq, heads, dim), with `edits` installed."""
    seen = {}
    o_proj = families.decoder_layers(lm.model)[LAYER].self_attn.o_proj
    handle = o_proj.register_forward_pre_hook(lambda m, args: seen.setdefault("x", args[0].detach()))
    try:
        with query_edits(lm, edits or {}):
            lm.model(input_ids=ids)
    finally:
        handle.remove()
    return seen["x"][0].view(ids.shape[1], lm.n_heads, lm.head_dim)


@pytest.mark.parametrize("family", FAMILIES)
def test_the_family_is_found_and_its_query_read_per_head(family):
    lm = tiny_family_lm(family, tokenizer=tokenizer_for(family))
    assert lm.family.name == family
    ids = prompt_ids(lm)
    with capture_queries(lm, [LAYER]) as store:
        lm.model(input_ids=ids)
    (q,) = store[LAYER]
    assert q.shape == (1, ids.shape[1], lm.n_heads, lm.head_dim)
    assert active_hook_count() == 0


@pytest.mark.parametrize("family", FAMILIES)
def test_an_edit_of_one_head_changes_that_heads_attention_output_only(family):
    lm = tiny_family_lm(family, tokenizer=tokenizer_for(family))
    ids = prompt_ids(lm)
    head = 2

    def push(q):  # q: (batch, seq, heads x dim), whatever the family's own layout
        q = q.clone()
        q[..., head * lm.head_dim : (head + 1) * lm.head_dim] += 3.0
        return q

    plain = attention_outputs(lm, ids)
    edited = attention_outputs(lm, ids, {LAYER: push})
    moved = (edited - plain).abs().amax(dim=(0, 2))  # per head
    assert moved[head] > 1e-3, f"{family}: the edited head did not move"
    others = [h for h in range(lm.n_heads) if h != head]
    assert torch.all(moved[others] == 0), f"{family}: heads {others} moved by {moved[others].tolist()}"
    assert active_hook_count() == 0


@pytest.mark.parametrize("layer", [0, 1])  # Gemma 2 slides on layer 0 only
@pytest.mark.parametrize("family", FAMILIES)
def test_the_attention_view_recomputes_the_models_own_attention(family, layer):
    """Rotary (Gemma 3's per-layer kind), scaling, soft-capping (Gemma 2) and sliding windows (Mistral, Gemma:
    window 8, shorter than the prompt), against the eager attention's own weights."""
    from transformers import DynamicCache

    lm = tiny_family_lm(family, tokenizer=tokenizer_for(family), eager=True)
    ids = prompt_ids(lm)
    P = ids.shape[1] - 6  # the last 6 positions play the reply
    cache = DynamicCache()
    with capture_queries(lm, [layer]) as store:
        out = lm.model(input_ids=ids, past_key_values=cache, use_cache=True, output_attentions=True)
    q = store[layer][0][:, P:].transpose(1, 2)  # (1, heads, R, dim), before rotary
    positions = torch.arange(P, ids.shape[1])[None]
    rotated = families.rotate(lm.model, layer, q, positions)
    ours = families.attention_weights(lm.model, layer, rotated, cache.layers[layer].keys, P)
    theirs = out.attentions[layer][:, :, P:]
    torch.testing.assert_close(ours, theirs.float(), atol=1e-5, rtol=1e-4)


def test_an_unknown_family_gets_a_message_that_names_what_is_missing():
    lm = tiny_family_lm("llama")
    lm.model.config.model_type = "mamba"
    with pytest.raises(ModelLoadError, match="not one of the supported families.*query before rotary"):
        families.family_of(lm.model)


def test_a_model_without_a_chat_template_gets_the_plain_prompt():
    tok = char_tokenizer(chat=False)
    ids, start = render(tok, Request(Q, A).messages(), assistant="Why 5?")
    text = tok.decode(ids)
    assert text.startswith("You are a teacher.") and f"Student's answer: {A}\n\n{FEEDBACK_CUE} Why 5?" in text
    assert tok.decode(ids[:start]).endswith(FEEDBACK_CUE)


@pytest.fixture(scope="module", params=FAMILIES)
def prepared(request, tmp_path_factory):
    """One layer of a tiny model of each family prepared (SAEs, prototypes, learned offsets)."""
    family = request.param
    lm = tiny_family_lm(family, seed=4, tokenizer=tokenizer_for(family))
    out = tmp_path_factory.mktemp(f"prepared-{family}")
    cfg = PrepareConfig(
        layers=(LAYER,),
        sae=SAETrainConfig(epochs=1, batch_size=4096),
        offsets=OffsetFitConfig(layers=(LAYER,), epochs=1, lr=0.05, max_feedback_tokens=12),
        writers=("A",),
    )
    manifest = prepare(lm, cfg, out, progress=False)
    files = SteerFiles(saes=str(out / "saes"), offsets=str(out / "offsets"))
    return family, lm, manifest, (dict(layers=(LAYER,)), files)


def test_prepare_builds_one_layer(prepared):
    family, lm, manifest, _ = prepared
    assert manifest["layers"] == [LAYER] and set(manifest["files"]) == {f"layer_{LAYER}", "offsets"}


def test_strength_0_is_token_identical_and_steering_moves_the_logits(prepared):
    """Greedy text of a random tiny model can be too degenerate to show an edit (Gemma's), so the steered
    prompt's next-token logits are compared; strength 0 must leave the generated tokens identical."""
    family, lm, _, (steer, files) = prepared
    plain = generate_batch(lm, [Request(Q, A)], max_new_tokens=8, ignore_stop=True)[0]
    off = Request(Q, A, "sae", "create", steer=SteerConfig(strength=0.0, **steer), files=files)
    assert generate_batch(lm, [off], max_new_tokens=8, ignore_stop=True)[0].token_ids == plain.token_ids

    ids = prompt_ids(lm)
    base = lm.model(input_ids=ids).logits[0, -1]
    on = Request(Q, A, "sae", "create", steer=SteerConfig(strength=4.0, positions="all", **steer), files=files)
    with query_edits(lm, layer_edits(lm, steering_groups(lm, [on]), "prompt")):
        steered = lm.model(input_ids=ids).logits[0, -1]
    assert (steered - base).abs().max() > 1e-4, f"{family}: steering left the logits unchanged"
    assert active_hook_count() == 0


def test_the_latent_and_attention_views_read_a_steered_reply(prepared):
    family, lm, _, (steer, files) = prepared
    req = Request(Q, A, "sae", "analyze", steer=SteerConfig(strength=2.0, **steer), files=files)
    reply = generate_batch(lm, [req], max_new_tokens=6, ignore_stop=True)[0]
    steered = replay_at(lm, req, reply.token_ids, LAYER)
    plain = replay_at(lm, req, reply.token_ids, LAYER, steered=False)
    latents = latent_view(lm, steered)
    assert latents.before.shape == latents.after.shape == (len(latents.tokens), latents.before.shape[1])
    assert len(latents.tokens) == latents.prompt_len + len(reply.token_ids)
    assert (latents.after != latents.before).any(), f"{family}: the view shows no steered code"
    view = attention_view(lm, steered, plain)
    parts, before, after = view.part_shares()
    assert parts and len(before) == len(after) == len(parts)
    assert all(0 <= share <= 1 for share in before + after)
    assert active_hook_count() == 0


@pytest.mark.parametrize("positions", ["generated", "all"])
def test_a_replay_pair_is_the_two_replays_reading_an_unsteered_prompt_once(prepared, positions):
    """Steering only the reply: the unsteered replay starts from the steered one's prompt, and both are what
    replay_at gives alone, bit for bit. Steering the prompt too: nothing is shared."""
    family, lm, _, (steer, files) = prepared
    req = Request(Q, A, "sae", "analyze", steer=SteerConfig(strength=2.0, positions=positions, **steer), files=files)
    reply = generate_batch(lm, [req], max_new_tokens=6, ignore_stop=True)[0].token_ids
    pair = replay_pair(lm, req, reply, LAYER)
    alone = replay_at(lm, req, reply, LAYER), replay_at(lm, req, reply, LAYER, steered=False)
    assert (pair[0].prompt_state is None) == (positions == "all"), family
    for got, want in zip(pair, alone, strict=True):
        assert torch.equal(got.q_in, want.q_in) and torch.equal(got.q_out, want.q_out), family
        assert got.steered_by == want.steered_by
        for a, b in zip(got.cache.layers[: LAYER + 1], want.cache.layers[: LAYER + 1], strict=True):
            assert torch.equal(a.keys, b.keys) and torch.equal(a.values, b.values), family
    assert not torch.equal(pair[0].q_out, pair[1].q_out), f"{family}: the steered replay was not steered"
    assert active_hook_count() == 0


@pytest.mark.parametrize("positions", ["generated", "all"])
def test_what_generation_records_of_a_row_gives_the_replays_of_its_reply(prepared, positions):
    """A Compare records its SAE row as it generates it (model/recording.py): the views' two replays made from
    that are replay_pair's, to float32 rounding (generation read the prompt in two parts and the reply a token at
    a time), with the same steered positions; a reply that ended before the last step needs no token run again.
    The rows' tokens are the same recorded or not."""
    from steer_core.generation import VIEWS, stream_batch
    from steer_core.inspect.replay import recorded_pair
    from steer_core.model.recording import RowRecording
    from steer_core.prefix_cache import PREFIXES

    family, lm, _, (steer, files) = prepared
    PREFIXES.forget()  # another family's tiny model has the same name
    req = Request(Q, A, "sae", "analyze", steer=SteerConfig(strength=2.0, positions=positions, **steer), files=files)
    reqs, rec = [Request(Q, A), req], RowRecording(1, LAYER)
    *_, outs = stream_batch(lm, reqs, max_new_tokens=6, ignore_stop=True, record=rec, **VIEWS)
    plain = generate_batch(lm, reqs, max_new_tokens=6, ignore_stop=True, **VIEWS)
    assert [o.token_ids for o in outs] == [o.token_ids for o in plain], family
    assert len(rec.steps) == 5 and (rec.prefix > 0) == (positions == "generated"), family
    assert rec.whole == (family not in ("mistral", "gemma2", "gemma3")), family  # sliding windows: replayed
    for reply in (outs[1].token_ids, outs[1].token_ids[:3]):  # run to the end; ended early
        got, want = recorded_pair(lm, req, reply, rec), replay_pair(lm, req, reply, LAYER)
        for g, w in zip(got, want, strict=True):
            torch.testing.assert_close(g.q_in, w.q_in, rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(g.q_out, w.q_out, rtol=1e-4, atol=1e-5)
            keys = g.cache.layers[LAYER].keys, w.cache.layers[LAYER].keys
            torch.testing.assert_close(*keys, rtol=1e-4, atol=1e-5)
            assert g.steered_by == w.steered_by, family
        assert not torch.equal(got[0].q_out, got[1].q_out), f"{family}: the steered side was not steered"
    assert active_hook_count() == 0


@pytest.mark.parametrize("family", FAMILIES)
def test_a_prompt_read_in_two_parts_gives_the_logits_of_one_read(family):
    """The interactive views read the prompt's shared prefix (system turn, few-shot examples) and then the question
    over its cached keys and values: the same next-token logits, to float32 rounding, in every family (sliding
    windows and soft-capping included)."""
    from steer_core.generation import _prefill
    from steer_core.prefix_cache import PREFIXES
    from steer_core.prompts import shared_prefix

    lm = tiny_family_lm(family, seed=2, tokenizer=tokenizer_for(family))
    reqs = [Request(Q, A, "fewshot", "apply"), Request(Q, A)]
    prompts = [render(lm.tokenizer, r.messages())[0] for r in reqs]
    cuts = [shared_prefix(lm.tokenizer, r.messages(), p) for r, p in zip(reqs, prompts)]
    assert all(0 < c < len(p) for c, p in zip(cuts, prompts)), cuts
    width = max(map(len, prompts))
    PREFIXES.forget()
    try:
        _, whole = _prefill(lm, reqs, prompts, width, 2)
        _, parts = _prefill(lm, reqs, prompts, width, 2, cuts)
    finally:
        PREFIXES.forget()
    torch.testing.assert_close(parts, whole, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_views_perplexities_read_together_are_each_replys_own(family):
    """A ladder's and a sweep's perplexities (fluency.perplexities: the prompt read once after its cached prefix, the
    replies right-padded together) are each reply's own (fluency.perplexity, one forward each), to float32 rounding,
    in every family: sliding windows shorter than the prompt, soft-capping, a base model's plain prompt."""
    from steer_core import fluency
    from steer_core.prefix_cache import PREFIXES

    lm = tiny_family_lm(family, seed=4, tokenizer=tokenizer_for(family))
    g = torch.Generator().manual_seed(1)
    replies = [torch.randint(3, len(lm.tokenizer), (n,), generator=g).tolist() for n in (9, 1, 20, 0)]
    PREFIXES.forget()
    try:
        together = fluency.perplexities(lm, Q, A, replies)
    finally:
        PREFIXES.forget()
    assert together[-1] != together[-1]  # an empty reply: nan
    for reply, value in zip(replies[:-1], together):
        assert value == pytest.approx(fluency.perplexity(lm, Q, A, reply), rel=1e-4)
