"""Trained SAEs + prototypes of one (model, layer) on disk: the layout, writing, verification, loading.

Layout of one layer (SAELens layout per head, plus our prototypes and a manifest):
    <root>/layer_<l>/head_<h>/cfg.json, sae_weights.safetensors
    <root>/layer_<l>/prototypes.safetensors   codes (6,H,K), queries (6,H,D), query_all (H,D)
    <root>/layer_<l>/layer.json               sha256 of every file, training metrics, settings
The manifest is written last, so a layer without one was never finished; any file whose hash
differs from the manifest makes the whole layer corrupt.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..bloom import LEVELS
from ..io_utils import atomic_write_bytes, atomic_write_text, sha256_file
from .module import HeadSAEs, SAEFileError, load_head_saes, save_head_saes


@dataclass
class LayerSAEs:
    """What steering one layer needs: its SAEs and the per-level prototypes."""

    layer: int
    sae: HeadSAEs
    codes: torch.Tensor  # (levels, heads, d_sae) mean sparse code per level
    queries: torch.Tensor  # (levels, heads, head_dim) mean query per level
    query_all: torch.Tensor  # (heads, head_dim) mean query over all levels
    meta: dict = field(default_factory=dict)

    def to(self, device) -> LayerSAEs:
        self.sae = self.sae.to(device)
        self.codes, self.queries, self.query_all = (t.to(device) for t in (self.codes, self.queries, self.query_all))
        return self


def save_layer(
    root: Path, lm, layer: int, sae, protos: dict, metrics: dict, settings: dict, dtype: str = "float16"
) -> Path:
    from safetensors.torch import save

    d = Path(root) / f"layer_{layer}"
    (d / "layer.json").unlink(missing_ok=True)  # unfinished until the manifest is back
    digests = save_head_saes(sae, d, lm.name, layer, dtype=dtype, site=lm.family.query_module)
    blob = save(
        {k: v.detach().float().cpu().contiguous() for k, v in protos.items()}, metadata={"levels": ",".join(LEVELS)}
    )
    atomic_write_bytes(d / "prototypes.safetensors", blob)
    digests["prototypes.safetensors"] = hashlib.sha256(blob).hexdigest()
    manifest = {
        "model": lm.name,
        "model_key": lm.key,  # the model and adapter these SAEs were trained on
        "layer": layer,
        "n_heads": sae.n_heads,
        "head_dim": sae.d_in,
        "d_sae": sae.d_sae,
        "levels": list(LEVELS),
        "files": digests,
        "metrics": metrics,
        "settings": settings,
    }
    atomic_write_text(d / "layer.json", json.dumps(manifest, indent=1))
    return d


def verify_layer(d: Path) -> dict:
    """The manifest of a complete, uncorrupted layer folder, else SAEFileError."""
    mpath = d / "layer.json"
    if not mpath.is_file():
        raise SAEFileError(f"{d}: no layer.json (never finished)")
    try:
        manifest = json.loads(mpath.read_text())
        files = manifest["files"]
    except (json.JSONDecodeError, KeyError):
        raise SAEFileError(f"{mpath}: unreadable manifest") from None
    for rel, digest in files.items():
        p = d / rel
        if not p.is_file():
            raise SAEFileError(f"{p}: missing")
        if sha256_file(p) != digest:
            raise SAEFileError(f"{p}: contents do not match the manifest (corrupt or edited)")
    return manifest


def load_layer(d: Path, lm) -> LayerSAEs:
    from safetensors.torch import load_file

    manifest = verify_layer(d)
    if manifest["n_heads"] != lm.n_heads or manifest["head_dim"] != lm.head_dim:
        raise SAEFileError(
            f"{d}: SAEs are for {manifest['n_heads']} heads of dim {manifest['head_dim']}, "
            f"the model has {lm.n_heads} of dim {lm.head_dim}"
        )
    sae = load_head_saes(d, lm.n_heads, lm.head_dim)
    p = load_file(str(d / "prototypes.safetensors"))
    want = {
        "codes": (len(LEVELS), lm.n_heads, sae.d_sae),
        "queries": (len(LEVELS), lm.n_heads, lm.head_dim),
        "query_all": (lm.n_heads, lm.head_dim),
    }
    for k, shape in want.items():
        if k not in p or tuple(p[k].shape) != shape:
            raise SAEFileError(f"{d}/prototypes.safetensors: {k} missing or not of shape {shape}")
    return LayerSAEs(manifest["layer"], sae, p["codes"], p["queries"], p["query_all"], manifest).to(lm.device)
