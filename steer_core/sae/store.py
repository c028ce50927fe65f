"""The store of loaded layers: finds a model's SAEs + prototypes (the user's own training first, then the
shipped assets) and loads each layer once per process. It never trains: a layer that is missing (or whose
cached files are corrupt) is refused with a message that names the command that builds it; building is an
explicit call (`fit.sae_training.ensure_trained`, `prepare`, `train`, the Train tab). The files: layer_files.
"""

from __future__ import annotations

from pathlib import Path

from ..caches import ProcessCache
from ..paths import ASSET_SAES, DEFAULT_MODEL, cache_root
from ..prompts import DEFAULT_STYLE
from .layer_files import LayerSAEs, load_layer, verify_layer
from .module import SAEFileError


def user_root(lm, style: str = DEFAULT_STYLE) -> Path:
    """Where SAEs trained on this machine go (the `train` command's default, the app's Train tab)."""
    return cache_root() / "saes" / lm.folder(style)


def layer_roots(lm, style: str = DEFAULT_STYLE) -> list[Path]:
    """Where to look for a layer, in order: the user's own training first (so a retrained layer
    replaces the shipped one), then the shipped assets (default model only). Prototypes depend on
    the prompt format, so each prompt style has its own folder."""
    roots = [user_root(lm, style)]
    if lm.name == DEFAULT_MODEL:
        roots.append(ASSET_SAES / lm.folder(style))
    return roots


def _build_hint(lm, layers) -> str:
    from ..layer_spec import layers_label

    spec = layers_label(sorted(set(layers)))
    return (
        f"build them with `python -m steer_core prepare --model {lm.name} --layers {spec}` (SAEs, prototypes "
        f"and learned offsets) or `python -m steer_core train --model {lm.name} --layers {spec}`"
    )


class LayerStore:
    """Loads layers on demand, one copy per (model + adapter, device, prompt style, layer) per process."""

    def __init__(self):
        self._layers = ProcessCache("SAE layers")

    def find(self, lm, layer: int, style: str = DEFAULT_STYLE) -> Path | None:
        for root in layer_roots(lm, style):
            if (root / f"layer_{layer}" / "layer.json").is_file():
                return root / f"layer_{layer}"
        return None

    def available_layers(self, lm, style: str = DEFAULT_STYLE) -> list[int]:
        out = set()
        for root in layer_roots(lm, style):
            for p in root.glob("layer_*/layer.json"):
                out.add(int(p.parent.name.split("_")[1]))
        return sorted(out)

    def missing(self, lm, layers, style: str = DEFAULT_STYLE) -> list[int]:
        """The layers with no usable SAEs: never built, or a corrupt cache copy (to be rebuilt). A corrupt
        shipped layer is not listed: loading it says so."""
        out = []
        for layer in layers:
            if self._layers.has(self._key(lm, lm.check_layer(layer), style)):
                continue
            d = self.find(lm, layer, style)
            if d is None:
                out.append(layer)
                continue
            try:
                verify_layer(d)
            except SAEFileError:
                if not d.is_relative_to(ASSET_SAES):
                    out.append(layer)
        return out

    def get(self, lm, layer: int, style: str = DEFAULT_STYLE, root: str | Path | None = None) -> LayerSAEs:
        """The layer's SAEs + prototypes (`root`: an explicit folder of layer_<l>/); SAEFileError if there are
        none, or if they are corrupt, naming what builds them."""
        lm.check_layer(layer)
        if root is not None:
            return self._layers.get(
                ("explicit", str(Path(root).resolve()), str(lm.device), layer),
                lambda: self._load_explicit(lm, layer, Path(root)),
            )
        return self._layers.get(self._key(lm, layer, style), lambda: self._load(lm, layer, style))

    def get_many(self, lm, layers, style: str = DEFAULT_STYLE, root: str | Path | None = None) -> dict[int, LayerSAEs]:
        """Several layers; all missing ones are named at once, before any is loaded."""
        if root is None:
            missing = self.missing(lm, layers, style)
            if missing:
                raise SAEFileError(f"no trained SAEs for layer(s) {missing} of {lm.key}; {_build_hint(lm, missing)}")
        return {layer: self.get(lm, layer, style, root) for layer in layers}

    def forget(self, lm, layer: int, style: str = DEFAULT_STYLE) -> None:
        """Drop a loaded layer so the next `get` reads it from disk again (after retraining)."""
        self._layers.forget(self._key(lm, layer, style))

    def _key(self, lm, layer: int, style: str) -> tuple:
        """A loaded layer is valid for one model (+ adapter), device and prompt style."""
        return ("found", lm.key, str(lm.device), style, layer)

    def _load(self, lm, layer: int, style: str) -> LayerSAEs:
        d = self.find(lm, layer, style)
        if d is None:
            raise SAEFileError(f"no trained SAEs for layer {layer} of {lm.key}; {_build_hint(lm, [layer])}")
        try:
            return load_layer(d, lm)
        except SAEFileError as exc:
            if d.is_relative_to(ASSET_SAES):
                raise
            raise SAEFileError(f"{exc}; rebuild it: {_build_hint(lm, [layer])}") from None

    def _load_explicit(self, lm, layer: int, root: Path) -> LayerSAEs:
        d = root / f"layer_{layer}"
        if not d.is_dir():
            raise SAEFileError(f"{root}: no SAEs for layer {layer} (expected {d})")
        return load_layer(d, lm)


STORE = LayerStore()
