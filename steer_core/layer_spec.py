"""Layer sets as users write them: '15', '8-21', '3,9,15' (CLI flags, the app, result tables)."""

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


def layers_label(layers: Sequence[int]) -> str:
    layers = list(layers)
    if len(layers) > 2 and layers == list(range(layers[0], layers[-1] + 1)):
        return f"{layers[0]}-{layers[-1]}"
    return ",".join(map(str, layers))
