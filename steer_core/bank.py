"""The store of loaded layers: finds a model's SAEs + prototypes (the user's own training first, then
the shipped assets), loads each layer once per process, and trains missing or corrupt cache layers
with the trainer it was given (a corrupt cache layer is rebuilt, never used; a corrupt shipped
layer is refused). The files themselves: layer_files.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from .layer_files import LayerBank, load_layer, verify_layer
from .paths import ASSET_SAES, DEFAULT_MODEL, cache_root
from .sae import SAEFileError

# trainer(lm, layers, root, style=..., progress=...) trains and saves those layers under root
Trainer = Callable[..., object]


def user_root(lm, style: str = "plain") -> Path:
    """Where SAEs trained on this machine go (the `train` command's default, the app's Train tab)."""
    return cache_root() / "saes" / lm.folder(style)


def bank_roots(lm, style: str = "plain") -> list[Path]:
    """Where to look for a layer, in order: the user's own training first (so a retrained layer
    replaces the shipped one), then the shipped assets (default model only). Prototypes depend on
    the prompt format, so each prompt style has its own folder."""
    roots = [user_root(lm, style)]
    if lm.name == DEFAULT_MODEL:
        roots.append(ASSET_SAES / lm.folder(style))
    return roots


def _loaded_key(lm, layer: int, style: str) -> tuple[str, int]:
    """A loaded layer is valid for one model (+ adapter), device and prompt style."""
    return (lm.key + str(lm.device) + style, layer)


class BankStore:
    """Loads layers on demand (and trains missing ones when allowed), one copy per process."""

    def __init__(self, trainer: Trainer):
        self.trainer = trainer
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
                        f"no trained SAEs for layer {layer} of {lm.key}; "
                        f"run `python -m steer_core train --layers {layer}`"
                    )
                root = user_root(lm, style)
                self.trainer(lm, [layer], root, style=style, progress=progress)
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
                    self.trainer(lm, todo, user_root(lm, style), style=style, progress=progress)
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


def train_layers(lm, layers, root, **kw):
    """The default trainer; the training code loads only when a layer has to be trained."""
    from .training import train_layers as train

    return train(lm, layers, root, **kw)


STORE = BankStore(trainer=train_layers)
