"""Where a change belongs, kept true: a generation method is one `Method` entry and a steering target one
`Target` entry, nothing else, and both run through generation and the Compare run; a method's prompt, site
and needs are read from its entry; a misspelled method is an error, never the plain prompt; every steering
knob is declared once and the requests and the CLI read it."""

import json
from dataclasses import fields

import pytest
from tiny import char_tokenizer, tiny_family_model

from steer_core import methods
from steer_core.bloom import LEVELS
from steer_core.cli import main as cli
from steer_core.errors import UserError
from steer_core.generation import Request, generate_batch
from steer_core.prompts import SYSTEM, messages
from steer_core.steering import targets
from steer_core.steering.config import KNOBS, SteerConfig
from steer_core.steering.knobs import knobs_of
from steer_core.views.compare import CompareRequest, compare_stream

Q, A = "What is 2 + 2?", "5"


class FakeJudge:
    def judge(self, texts):
        return [{"pred": LEVELS[0], "probs": {lv: 1 / 6 for lv in LEVELS}} for _ in texts]


BUILT: list[str] = []  # the questions the toy method built a prompt for


def _riddle_prompt(req) -> list[dict]:
    BUILT.append(req.question)
    msgs = messages(req.question, req.student_answer, req.style)
    msgs[0]["content"] = SYSTEM + " Answer with a riddle about the level " + str(req.level) + "."
    return msgs


@pytest.fixture
def toys():
    """A toy prompt method (a Compare column) and a toy target, each one registry entry; removed after."""
    methods.register(methods.Method("riddle", "Riddle", methods.PROMPT, "#000000", compare=True, prompt=_riddle_prompt))
    targets.register(
        targets.Target("double", "double the code", "multiply the code by 1 + 20 alpha", 1.0, codes=_double)
    )
    yield
    methods.unregister("riddle")
    del targets.REGISTRY["double"]


EDITED: list[list[int]] = []  # the target levels the toy target's edit was asked for


def _double(c, trace_to):
    EDITED.append(c.levels.tolist())
    return c.z0 * (1 + 20 * c.cfg.alpha)


def test_a_toy_prompt_method_and_target_run_through_generation(steerable_lm, toys):
    lm = steerable_lm
    BUILT.clear()
    plain, toy = generate_batch(
        lm, [Request(Q, A, "none"), Request(Q, A, "riddle", "create")], max_new_tokens=12, ignore_stop=True
    )
    assert BUILT == [Q] and toy.method == "riddle"  # generation asked the entry for its prompt, not the plain one
    assert "riddle about the level create" in Request(Q, A, "riddle", "create").messages()[0]["content"]
    alone = generate_batch(lm, [Request(Q, A, "riddle", "create")], max_new_tokens=12, ignore_stop=True)[0]
    assert alone.token_ids == toy.token_ids
    assert "riddle" in methods.names() and "riddle" in methods.compare_columns() and methods.label("riddle") == "Riddle"
    EDITED.clear()
    steer = SteerConfig(layers=(0, 1, 2), target="double")
    generate_batch(lm, [Request(Q, A, "sae", "create", steer=steer)], max_new_tokens=12, ignore_stop=True)
    assert EDITED and all(levels == [LEVELS.index("create")] for levels in EDITED)  # every layer, every step
    EDITED.clear()
    off = SteerConfig(layers=(1,), target="double", strength=0.0)
    assert (
        generate_batch(lm, [Request(Q, A, "sae", "create", steer=off)], max_new_tokens=12, ignore_stop=True)[
            0
        ].token_ids
        == plain.token_ids
    )


def test_a_toy_method_is_a_compare_column_and_a_toy_target_a_compare_choice(steerable_lm, toys):
    req = CompareRequest.from_ui(
        question=Q, student_answer=A, level="apply", layers="1", target="double", max_new_tokens=6
    )
    assert "riddle" in req.methods and ("double the code", "double") in KNOBS["target"].options
    EDITED.clear()
    *_, result = compare_stream(steerable_lm, req, judge=FakeJudge(), inspect=False)
    assert set(result.outputs) == set(req.methods) and result.outputs["riddle"].new_tokens > 0
    assert result.record(steerable_lm.label)["outputs"]["riddle"]["text"] == result.outputs["riddle"].text
    assert req.steer("sae").target == "double"
    assert EDITED  # the SAE column steered with the toy target


def test_a_misspelled_method_is_an_error_never_the_plain_prompt():
    with pytest.raises(UserError, match="unknown method 'fewshoot'; choose one of none, sae"):
        Request(Q, A, "fewshoot", "create")
    with pytest.raises(UserError, match="unknown method"):
        SteerConfig(method="saee")
    with pytest.raises(UserError, match="does not steer"):
        SteerConfig(method="fewshot")


