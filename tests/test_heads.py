"""`python -m steer_core heads` on the tiny random model: the ranking's JSON, its order, a `--heads` value the
steering options accept, and a bad --top refused before any work."""

import json

import pytest
import torch
from tiny import char_tokenizer, tiny_lm

from steer_core import cli
from steer_core.cli import fit as fit_cli
from steer_core.layer_spec import parse_heads


@pytest.fixture(scope="module")
def lm():
    return tiny_lm(seed=4, tokenizer=char_tokenizer())


@pytest.fixture
def on_tiny(lm, monkeypatch):
    """The commands run on the tiny model instead of loading the default one, and read one scenario's six
    feedbacks of the writers asked for (one of each level, as the lift needs), to keep the test short."""
    real = fit_cli.writer_rows

    def one_scenario(writers):
        rows = real(writers)
        return [r for r in rows if r.scenario_id == rows[0].scenario_id]

    monkeypatch.setattr(fit_cli, "load", lambda args: lm)
    monkeypatch.setattr(fit_cli, "writer_rows", one_scenario)
    return lm


def heads(capsys, *args):
    code = cli.main(["heads", "--writers", "A", "--max-feedback-tokens", "6", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_heads_json_ranks_by_lift_and_names_heads_to_steer(on_tiny, capsys):
    code, out, _ = heads(capsys, "--layers", "1-2", "--top", "5", "--json")
    assert code == 0
    got = json.loads(out)
    assert set(got) == {"heads", "ranked", "mean_lift", "n_feedbacks"}
    assert got["n_feedbacks"] == 6  # one scenario's feedbacks, one of each level
    assert isinstance(got["mean_lift"], float)
    ranked = got["ranked"]
    assert len(ranked) == 5
    assert all(set(r) == {"layer", "head", "lift"} for r in ranked)
    assert all(r["layer"] in (1, 2) and 0 <= r["head"] < on_tiny.n_heads for r in ranked)
    lifts = [r["lift"] for r in ranked]
    assert lifts == sorted(lifts, reverse=True)
    assert len({(r["layer"], r["head"]) for r in ranked}) == 5
    heads_all, pairs = parse_heads(got["heads"])
    assert heads_all is None and set(pairs) == {(r["layer"], r["head"]) for r in ranked}


def test_heads_text_output_ends_with_the_heads_value(on_tiny, capsys):
    code, out, _ = heads(capsys, "--layers", "2", "--top", "100")
    assert code == 0
    lines = out.strip().splitlines()
    assert lines[0].startswith("mean lift over 4 heads:") and "6 feedbacks" in lines[0]
    assert len(lines) == 1 + on_tiny.n_heads + 1  # every head of the layer: --top beyond them is all of them
    assert lines[-1].startswith("--heads 2.")
    _, pairs = parse_heads(lines[-1].split(" ", 1)[1])
    assert pairs == tuple((2, h) for h in range(on_tiny.n_heads))


@pytest.mark.parametrize(
    "args,message",
    [
        (["--top", "0"], "--top must be at least 1"),
        (["--max-feedback-tokens", "0"], "--max-feedback-tokens must be at least 1"),
        (["--layers", "x"], "--layers"),
    ],
)
def test_bad_heads_options_exit_2_with_one_line_before_loading(monkeypatch, capsys, args, message):
    def no_model(args):
        raise AssertionError("the model was loaded for a bad command line")

    monkeypatch.setattr(fit_cli, "load", no_model)
    code, out, err = heads(capsys, *args)
    assert code == 2 and out == ""
    assert message in err and len(err.strip().splitlines()) == 1


def test_a_layer_the_model_lacks_is_a_user_error(on_tiny, capsys):
    code, _, err = heads(capsys, "--layers", "7")
    assert code == 2 and "out of range" in err


def test_rank_lift_is_one_top_k_over_layers_and_heads():
    from steer_core.errors import UserError
    from steer_core.inspect.head_ranking import heads_text, rank_lift

    lift = torch.tensor([[0.1, 0.9, -0.2], [0.5, 0.0, 0.7]])  # layers 8 and 18, three heads each
    ranked = rank_lift(lift, [8, 18], 3)
    assert ranked == [
        {"layer": 8, "head": 1, "lift": 0.9},
        {"layer": 18, "head": 2, "lift": 0.7},
        {"layer": 18, "head": 0, "lift": 0.5},
    ]
    assert heads_text(ranked) == "8.1,18.2,18.0"
    assert len(rank_lift(lift, [8, 18], 50)) == 6
    with pytest.raises(UserError, match="at least 1"):
        rank_lift(lift, [8, 18], 0)
    with pytest.raises(ValueError, match="layers"):
        rank_lift(lift, [8], 2)


def test_batched_line_mass_equals_each_feedback_replayed_alone(lm):
    """The lift reads a scenario's feedbacks as one padded batch after one prompt forward; each row's mass is the
    mean over its own tokens of the attention a replay of that feedback alone gives (reply_attention)."""
    from types import SimpleNamespace

    from steer_core.bloom import LEVELS
    from steer_core.inspect.attention import reply_attention, rubric_line_lift, rubric_parts
    from steer_core.prompts import messages, render

    q, a = "What is 3 x 4?", "12, because 3 fours are 12."
    feedbacks = ["Why?", "Say how you know.", "Try 4 x 3 too", "Compare two ways", "Judge it.", "Invent a new one!"]
    rows = [SimpleNamespace(question=q, student_answer=a, level=lv, feedback=f) for lv, f in zip(LEVELS, feedbacks)]
    layers = [0, 2]
    lift, mass = rubric_line_lift(lm, rows, layers, max_feedback_tokens=12, progress=False)
    want = torch.zeros_like(mass)
    for i, r in enumerate(rows):
        ids, start = render(lm.tokenizer, messages(q, a, "rubric"), r.feedback)
        prompt, reply = ids[:start], ids[start:][:12]
        w = reply_attention(lm, prompt, reply, layers)  # (layers, heads, reply, seq)
        parts = rubric_parts(lm.tokenizer, prompt, q, a)
        want[i] = parts.mass(w)[..., : len(LEVELS)].mean(2).permute(2, 0, 1)
    torch.testing.assert_close(mass, want, rtol=1e-4, atol=1e-6)
    assert lift.shape == (2, lm.n_heads) and torch.isfinite(lift).all()
