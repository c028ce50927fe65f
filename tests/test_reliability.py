"""Corrupt or mismatched artifacts are detected, rebuilt when they are caches, never silently used."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import ROOT
from tiny import tiny_lm

from steer_core.bloom import DatasetError, load_dataset
from steer_core.caches import clear_all
from steer_core.sae import store as bank_mod
from steer_core.sae.layer_files import load_layer, save_layer, verify_layer
from steer_core.sae.module import HeadSAEs, SAEFileError, load_head_saes, save_head_saes
from steer_core.sae.store import STORE


def _write_layer(root, lm, layer, seed):
    g = torch.Generator().manual_seed(seed)
    sae = HeadSAEs(lm.n_heads, lm.head_dim, 24, "topk", k=4)
    sae.init_from(torch.randn(64, lm.n_heads, lm.head_dim, generator=g), generator=g)
    protos = {
        "codes": torch.rand(6, lm.n_heads, 24, generator=g),
        "queries": torch.randn(6, lm.n_heads, lm.head_dim),
        "query_all": torch.randn(lm.n_heads, lm.head_dim),
    }
    return save_layer(root, lm, layer, sae, protos, {"seed": seed}, {}, dtype="float32")


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("STEER_CACHE", str(tmp_path))
    clear_all()  # layers another test loaded from its own cache must not be served here
    lm = tiny_lm()
    yield lm, bank_mod.user_root(lm)
    clear_all()


def test_a_corrupt_cached_layer_is_refused_by_loading_and_rebuilt_by_building(cache, monkeypatch):
    """Loading never trains: a flipped byte is refused with the command that rebuilds it; ensure_trained
    (the explicit build step) rebuilds it, and the rebuilt layer is what loads."""
    from steer_core.fit import sae_training

    lm, root = cache
    d = _write_layer(root, lm, 1, seed=1)
    w = d / "head_2" / "sae_weights.safetensors"
    raw = bytearray(w.read_bytes())
    raw[-7] ^= 0xFF  # one flipped byte inside a tensor: the file still parses
    w.write_bytes(bytes(raw))
    with pytest.raises(SAEFileError, match="do not match the manifest"):
        verify_layer(d)
    with pytest.raises(SAEFileError, match="python -m steer_core prepare"):
        STORE.get(lm, 1)
    rebuilt = []

    def fake_train(lm_, layers, root_, style="plain", progress=True):
        rebuilt.append(list(layers))
        _write_layer(root_, lm_, layers[0], seed=2)

    monkeypatch.setattr(sae_training, "train_layers", fake_train)
    got = sae_training.ensure_trained(lm, [1])[1]
    assert rebuilt == [[1]]
    assert got.meta["metrics"] == {"seed": 2}  # the rebuilt layer, not the corrupt one


def test_missing_layers_are_named_together_and_built_together(cache, monkeypatch):
    """Loading names every missing layer at once and the build command; building trains them in one
    capture pass, not one per layer, and leaves present layers alone."""
    from steer_core.fit import sae_training

    lm, root = cache
    _write_layer(root, lm, 1, seed=1)
    with pytest.raises(SAEFileError, match=r"layer\(s\) \[0, 2\].*--layers 0,2"):
        STORE.get_many(lm, [0, 1, 2])
    calls = []

    def fake_train(lm_, layers, root_, style="plain", progress=True):
        calls.append(list(layers))
        for layer in layers:
            _write_layer(root_, lm_, layer, seed=3)

    monkeypatch.setattr(sae_training, "train_layers", fake_train)
    banks = sae_training.ensure_trained(lm, [0, 1, 2])
    assert calls == [[0, 2]] and sorted(banks) == [0, 1, 2]
    assert banks[1].meta["metrics"] == {"seed": 1} and banks[2].meta["metrics"] == {"seed": 3}


def test_a_corrupt_layer_is_refused(cache):
    lm, root = cache
    d = _write_layer(root, lm, 2, seed=1)
    (d / "prototypes.safetensors").write_bytes(b"garbage")
    with pytest.raises(SAEFileError):
        STORE.get(lm, 2)


def test_unfinished_layer_without_manifest_is_never_loaded(cache):
    lm, root = cache
    d = _write_layer(root, lm, 0, seed=1)
    (d / "layer.json").unlink()
    with pytest.raises(SAEFileError, match="never finished"):
        load_layer(d, lm)


def test_sae_of_the_wrong_shape_for_the_model(cache, tmp_path):
    lm, root = cache
    d = _write_layer(root, lm, 1, seed=1)
    manifest = json.loads((d / "layer.json").read_text())
    other = tiny_lm()
    other.n_heads = 8  # a model with another head count must refuse these SAEs
    with pytest.raises(SAEFileError, match="heads"):
        load_layer(d, other)
    assert manifest["n_heads"] == lm.n_heads


def test_cfg_json_that_does_not_match_its_weights(tmp_path):
    sae = HeadSAEs(2, 8, 16, "topk", k=4)
    sae.init_from(torch.randn(20, 2, 8))
    save_head_saes(sae, tmp_path, "tiny", 0, dtype="float32")
    cfg_path = tmp_path / "head_1" / "cfg.json"
    cfg = json.loads(cfg_path.read_text())
    cfg_path.write_text(json.dumps({**cfg, "d_in": 9}))
    with pytest.raises(SAEFileError):
        load_head_saes(tmp_path, 2, 8)
    cfg_path.write_text("{not json")
    with pytest.raises(SAEFileError):
        load_head_saes(tmp_path, 2, 8)


def test_truncated_safetensors(tmp_path):
    sae = HeadSAEs(2, 8, 16, "standard")
    sae.init_from(torch.randn(20, 2, 8))
    save_head_saes(sae, tmp_path, "tiny", 0, dtype="float32")
    w = tmp_path / "head_0" / "sae_weights.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    with pytest.raises(SAEFileError):
        load_head_saes(tmp_path, 2, 8)


@pytest.mark.parametrize(
    "line,message",
    [
        ('{"id": "x"', "invalid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"id": "x", "scenario_id": "s"}', "missing field"),
    ],
)
def test_malformed_dataset_line_is_named(tmp_path, line, message):
    good = (ROOT / "assets" / "data" / "bloom_feedback.jsonl").read_text().splitlines()[:3]
    p = tmp_path / "d.jsonl"
    p.write_text("\n".join(good + [line]) + "\n")
    with pytest.raises(DatasetError, match=f"line 4: {message}"):
        load_dataset(p)


@pytest.mark.slow
def test_corrupt_model_cache_is_detected_and_rebuilt(tmp_path):
    """A flipped byte in the cached model weights: the next start notices and rebuilds the cache."""
    from steer_core.paths import cache_root

    src = cache_root()
    for name in ("gguf", "smollm2-135m-instruct"):
        shutil.copytree(src / name, tmp_path / name)
    w = tmp_path / "smollm2-135m-instruct" / "model.safetensors"
    with w.open("r+b") as fh:
        fh.seek(w.stat().st_size // 2)
        b = fh.read(1)
        fh.seek(-1, 1)
        fh.write(bytes([b[0] ^ 0xFF]))
    env = {**os.environ, "STEER_CACHE": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    code = (
        "from steer_core.model.loading import load_model, _cache_is_valid, cache_root; "
        "d = cache_root() / 'smollm2-135m-instruct'; print('valid before', _cache_is_valid(d)); "
        "load_model(adapter=None); print('valid after', _cache_is_valid(d))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "valid before False" in out.stdout and "valid after True" in out.stdout
