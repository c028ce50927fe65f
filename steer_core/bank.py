"""Trained SAEs + prototypes per (model, layer) on disk: layout, integrity checks, loading.

Layout of one layer (SAELens layout per head, plus our prototypes and a manifest):
    <root>/layer_<l>/head_<h>/cfg.json, sae_weights.safetensors
    <root>/layer_<l>/prototypes.safetensors   codes (6,H,K), queries (6,H,D), query_all (H,D)
    <root>/layer_<l>/layer.json               sha256 of every file, training metrics, settings
The manifest is written last, so a layer without one was never finished; any file whose hash
differs from the manifest makes the whole layer corrupt (rebuilt when it is a cache).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from pathlib import Path

from .bloom import LEVELS
from .io_utils import atomic_write_bytes, atomic_write_text
from .models import ADAPTER_DIR, DEFAULT_MODEL, cache_root
from .sae import SAEFileError, load_head_saes, save_head_saes
from .steering import LayerBank

ASSET_SAES = Path(__file__).resolve().parent.parent / "assets" / "saes"


def model_key(lm) -> str:
    """Folder name for a model (+ adapter): SAEs are only valid for the exact weights they saw."""
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", lm.name.strip("/"))[-80:]
    if lm.adapter:
        shipped = Path(lm.adapter).resolve() == ADAPTER_DIR
        base += "+" + (
            "feedback-lora" if shipped else "lora-" + hashlib.sha256(str(lm.adapter).encode()).hexdigest()[:8]
        )
    return base


def user_root(lm, style: str = "plain") -> Path:
    """Where SAEs trained on this machine go (the `train` command's default, the app's Train tab)."""
    return cache_root() / "saes" / (model_key(lm) + ("" if style == "plain" else f"@{style}"))


def bank_roots(lm, style: str = "plain") -> list[Path]:
    """Where to look for a layer, in order: the user's own training first (so a retrained layer
    replaces the shipped one), then the shipped assets (default model only). Prototypes depend on
    the prompt format, so each prompt style has its own folder."""
    roots = [user_root(lm, style)]
    if lm.name == DEFAULT_MODEL:
        roots.append(ASSET_SAES / user_root(lm, style).name)
    return roots


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def save_layer(
    root: Path, lm, layer: int, sae, protos: dict, metrics: dict, settings: dict, dtype: str = "float16"
) -> Path:
    from safetensors.torch import save

    d = Path(root) / f"layer_{layer}"
    (d / "layer.json").unlink(missing_ok=True)  # unfinished until the manifest is back
    digests = save_head_saes(sae, d, lm.name, layer, dtype=dtype)
    blob = save(
        {k: v.detach().float().cpu().contiguous() for k, v in protos.items()}, metadata={"levels": ",".join(LEVELS)}
    )
    atomic_write_bytes(d / "prototypes.safetensors", blob)
    digests["prototypes.safetensors"] = hashlib.sha256(blob).hexdigest()
    manifest = {
        "model": lm.name,
        "adapter": model_key(lm),
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
        if _sha(p) != digest:
            raise SAEFileError(f"{p}: contents do not match the manifest (corrupt or edited)")
    return manifest


def load_layer(d: Path, lm) -> LayerBank:
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
    return LayerBank(manifest["layer"], sae, p["codes"], p["queries"], p["query_all"], manifest).to(lm.device)


def _loaded_key(lm, layer: int, style: str) -> tuple[str, int]:
    """A loaded layer is valid for one model (+ adapter), device and prompt style."""
    return (model_key(lm) + str(lm.device) + style, layer)


class BankStore:
    """Loads layers on demand (and trains missing ones when allowed), one copy per process."""

    def __init__(self):
        self._layers: dict[tuple[str, int], LayerBank] = {}
        self._lock = threading.Lock()

    def find(self, lm, layer: int, style: str = "plain") -> Path | None:
        for root in bank_roots(lm, style):
            if (root / f"layer_{layer}" / "layer.json").is_file():
                return root / f"layer_{layer}"
        return None

    def available_layers(self, lm, style: str = "plain") -> list[int]:
        out = set()
        for root in bank_roots(lm, style):
            for p in root.glob("layer_*/layer.json"):
                out.add(int(p.parent.name.split("_")[1]))
        return sorted(out)

    def get(
        self,
        lm,
        layer: int,
        style: str = "plain",
        train_missing: bool = True,
        progress: bool = True,
        root: str | Path | None = None,
    ) -> LayerBank:
        """The layer's SAEs + prototypes; `root`: an explicit folder of layer_<l>/ (never trained here)."""
        lm.check_layer(layer)
        if root is not None:
            return self._get_explicit(lm, layer, Path(root))
        key = _loaded_key(lm, layer, style)
        with self._lock:
            if key in self._layers:
                return self._layers[key]
            d = self.find(lm, layer, style)
            bank = None
            if d is not None:
                try:
                    bank = load_layer(d, lm)
                except SAEFileError:  # a corrupt cache entry is rebuilt, never trusted
                    if d.is_relative_to(ASSET_SAES) or not train_missing:
                        raise
            if bank is None:
                if not train_missing:
                    raise SAEFileError(
                        f"no trained SAEs for layer {layer} of {model_key(lm)}; "
                        f"run `python -m steer_core train --layers {layer}`"
                    )
                from .training import train_layers

                root = user_root(lm, style)
                train_layers(lm, [layer], root, style=style, progress=progress)
                bank = load_layer(root / f"layer_{layer}", lm)
            self._layers[key] = bank
            return bank

    def get_many(
        self,
        lm,
        layers,
        style: str = "plain",
        train_missing: bool = True,
        progress: bool = True,
        root: str | Path | None = None,
    ) -> dict[int, LayerBank]:
        """Several layers; those to be trained are trained together, after one pass of query
        capture over the train split instead of one pass per layer."""
        if root is None and train_missing:
            with self._lock:
                todo = [layer for layer in layers if self._needs_training(lm, layer, style)]
                if len(todo) > 1:
                    from .training import train_layers

                    train_layers(lm, todo, user_root(lm, style), style=style, progress=progress)
        return {layer: self.get(lm, layer, style, train_missing, progress, root) for layer in layers}

    def _needs_training(self, lm, layer: int, style: str) -> bool:
        if _loaded_key(lm, lm.check_layer(layer), style) in self._layers:
            return False
        d = self.find(lm, layer, style)
        if d is None:
            return True
        try:
            verify_layer(d)
            return False
        except SAEFileError:
            return not d.is_relative_to(ASSET_SAES)  # a corrupt shipped layer is refused by get()

    def _get_explicit(self, lm, layer: int, root: Path) -> LayerBank:
        key = (f"{root.resolve()}|{lm.device}", layer)
        with self._lock:
            if key not in self._layers:
                d = root / f"layer_{layer}"
                if not d.is_dir():
                    raise SAEFileError(f"{root}: no SAEs for layer {layer} (expected {d})")
                self._layers[key] = load_layer(d, lm)
            return self._layers[key]

    def forget(self, lm, layer: int, style: str = "plain") -> None:
        """Drop a loaded layer so the next `get` reads it from disk again (after retraining)."""
        with self._lock:
            self._layers.pop(_loaded_key(lm, layer, style), None)


STORE = BankStore()
