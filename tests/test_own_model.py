"""Your model on your Space, end to end on a tiny Qwen3 saved to disk: `train-adapter`, `prepare --adapter`,
then the app (STEER_MODEL + STEER_ADAPTER) serves Compare, the ladder and the sweep with the default steering,
and its text names that model; an unprepared model gets a message that says how to prepare it."""

import importlib
import inspect
import json

import pytest
from tiny import char_tokenizer, tiny_family_model

from steer_core.cli import main as cli
from steer_core.errors import UserError
from steer_core.model.loading import adapter_choice, load_model
from steer_core.steering.model_defaults import default_layers, require_default_layers, residual_layers


@pytest.fixture(scope="module")
def own_model(tmp_path_factory):
    """A tiny Qwen3 (model + tokenizer) saved like a downloaded model; its adapter trained; every layer prepared."""
    home = tmp_path_factory.mktemp("own")
    tok = char_tokenizer()
    model = tiny_family_model("qwen3", seed=5, vocab=len(tok))
    model.save_pretrained(home / "model")
    tok.save_pretrained(home / "model")
    mp = pytest.MonkeyPatch()
    mp.setenv("STEER_CACHE", str(home / "cache"))
    common = ["--model", str(home / "model"), "--device", "cpu"]
    assert cli(["train-adapter", *common, "--out", str(home / "adapter"), "--epochs", "1", "--rank", "2"]) == 0
    prep = ["prepare", *common, "--adapter", str(home / "adapter"), "--layers", "all", "--writers", "A"]
    assert cli([*prep, "--offset-epochs", "1", "--sae-epochs", "1"]) == 0
    yield home
    mp.undo()


def test_adapter_choice_reads_none_default_and_folders(tmp_path):
    assert adapter_choice(None) == adapter_choice("") == "default" and adapter_choice("None") is None
    with pytest.raises(UserError, match="no LoRA adapter there"):
        adapter_choice(str(tmp_path))


def test_the_prepared_model_with_its_adapter_has_its_own_defaults(own_model):
    lm = load_model(str(own_model / "model"), device="cpu", adapter=str(own_model / "adapter"))
    assert lm.adapter and "+lora-" in lm.key
    assert default_layers(lm) == (0, 1, 2) and residual_layers(lm) == (lm.middle_layer,)
    bare = load_model(str(own_model / "model"), device="cpu", adapter=None)
    assert default_layers(bare) == ()  # offsets belong to the weights they were fitted on
    with pytest.raises(UserError, match="no prepared steering yet.*steer_core prepare --model"):
        require_default_layers(bare)


def test_generate_on_the_prepared_model_uses_its_layers(own_model, capsys):
    args = ["generate", "--model", str(own_model / "model"), "--adapter", str(own_model / "adapter")]
    args += ["--device", "cpu", "--question", "What is 2+2?", "--answer", "5", "--level", "create"]
    assert cli([*args, "--max-new-tokens", "6", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["layers"] == "0-2"


def _endpoint(demo, name):
    """An endpoint's handler, called as the API calls it: by name, the rest at its declared defaults."""
    fn = next(f.fn for f in demo.fns.values() if f.api_name == name)

    def call(*args, **kw):
        bound = inspect.signature(fn).bind(*args, **kw)
        bound.apply_defaults()
        return fn(*bound.args)

    return call


def _last(gen):
    """The last value a streaming handler yields (the finished run)."""
    return list(gen)[-1]


def test_the_app_serves_the_prepared_model_with_its_adapter(own_model, monkeypatch):
    import app
    from ui import runtime

    monkeypatch.setattr(runtime, "MODEL", str(own_model / "model"))
    monkeypatch.setattr(runtime, "ADAPTER", str(own_model / "adapter"))
    demo = app.build()
    texts = [b.value for b in demo.blocks.values() if type(b).__name__ == "Markdown" and isinstance(b.value, str)]
    assert any(str(own_model / "model") in t and "3 layers x 4 heads" in t and "0-2" in t for t in texts)
    assert not any("SmolLM2" in t or "0-29" in t for t in texts)

    out = _last(_endpoint(demo, "compare")("What is 2+2?", "5", "create", max_new_tokens=6))
    replies = {c.elem_id: v for c, v in out.items() if (getattr(c, "elem_id", "") or "").startswith("out-")}
    assert {"out-none", "out-sae", "out-query", "out-fewshot"} <= set(replies)
    report = next(v for c, v in out.items() if getattr(c, "elem_id", "") == "report")
    record = json.loads(open(report, encoding="utf-8").read())
    assert record["model"].startswith(str(own_model / "model")) and record["settings"]["layers"] == "0-2"
    assert record["outputs"]["sae"]["text"] == replies["out-sae"]
    ladder = _last(_endpoint(demo, "ladder")("What is 2+2?", "5", max_new_tokens=4))
    assert sum(1 for c, v in ladder.items() if (getattr(c, "elem_id", "") or "").startswith("ladder-") and v) >= 7
    sweep = _last(_endpoint(demo, "sweep")("What is 2+2?", "5", "apply", "0, 1", max_new_tokens=4))
    assert sweep


def test_the_app_says_how_to_prepare_an_unprepared_model(own_model, monkeypatch):
    import app
    from ui import runtime

    monkeypatch.setattr(runtime, "MODEL", str(own_model / "model"))
    monkeypatch.setattr(runtime, "ADAPTER", "none")
    demo = app.build()
    texts = [b.value for b in demo.blocks.values() if type(b).__name__ == "Markdown" and isinstance(b.value, str)]
    assert any("not prepared yet" in t for t in texts)
    with pytest.raises(Exception, match="no learned offsets|prepare"):
        _last(_endpoint(demo, "compare")("What is 2+2?", "5", "create", max_new_tokens=4))


def test_app_module_reads_its_environment(monkeypatch):
    monkeypatch.setenv("STEER_ADAPTER", "none")
    from ui import runtime

    assert importlib.reload(runtime).ADAPTER == "none"
    monkeypatch.delenv("STEER_ADAPTER")
    importlib.reload(runtime)
