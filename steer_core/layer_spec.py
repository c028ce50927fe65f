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