def test_what_a_method_does_is_read_from_its_entry():
    assert [m.site for m in methods.REGISTRY.values()] == [
        methods.NONE, methods.CODES, methods.QUERIES, methods.QUERY_SHIFT, methods.PROMPT, methods.PROMPT,
        methods.RESIDUAL, methods.CODES,
    ]  # fmt: skip
    assert {n: m.needs for n, m in methods.REGISTRY.items() if m.needs} == {
        "sae": (methods.SAES,), "query": (methods.SAES,), "meandiff": (methods.SAES,),
        "residual": (methods.RESIDUAL_VECTORS,), "latents": (methods.SAES,),
    }  # fmt: skip
    assert methods.steered() == ("sae", "query", "meandiff", "residual", "latents")
    assert methods.prompted() == ("fewshot", "instruction") and methods.eval_default()[-1] == "instruction"
    assert Request(Q, A, "fewshot", "apply").steer is None and Request(Q, A, "query", "apply").steer.site == "queries"
    with pytest.raises(ValueError, match="site must be one of"):
        methods.Method("bad", "Bad", "attention", "#000")


def test_the_unsteered_reply_and_the_prompt_baselines_need_no_steering_files(tmp_path, monkeypatch, capsys):
    """A model by path that was never prepared: `generate --method none` (and the prompt baselines) run;
    a steered method says how to prepare it."""
    tok = char_tokenizer()
    tiny_family_model("llama", seed=7, vocab=len(tok)).save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    monkeypatch.setenv("STEER_CACHE", str(tmp_path / "cache"))
    base = ["generate", "--model", str(tmp_path / "model"), "--no-adapter", "--device", "cpu"]
    base += ["--question", Q, "--answer", A, "--max-new-tokens", "4", "--json"]
    for method in ("none", "instruction", "fewshot"):
        assert cli([*base, "--method", method]) == 0
        out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert out["method"] == method and "layers" not in out
    assert cli([*base, "--method", "sae"]) == 2
    assert "no prepared steering yet" in capsys.readouterr().err


def test_every_steering_knob_is_declared_once_and_read_by_the_request_and_the_cli():
    shared = {"layers", "heads", "strength", "steps", "lr", "mu", "target", "positions"}
    compare = {f.name: f for f in fields(CompareRequest)}
    for name in shared:  # the very same declaration, and the same default
        assert knobs_of(CompareRequest)[name] is KNOBS[name], name
        assert compare[name].default == getattr(SteerConfig(), name), name
    from steer_core.cli import build_parser

    helps = {a.dest: a for a in build_parser()._subparsers._group_actions[0].choices["generate"]._actions}
    for name, k in KNOBS.items():
        if name in ("layers", "heads"):
            continue
        assert (k.help or k.label) in (helps[name].help or "") or name == "target", name
        assert helps[name].default == getattr(SteerConfig(), name), name
    with pytest.raises(UserError, match="Step size must be >= 0, got -1.0"):
        SteerConfig(lr=-1.0)
    with pytest.raises(UserError, match="Steering strength must be from 0 to 4"):
        CompareRequest.from_ui(question=Q, student_answer=A, level="apply", strength=5)
    assert SteerConfig(strength=5.0).strength == 5.0  # the slider's top is the UI's, not the engine's


def test_a_steered_method_runs_on_top_of_a_prompt_and_strength_0_is_that_prompts_reply(steerable_lm):
    """The prompt under the steering is one knob (SteerConfig.prompt), read from the prompt baselines when asked."""
    from steer_core.evaluation.reproduce import row_config
    from steer_core.evaluation.results import config_columns, row_prompt

    steer = SteerConfig(layers=(1,), target="delta", strength=0.0)
    on_top = Request(Q, A, "sae", "create", steer=steer, prompt="instruction")
    alone = Request(Q, A, "instruction", "create")
    assert on_top.prompt == on_top.steer.prompt == alone.prompt == "instruction"
    assert on_top.messages() == alone.messages() != Request(Q, A, "sae", "create", steer=steer).messages()
    a, b = generate_batch(steerable_lm, [on_top, alone], max_new_tokens=6)
    assert a.token_ids == b.token_ids  # strength 0: the instruction reply, token for token
    assert Request(Q, A, "sae", "create", steer=SteerConfig(layers=(1,), prompt="fewshot")).prompt == "fewshot"
    cfg = SteerConfig(layers=(1,), target="delta", prompt="instruction")
    assert cfg.label.endswith(" + instruction") and not SteerConfig(layers=(1,)).label.endswith("plain")
    cols = config_columns(cfg)
    assert json.loads(cols["config"])["prompt"] == "instruction"
    assert "prompt" not in json.loads(config_columns(SteerConfig(layers=(1,)))["config"])  # old rows keep their key
    row = {"method": "sae", "layers": "1", "alpha": cols["alpha"], "prompt": "instruction", **cols}
    assert row_config(row) == cfg and row_prompt(row) == "instruction"
    assert row_prompt({"method": "fewshot"}) == "fewshot" and row_prompt({"method": "sae"}) == "plain"
    with pytest.raises(UserError, match="Few-shot runs its own prompt"):
        Request(Q, A, "fewshot", "create", prompt="instruction")
    with pytest.raises(UserError, match="Prompt under the steering must be one of plain, fewshot, instruction"):
        SteerConfig(prompt="rubric")
    methods.register(methods.Method("shout", "Shouting", methods.PROMPT, "#000000", prompt=_riddle_prompt))
    try:  # a prompt baseline registered later is a prompt to steer on top of, everywhere at once
        assert (
            Request(Q, A, "sae", "create", steer=steer, prompt="shout")
            .messages()[0]["content"]
            .endswith("level create.")
        )
    finally:
        methods.unregister("shout")
