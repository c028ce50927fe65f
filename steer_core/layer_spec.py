"""Layer sets and heads as users write them: '15', '8-21', '3,9,15'; heads 'all', '0,3,5' or
layer.head pairs '18.6,8.0' (CLI flags, the app, result tables)."""

from __future__ import annotations

from collections.abc import Sequence

from .errors import UserError


def parse_layers(spec: str) -> tuple[int, ...]:
    """'15' -> (15,), '8-21' -> (8..21), '3,9,15' -> (3, 9, 15)."""
    out: list[int] = []
    for part in str(spec).split(","):
        part = part.strip()
        if "-" in part:
            a, b = part.split("-")
            out += list(range(int(a), int(b) + 1))
        elif part:
            out.append(int(part))
    if not out:
        raise UserError(f"no layers in {spec!r}")
    return tuple(sorted(set(out)))


def read_layers(text) -> tuple[int, ...]:
    """Layers as a person types them ("8-21", "15", "3,9,15", "8-21 (recommended)": what follows a "(" is a note),
    or a UserError that says how they look."""
    spec = str(text).split("(")[0].strip()
    try:
        return parse_layers(spec)
    except ValueError:
        raise UserError(f"layers must look like 15, 8-21 or 3,9,15; got {spec!r}") from None


def layers_label(layers: Sequence[int]) -> str:
    layers = list(layers)
    if len(layers) > 2 and layers == list(range(layers[0], layers[-1] + 1)):
        return f"{layers[0]}-{layers[-1]}"
    return ",".join(map(str, layers))


def parse_heads(spec) -> tuple[tuple[int, ...] | None, tuple[tuple[int, int], ...] | None]:
    """'all' (or empty, or None) -> every head; '0,3,5' or [0, 3, 5] -> the same heads in every layer;
    '18.6,18.7,8.0' -> layer.head pairs. Returns (heads, layer_heads); an empty list stays empty
    (for the caller to refuse)."""
    if spec is None or (isinstance(spec, str) and spec.strip().lower() in ("", "all")):
        return None, None
    items = [h.strip() for h in spec.split(",") if h.strip()] if isinstance(spec, str) else list(spec)
    try:
        if items and all(isinstance(h, str) and "." in h for h in items):
            return None, tuple(sorted({(int(h.split(".")[0]), int(h.split(".")[1])) for h in items}))
        return tuple(sorted({int(h) for h in items})), None
    except (TypeError, ValueError, IndexError):
        raise UserError(
            f"heads must be 'all', head numbers (0,3,5) or layer.head pairs (18.6,8.0), got {spec!r}"
        ) from None


# One latent steered by hand: (layer, head, latent, strength), written "18.6:123:+4".
HandLatent = tuple[int, int, int, float]
MAX_LATENT_STRENGTH = 64.0  # a latent's strength, either sign; past it every reply is noise
LATENTS_FORM = "layer.head:latent:strength, e.g. 18.6:123:+4, 20.1:55:-2"


def parse_latents(spec) -> tuple[HandLatent, ...] | None:
    """'18.6:123:+4, 20.1:55:-2' (or a list of such strings, or of 4-tuples) -> ((18, 6, 123, 4.0), (20, 1, 55,
    -2.0)); empty or None -> None. A latent named twice adds its strengths. Refuses a malformed item or a strength
    out of bounds with a message naming it; whether the layer, head and latent exist is the model's to say."""
    if spec is None:
        return None
    if isinstance(spec, str):
        items = [s.strip() for s in spec.replace(";", ",").split(",") if s.strip()]
    else:
        items = list(spec)
    if not items:
        return None
    total: dict[tuple[int, int, int], float] = {}
    for item in items:
        try:
            if isinstance(item, str):
                where, latent, strength = item.split(":")
                layer, head = where.split(".")
                parts = (int(layer), int(head), int(latent), float(strength))
            else:
                layer, head, latent, strength = item
                parts = (int(layer), int(head), int(latent), float(strength))
        except (TypeError, ValueError):
            raise UserError(f"latents are written {LATENTS_FORM}; could not read {item!r}") from None
        if min(parts[:3]) < 0:
            raise UserError(f"layer, head and latent are numbers from 0, got {item!r}")
        if not abs(parts[3]) <= MAX_LATENT_STRENGTH:  # also refuses nan
            top = f"{MAX_LATENT_STRENGTH:g}"
            raise UserError(f"a latent's strength is from -{top} to {top}, got {item!r}")
        key = parts[:3]
        total[key] = total.get(key, 0.0) + parts[3]
    return tuple((*k, s) for k, s in sorted(total.items()))


def latents_text(latents) -> str:
    """The written form parse_latents reads ('18.6:123:+4, 20.1:55:-2'); '' for none."""
    return ", ".join(f"{layer}.{head}:{latent}:{s:+g}" for layer, head, latent, s in latents or ())
