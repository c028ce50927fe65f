"""What steers a loaded model when nothing is chosen: the layers its learned offsets cover and the layer of
its residual-stream vectors. For the default model these are the shipped, validated ones (every layer;
layer 15); for any other model, what `prepare` (and `fit-offsets --site residual`) built for it, so a
prepared model's defaults are its own and an unprepared one gets a message that says how to prepare it."""

from __future__ import annotations

from ..errors import UserError
from ..layer_spec import layers_label
from ..prompts import DEFAULT_STYLE
from .offset_files import OffsetsFileError, load_offsets


def default_layers(lm, style: str = DEFAULT_STYLE) -> tuple[int, ...]:
    """The layers the model's learned offsets cover (the user's fit, else the shipped one); () if none."""
    try:
        return tuple(load_offsets(lm, style=style).layers)
    except OffsetsFileError:
        return ()


def shown_layers(lm, style: str = DEFAULT_STYLE) -> tuple[int, ...]:
    """The layers a request steers when it names none: default_layers, else the middle layer (for the targets
    that need no offsets), so every view and link reads the same default."""
    return default_layers(lm, style) or (lm.middle_layer,)


def require_default_layers(lm, style: str = DEFAULT_STYLE) -> tuple[int, ...]:
    """default_layers, or a UserError that says how to prepare the model (or to name layers)."""
    layers = default_layers(lm, style)
    if not layers:
        raise UserError(
            f"{lm.name} has no prepared steering yet (no learned offsets for {lm.key}): run "
            f"`python -m steer_core prepare --model {lm.name}` (every layer), or choose the layers and a target "
            "that needs no offsets (e.g. delta)"
        )
    return layers


def residual_layers(lm, style: str = DEFAULT_STYLE) -> tuple[int, ...]:
    """The layer(s) of the model's residual-stream vectors; the middle layer where it has none yet."""
    try:
        return tuple(load_offsets(lm, style=style, site="residual").layers)
    except OffsetsFileError:
        return (lm.middle_layer,)


def describe(lm, style: str = DEFAULT_STYLE) -> str:
    """One line for the app's header and About: the model, its adapter and what steers it by default."""
    layers = default_layers(lm, style)
    adapter = "" if lm.adapter is None else f" with the adapter {lm.label.split('+', 1)[-1]}"
    steer = (
        f"default steering: learned offsets on layers {layers_label(layers)}"
        if layers
        else "not prepared yet (Train + prepare, or `python -m steer_core prepare`)"
    )
    return f"{lm.name}{adapter}: {lm.n_layers} layers x {lm.n_heads} heads; {steer}"
