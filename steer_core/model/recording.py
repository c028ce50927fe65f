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
    it returned them), each decoding step's (1, heads x dim) pair, and the batch's cache, whose prompts end at
    `width` (left-padded)."""

    row: int
    layer: int
    prompt: tuple[torch.Tensor, torch.Tensor] | None = None
    prefix: int = 0
    steps: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)
    cache: object = None
    width: int = 0

    @property
    def whole(self) -> bool:
        """Whether the recording holds every position up to its layer: a generation ran, and none of those layers'
        caches is a sliding window's (which keeps only its last positions)."""
        from transformers.cache_utils import StaticLayer

        layers = getattr(self.cache, "layers", [])[: self.layer + 1]
        return self.prompt is not None and len(layers) == self.layer + 1 and all(type(x) is StaticLayer for x in layers)

    def edits(self, edits: Mapping, row: int, into: list) -> dict:
        """`edits` with this layer's edit (or none) wrapped to append (input, output) of the batch's `row` to
        `into`."""
        inner = edits.get(self.layer)

        def record(q):
            out = inner(q) if inner is not None else None
            into.append((q[row].detach().clone(), (q if out is None else out)[row].detach().clone()))
            return out

        return {**edits, self.layer: record}
