"""The comparison request behind the demo: loose widget values in, clear errors out (no model)."""

import math

import pytest

from steer_core.steering.config import QUERY_ALPHA, SteerConfig, unit_alpha
from steer_core.views.compare import CompareRequest

Q, A = "What is 3 x 4?", "7"
QA = dict(question=Q, student_answer=A)


def test_from_ui_parses_widget_values():
    r = CompareRequest.from_ui(
        question=Q,
        student_answer=A,
        level="Analyse",
        layers="8-10",
        heads=[3, 1, 3],
        strength=2.0,
        steps=10.0,
        lr=0.1,
        mu=0.0,
        target="prototype",
        positions="generated",
        max_new_tokens=32.0,
        seed=7.0,
        k_shots=2.0,
        instruction=True,
    )
    assert r.level == "analyze" and r.layers == (8, 9, 10) and r.heads == (1, 3)
    assert (r.steps, r.max_new_tokens, r.seed, r.k_shots) == (10, 32, 7, 2)
    cfg = r.steer("sae")
    assert (
        cfg.alpha == 2 * unit_alpha("sae", "prototype") and cfg.target == "prototype" and cfg.positions == "generated"
    )
    assert r.methods == ("none", "sae", "query", "fewshot", "instruction")
    reqs = r.requests()
    assert [q.method for q in reqs] == list(r.methods) and reqs[1].steer.method == "sae" and reqs[3].steer is None
    assert CompareRequest.from_ui(**QA, level="apply", layers="8-21 (recommended)", heads="all").heads is None
    with pytest.raises(TypeError):
        CompareRequest(Q, A, "apply")  # keyword only: two fields of a type can never be swapped by position


@pytest.mark.parametrize(
    "kw,message",
    [
        (dict(question=" \t"), "question is empty"),
        (dict(student_answer="\x00\x07"), "answer is empty"),
        (dict(question="x" * 4001), "too long"),
        (dict(level="wise"), "unknown Bloom level"),
        (dict(layers="one"), "layers must look like"),
        (dict(heads=[]), "at least one head"),
        (dict(heads="a,b"), "heads must be"),
        (dict(strength=math.nan), "Steering strength must be a number from 0 to 4"),
        (dict(strength=-0.5), "Steering strength must be from 0 to 4, got -0.5"),
        (dict(strength=5), "Steering strength must be from 0 to 4"),
        (dict(steps=1.5), "whole number"),
        (dict(steps=10_000), "Descent steps T must be from 0 to 500"),
        (dict(max_new_tokens=0), "Max new tokens must be from 1"),
        (dict(lr=math.inf), "Step size must be a number"),
        (dict(k_shots=9), "Few-shot examples must be from 1 to 8"),
        (dict(bogus=1), "unknown setting"),
        (dict(target="moon"), "target must be one of"),
        (dict(positions="some"), "positions must be one of"),
    ],
)
def test_bad_values_are_refused_with_a_clear_message(kw, message):
    args = dict(question=Q, student_answer=A, level="apply")
    args.update(kw)
    with pytest.raises(ValueError, match=message):
        CompareRequest.from_ui(**args)


def test_residual_column_on_request_steers_its_own_layer_at_the_same_strength():
    from steer_core.steering.config import RESIDUAL_ALPHA, RESIDUAL_LAYERS

    r = CompareRequest.from_ui(**QA, level="create", layers="8-21", heads="all", strength=0.5, residual_vector=True)
    assert r.methods == ("none", "sae", "query", "fewshot", "residual")
    row = r.requests()[-1]
    assert row.method == "residual" and row.level == "create"
    assert row.steer.layers == RESIDUAL_LAYERS and row.steer.alpha == 0.5 * RESIDUAL_ALPHA
    both = CompareRequest.from_ui(**QA, level="create", instruction=True, residual_vector=True)
    assert both.methods[-2:] == ("instruction", "residual")


def test_code_only_targets_leave_the_query_baseline_on_delta():
    for target in ("learned", "softmax"):
        r = CompareRequest.from_ui(**QA, level="create", layers="8-21", heads="all", strength=2.0, target=target)
        sae, query = r.steer("sae"), r.steer("query")
        assert sae.target == target and sae.alpha == 2 * unit_alpha("sae", target)
        assert query.target == "delta" and query.alpha == 2 * QUERY_ALPHA  # query steering's own validated scale


def test_strength_1_is_the_same_setting_from_python_the_cli_and_the_ui():
    """One meaning per knob: the UI/API defaults, the CLI defaults and SteerConfig() all steer alike."""
    from steer_core.cli import build_parser
    from steer_core.cli.common import steer_config as _steer_config

    python = SteerConfig()
    ui = CompareRequest.from_ui(**QA, level="apply").steer("sae")
    args = build_parser().parse_args(["generate", "--question", Q, "--answer", A, "--level", "apply"])
    cli = _steer_config(args, python.layers)
    assert python == ui == cli and python.strength == 1 and python.alpha == unit_alpha("sae", python.target)
    half = CompareRequest.from_ui(**QA, level="apply", strength=0.5, target="softmax").steer("sae")
    args = build_parser().parse_args(
        ["generate", "--question", Q, "--answer", A, "--level", "apply", "--strength", "0.5", "--target", "softmax"]
    )
    assert half == _steer_config(args, python.layers) == SteerConfig(target="softmax", strength=0.5)
    assert half.alpha == 0.5 * unit_alpha("sae", "softmax")
