"""A LoRA adapter merged without peft is peft's merge bit for bit; any other adapter is left to peft."""

import json

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model

from steer_core.errors import ModelLoadError
from steer_core.model import lora
from tests.tiny import tiny_lm

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def saved_adapter(tmp_path, **config):
    """A LoRA of a tiny Llama with random (nonzero) A and B, saved as peft saves it."""
    model = get_peft_model(tiny_lm(seed=3).model, LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, **config))
    g = torch.Generator().manual_seed(0)
    for name, p in model.named_parameters():
        if "lora_" in name:
            p.data = torch.randn(p.shape, generator=g) * 0.1
    model.save_pretrained(tmp_path)
    return tmp_path


def merged_by_peft(adapter_dir):
    return PeftModel.from_pretrained(tiny_lm().model, str(adapter_dir), is_trainable=False).merge_and_unload()


def test_a_plain_lora_merges_as_peft_merges_it_bit_for_bit(tmp_path, monkeypatch):
    adapter = saved_adapter(tmp_path)
    expected = merged_by_peft(adapter).state_dict()
    monkeypatch.setattr(lora, "_merge_with_peft", lambda *a: pytest.fail("a plain LoRA went to peft"))
    got = lora.merge_lora(tiny_lm().model, adapter).state_dict()
    assert got.keys() == expected.keys()
    assert all(torch.equal(got[k], expected[k]) for k in expected)
    assert not all(torch.equal(got[k], tiny_lm().model.state_dict()[k]) for k in expected)  # the adapter did change it


@pytest.mark.parametrize("config", [{"use_rslora": True}, {"use_dora": True}, {"rank_pattern": {"q_proj": 2}}])
def test_other_adapters_merge_as_peft_merges_them(tmp_path, config):
    adapter = saved_adapter(tmp_path, **config)
    expected = merged_by_peft(adapter).state_dict()
    got = lora.merge_lora(tiny_lm().model, adapter).state_dict()
    assert all(torch.equal(got[k], expected[k]) for k in expected)


def test_which_adapters_are_plain(tmp_path):
    cfg = json.loads((saved_adapter(tmp_path) / "adapter_config.json").read_text())
    assert lora._scaling(cfg) == 2.0
    assert lora._scaling(cfg | {"use_rslora": True}) == 4.0
    for other in ({"use_dora": True}, {"bias": "all"}, {"modules_to_save": ["lm_head"]}, {"peft_type": "IA3"}):
        assert lora._scaling(cfg | other) is None, other


def test_an_adapter_that_does_not_fit_the_model_is_left_to_peft(tmp_path, monkeypatch):
    adapter = saved_adapter(tmp_path)
    other = tiny_lm().model
    other.model.layers = other.model.layers[:1]  # the adapter names layers this model does not have
    assert lora._plain_merge(other, adapter / "adapter_model.safetensors") is None
    monkeypatch.setattr(lora, "_merge_with_peft", lambda model, folder: ("peft", folder))
    assert lora.merge_lora(other, adapter) == ("peft", adapter)


def test_a_folder_without_an_adapter_is_refused(tmp_path):
    with pytest.raises(ModelLoadError, match="no LoRA adapter"):
        lora.merge_lora(tiny_lm().model, tmp_path / "missing")
