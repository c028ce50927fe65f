"""Where things live, defined once: the shipped assets, the user cache, the default model's name."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ASSETS = ROOT / "assets"
DATA_DIR = ASSETS / "data"  # the Bloom feedback dataset and its datasheet
JUDGE_DIR = ASSETS / "judge"  # the fitted judge
ADAPTER_DIR = ASSETS / "adapter"  # the feedback LoRA of the default model
ASSET_SAES = ASSETS / "saes"  # SAEs + prototypes per model folder (see layer_files)
ASSET_OFFSETS = ASSETS / "offsets"  # learned sparse offsets per model folder
ASSET_RESIDUAL = ASSETS / "residual"  # learned residual-stream vectors per model folder (the field's baseline)

DEFAULT_MODEL = "smollm2-135m-instruct"
SHIPPED_ADAPTER_TAG = "feedback-lora"  # the shipped adapter's short name in folder keys
DEFAULT_FOLDER = f"{DEFAULT_MODEL}+{SHIPPED_ADAPTER_TAG}"  # the default model + its adapter: the shipped assets' folder


def cache_root() -> Path:
    """Where derived artifacts live: $STEER_CACHE, else ~/.cache/bloom-steer."""
    return Path(os.environ.get("STEER_CACHE", Path.home() / ".cache" / "bloom-steer"))
