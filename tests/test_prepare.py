"""`prepare` end to end on a tiny random Llama: SAEs + prototypes, offsets, a manifest; then the default
steering runs on what it built, strength 0 is unsteered, and a second run rebuilds nothing."""

import json

import pytest
import torch
from tiny import char_tokenizer, tiny_lm

from steer_core.fit.offsets import OffsetFitConfig
from steer_core.fit.prepare import MANIFEST, PrepareConfig, plan, prepare
from steer_core.generation import Request, generate_batch
from steer_core.model.hooks import active_hook_count
from steer_core.sae.module import SAETrainConfig
from steer_core.steering.config import SteerConfig
from steer_core.steering.files import SteerFiles

Q, A = "What is 2 + 2?", "5, because 2 and 2 make 5."


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    lm = tiny_lm(seed=4, tokenizer=char_tokenizer())
    out = tmp_path_factory.mktemp("prepared")
    cfg = PrepareConfig(
        layers=(1, 2),
        sae=SAETrainConfig(epochs=1, batch_size=4096),
        offsets=OffsetFitConfig(layers=(1, 2), epochs=2, lr=0.05, max_feedback_tokens=16),
        writers=("A",),  # 12 scenarios: enough to fit, fast on CPU
    )
    assert plan(lm, cfg, out).describe() == "SAEs + prototypes for layers 1,2 and the learned offsets"
    manifest = prepare(lm, cfg, out, progress=False)
    return lm, cfg, out, manifest


def test_prepare_builds_saes_offsets_and_a_manifest(built):
    lm, cfg, out, manifest = built
    assert (out / "saes" / "layer_1" / "layer.json").is_file() and (out / "offsets" / "offsets.json").is_file()
    saved = json.loads((out / MANIFEST).read_text())
    assert saved["layers"] == [1, 2] and saved["model_key"] == lm.key
    assert set(saved["files"]) == {"layer_1", "layer_2", "offsets"}
    assert set(saved["timings"]["sae_seconds_per_layer"]) == {"1", "2"} and "offsets_seconds" in saved["timings"]


def test_default_steering_runs_on_what_prepare_built(built):
    lm, cfg, out, _ = built
    steer = dict(layers=(1, 2))
    files = SteerFiles(saes=str(out / "saes"), offsets=str(out / "offsets"))
    plain = generate_batch(lm, [Request(Q, A)], max_new_tokens=12, ignore_stop=True)[0]

    def run(strength):
        cfg = SteerConfig(strength=strength, **steer)
        req = Request(Q, A, "sae", "create", steer=cfg, files=files)
        return generate_batch(lm, [req], max_new_tokens=12, ignore_stop=True)[0]

    assert run(0.0).token_ids == plain.token_ids  # strength 0 is off
    assert run(4.0).token_ids != plain.token_ids  # the fitted offsets do steer
    assert active_hook_count() == 0


def test_a_second_run_rebuilds_nothing_and_a_broken_layer_is_rebuilt(built):
    lm, cfg, out, _ = built
    again = plan(lm, cfg, out)
    assert again.nothing_to_do and again.layers_done == [1, 2]
    weights = out / "saes" / "layer_2" / "head_0" / "sae_weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"corrupt!")
    broken = plan(lm, cfg, out)
    assert broken.layers_todo == [2] and not broken.offsets_done  # offsets follow the SAEs they were fitted for
    manifest = prepare(lm, cfg, out, progress=False)
    assert manifest["reused_layers"] == [1] and set(manifest["timings"]["sae_seconds_per_layer"]) == {"2"}
    assert plan(lm, cfg, out).nothing_to_do
    assert torch.isfinite(torch.tensor(manifest["timings"]["total_seconds"]))


def test_preparing_into_the_model_cache_never_drops_layers_the_default_steering_has(built, tmp_path, monkeypatch):
    """Offsets are fitted jointly: a fit for other layers would replace the model's own offsets, so
    plan refuses it (before any work) and says what to do."""
    import shutil

    from steer_core.errors import UserError
    from steer_core.sae.store import user_root
    from steer_core.steering.offset_files import offsets_roots

    lm, cfg, out, _ = built
    monkeypatch.setenv("STEER_CACHE", str(tmp_path))
    shutil.copytree(out / "saes", user_root(lm))
    shutil.copytree(out / "offsets", offsets_roots(lm)[0])
    from steer_core.caches import clear_all

    try:
        assert plan(lm, cfg).nothing_to_do  # the model's own files, found where the app looks
        assert plan(lm, PrepareConfig(layers=(1,))).nothing_to_do  # a subset of the fitted layers: no new fit
        with pytest.raises(UserError, match=r"cover layers 1,2; offsets fitted for 0,1 alone .* layers 2 would lose"):
            plan(lm, PrepareConfig(layers=(0, 1)))
        assert plan(lm, PrepareConfig(layers=(0, 1)), out=tmp_path / "own").layers_todo == [0, 1]  # own folder: fine
    finally:
        clear_all()  # the layers loaded from this test's cache


def test_the_default_fit_is_the_shipped_fits_rows_and_steps():
    """The shipped offsets were fitted on writers A-C's 36 scenarios in 144 steps: prepare fits on the same rows
    (unless writers are chosen), in as many passes as make about 144 steps, 32 reply tokens, saved at 0.75 of
    their size; --offset-epochs overrides."""
    from steer_core.bloom import load_dataset, writer_of
    from steer_core.fit.prepare import FIT_STEPS

    rows = load_dataset(split="train")
    cfg = PrepareConfig(layers=(1, 2))
    fit_rows = cfg.fit_rows(rows)
    assert {writer_of(r.scenario_id) for r in fit_rows} == {"A", "B", "C"} and len(fit_rows) < len(rows)
    fit = cfg.default_fit(fit_rows)
    assert len({r.scenario_id for r in fit_rows}) * fit.epochs == FIT_STEPS
    assert (fit.epochs, fit.precision, fit.layers) == (4, "float32", (1, 2))
    assert (fit.max_feedback_tokens, fit.scale) == (32, 0.75)
    chosen = PrepareConfig(layers=(1, 2), writers=("D",))
    assert chosen.fit_rows(chosen.rows()) == chosen.rows()  # chosen writers: all of their rows
    assert cfg.default_fit(fit_rows, epochs=1, precision="bfloat16").precision == "bfloat16"


def test_prepare_hands_the_fit_the_reference_its_capture_read(tmp_path, monkeypatch):
    """The capture for the SAEs reads every reply's unsteered likelihood too: the fit does not read them again."""
    from steer_core.fit import offsets

    def read_again(*a, **k):
        raise AssertionError("the fit read the replies' reference again")

    monkeypatch.setattr(offsets, "_references", read_again)
    lm = tiny_lm(seed=5, tokenizer=char_tokenizer())
    cfg = PrepareConfig(
        layers=(0, 1),
        sae=SAETrainConfig(epochs=1, batch_size=4096),
        offsets=OffsetFitConfig(layers=(0, 1), epochs=1, lr=0.05, max_feedback_tokens=16),
        writers=("A",),
        cards=False,
    )
    manifest = prepare(lm, cfg, tmp_path, progress=False)
    assert "offsets_seconds" in manifest["timings"] and (tmp_path / "offsets" / "offsets.json").is_file()
