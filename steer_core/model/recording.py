"""One row's queries at one layer, recorded while generation runs them.

A view of a reply (its latent codes, where its attention goes: inspect/) needs the queries a layer saw and
the keys it cached. Generation computes both; recording them as it goes spares the views a second run of
the model over the prompt and the reply. The recording edit calls the layer's own edit and keeps copies of
its input and output, so the row's tokens are what they are without it (tested).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch


@dataclass
class RowRecording:
    """What generation saw of request `row` at `layer`: the prompt positions its prefill read (after the row's
    cached prefix, `prefix` tokens; (positions, heads x dim) queries as they reached the steering edit and as
    it returned them), each decoding step's (1, heads x dim) pair, and once it ended (`keep`) the row's keys and
    values up to `layer`, one (1, kv_heads, positions, dim) pair a layer over the prompt and the tokens it read."""

    row: int
    layer: int
    prompt: tuple[torch.Tensor, torch.Tensor] | None = None
    prefix: int = 0
    steps: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)
    kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    @property
    def whole(self) -> bool:
        """Whether the recording holds every position up to its layer (see `keep`)."""
        return self.prompt is not None and self.kv is not None

    def keep(self, cache, start: int, end: int) -> None:
        """Keep the row's keys and values of cache positions [start, end) up to the layer, so that the batch's cache
        (a Compare's is about 100 MB) can go. Nothing is kept where one of those layers' caches is a sliding
        window's, which holds only its last positions."""
        from transformers.cache_utils import StaticLayer

        layers, r = cache.layers[: self.layer + 1], self.row
        if len(layers) == self.layer + 1 and all(type(x) is StaticLayer for x in layers):
            self.kv = [tuple(t[r : r + 1, :, start:end].clone() for t in (x.keys, x.values)) for x in layers]


def recorder(edits: Mapping, layer: int, row: int, into: list) -> dict:
    """`edits` with `layer`'s edit (or none) wrapped to append copies of the batch's `row` of its queries, as they
    reached the edit and as it returned them ((positions, heads x dim) each), to `into`."""
    inner = edits.get(layer)

    def record(q):
        out = inner(q) if inner is not None else None
        into.append((q[row].detach().clone(), (q if out is None else out)[row].detach().clone()))
        return out

    return {**edits, layer: record}
