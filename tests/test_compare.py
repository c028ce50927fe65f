"""The comparison request behind the demo: loose widget values in, clear errors out (no model)."""

import math

import pytest

from steer_core.steering.config import QUERY_ALPHA, SteerConfig, unit_alpha
from steer_core.views.compare import CompareRequest

Q, A = "What is 3 x 4?", "7"


def test_from_ui_parses_widget_values():
    r = CompareRequest.from_ui(
        Q, A, "Analyse", "8-10", [3, 1, 3], 2.0, 10.0, 0.1, 0.0, "prototype", "generated", 32.0, 7.0, 2.0, True
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
    assert CompareRequest.from_ui(Q, A, "apply", "8-21 (recommended)", "all").heads is None


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
        (dict(strength=math.nan), "strength must be a finite"),
        (dict(strength=-0.5), "must not be negative"),
        (dict(strength=5), "strength must be a number from 0"),
        (dict(steps=1.5), "whole number"),
        (dict(steps=10_000), "steps must be an integer from 0"),
        (dict(max_new_tokens=0), "max new tokens"),
        (dict(lr=math.inf), "step size must be a finite"),
        (dict(k_shots=9), "few-shot"),
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

    r = CompareRequest.from_ui(Q, A, "create", "8-21", "all", 0.5, residual_vector=True)
    assert r.methods == ("none", "sae", "query", "fewshot", "residual")
    row = r.requests()[-1]
    assert row.method == "residual" and row.level == "create"
    assert row.steer.layers == RESIDUAL_LAYERS and row.steer.alpha == 0.5 * RESIDUAL_ALPHA
    both = CompareRequest.from_ui(Q, A, "create", instruction=True, residual_vector=True)
    assert both.methods[-2:] == ("instruction", "residual")


def test_code_only_targets_leave_the_query_baseline_on_delta():
    for target in ("learned", "softmax"):
        r = CompareRequest.from_ui(Q, A, "create", "8-21", "all", 2.0, target=target)
        sae, query = r.steer("sae"), r.steer("query")
        assert sae.target == target and sae.alpha == 2 * unit_alpha("sae", target)
        assert query.target == "delta" and query.alpha == 2 * QUERY_ALPHA  # query steering's own validated scale


def test_strength_1_is_the_same_setting_from_python_the_cli_and_the_ui():
    """One meaning per knob: the UI/API defaults, the CLI defaults and SteerConfig() all steer alike."""
    from steer_core.cli.commands import _steer_config, build_parser

    python = SteerConfig()
    ui = CompareRequest.from_ui(Q, A, "apply").steer("sae")
    args = build_parser().parse_args(["generate", "--question", Q, "--answer", A, "--level", "apply"])
    cli = _steer_config(args, python.layers)
    assert python == ui == cli and python.strength == 1 and python.alpha == unit_alpha("sae", python.target)
    half = CompareRequest.from_ui(Q, A, "apply", strength=0.5, target="softmax").steer("sae")
    args = build_parser().parse_args(
        ["generate", "--question", Q, "--answer", A, "--level", "apply", "--strength", "0.5", "--target", "softmax"]
    )
    assert half == _steer_config(args, python.layers) == SteerConfig(target="softmax", strength=0.5)
    assert half.alpha == 0.5 * unit_alpha("sae", "softmax")
