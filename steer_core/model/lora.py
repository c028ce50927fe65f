"""A LoRA adapter merged into its model's weights, for the query's module to stay a plain Linear for the hooks.

A plain float32 LoRA (peft's default kind: no DoRA, no bias, no per-module ranks, ...) on a float32 model is merged
here as peft merges it, W += (B @ A) * scaling, the same operations, so the same bits: importing peft and wrapping
the model took about a second of every start of the app. Any other adapter is merged by peft itself.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from ..errors import ModelLoadError

PREFIX = "base_model.model."  # how peft names a weight of the wrapped model in its saved file
# adapter_config.json fields peft's merge does not read; any other field set, beyond those `_scaling` reads, makes
# the adapter another kind than a plain LoRA
MERGE_IGNORES = {
    "base_model_name_or_path", "inference_mode", "init_lora_weights", "lora_dropout", "megatron_core", "loftq_config",
    "peft_version", "revision", "task_type", "auto_mapping", "target_modules", "exclude_modules",
    "qalora_group_size",  # read only with use_qalora
}  # fmt: skip
SCALING_READS = {"peft_type", "r", "lora_alpha", "use_rslora", "bias"}

Merge = list[tuple[torch.nn.Linear, torch.Tensor, torch.Tensor]]  # (module, A, B) for each adapted module


def merge_lora(model: torch.nn.Module, adapter_dir: Path) -> torch.nn.Module:
    """`model` with the adapter in `adapter_dir` merged into its weights (in place where it is a plain LoRA)."""
    adapter_dir = Path(adapter_dir)
    config_file, weights_file = adapter_dir / "adapter_config.json", adapter_dir / "adapter_model.safetensors"
    if not config_file.is_file():
        raise ModelLoadError(f"no LoRA adapter (adapter_config.json) in {adapter_dir}")
    scaling = _scaling(json.loads(config_file.read_text()))
    merge = _plain_merge(model, weights_file) if scaling is not None and weights_file.is_file() else None
    if merge is None:
        return _merge_with_peft(model, adapter_dir)
    for module, a, b in merge:  # peft's get_delta_weight and merge, for float32 weights on any device
        module.weight.data += (b.to(module.weight.device) @ a.to(module.weight.device)) * scaling
    return model


def _scaling(cfg: dict) -> float | None:
    """alpha / r (or / sqrt(r), rsLoRA) for an adapter peft would merge as W += B A scaling and nothing else;
    None for any other."""
    r, alpha = cfg.get("r"), cfg.get("lora_alpha")
    if cfg.get("peft_type") != "LORA" or cfg.get("bias", "none") != "none":
        return None
    if not isinstance(r, int) or r <= 0 or not isinstance(alpha, (int, float)):
        return None
    if any(v for k, v in cfg.items() if k not in MERGE_IGNORES | SCALING_READS):
        return None
    return alpha / (math.sqrt(r) if cfg.get("use_rslora") else r)


def _plain_merge(model: torch.nn.Module, weights_file: Path) -> Merge | None:
    """Each adapted Linear with its A and B, every one checked before any weight changes; None where the file holds
    anything else, or a weight is not float32 (peft casts those its own way)."""
    from safetensors.torch import load_file

    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for name, t in load_file(str(weights_file)).items():
        part = name.rsplit(".", 2)[-2] if name.startswith(PREFIX) and name.endswith(".weight") else None
        if part not in ("lora_A", "lora_B") or t.dtype != torch.float32:
            return None
        pairs.setdefault(name[len(PREFIX) : -len(f".{part}.weight")], {})[part] = t
    merge: Merge = []
    for path, p in pairs.items():
        try:
            module = model.get_submodule(path)
        except AttributeError:
            return None
        if len(p) != 2 or not isinstance(module, torch.nn.Linear) or module.weight.dtype != torch.float32:
            return None
        a, b = p["lora_A"], p["lora_B"]
        fits = a.dim() == b.dim() == 2 and b.shape[1] == a.shape[0]
        if not fits or (b.shape[0], a.shape[1]) != tuple(module.weight.shape):
            return None
        merge.append((module, a, b))
    return merge or None


def _merge_with_peft(model: torch.nn.Module, adapter_dir: Path) -> torch.nn.Module:
    from peft import PeftModel

    return PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=False).merge_and_unload()
