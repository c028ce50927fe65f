"""Strength in calibrated units: a residual vector's scale as a share of the distance between the level centroids at
its layer (the mean of the layer's output over each level's feedback tokens), so a strength reads the same on
any model and layer: 1 unit moves the stream as far as one level's feedback sits from the others'."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..bloom import LEVELS, FeedbackExample
from ..errors import UserError
from ..prompts import DEFAULT_STYLE, FEEDBACK_TOKENS, messages, pad_right, render


@dataclass
class LevelCentroids:
    """Each level's mean stream at a layer's output over its feedback tokens, (levels, d)."""

    layer: int
    means: torch.Tensor
    tokens: list[int]  # feedback tokens read per level

    def distances(self) -> torch.Tensor:
        """(levels,) how far each level's centroid sits from the mean of the other levels' centroids: the norm of
        the level's mean-difference vector, the unit a calibrated strength is counted in."""
        n = self.means.shape[0]
        others = (self.means.sum(0, keepdim=True) - self.means) / (n - 1)
        return (self.means - others).norm(dim=-1)


@torch.no_grad()
def level_centroids(
    lm, layer: int, rows: Sequence[FeedbackExample], style: str = DEFAULT_STYLE, batch_size: int = 16,
    max_tokens: int = FEEDBACK_TOKENS,
) -> LevelCentroids:  # fmt: skip
    """The level centroids at `layer`'s output (the stream a residual vector is added to) over the first max_tokens
    tokens of each row's feedback, read under the plain prompt as the vectors were fitted."""
    lm.check_layer(layer)
    if not rows:
        raise UserError("level centroids need feedback rows")
    sums = torch.zeros(len(LEVELS), lm.model.config.hidden_size, dtype=torch.float64)
    counts = torch.zeros(len(LEVELS), dtype=torch.long)
    pad = lm.tokenizer.pad_token_id or 0
    seen: list[torch.Tensor] = []  # the layer's output of the batch being read
    handle = lm.decoder_layer(layer).register_forward_hook(
        lambda mod, inp, out: seen.append(out[0] if isinstance(out, tuple) else out)
    )
    try:
        for b in range(0, len(rows), batch_size):
            _read_batch(lm, rows[b : b + batch_size], style, max_tokens, pad, seen, sums, counts)
    finally:
        handle.remove()
    if (counts == 0).any():
        missing = [lv for lv, c in zip(LEVELS, counts.tolist()) if c == 0]
        raise UserError(f"level centroids need feedback at every level; none for {', '.join(missing)}")
    return LevelCentroids(layer, (sums / counts[:, None]).float(), counts.tolist())


def _read_batch(lm, chunk, style, max_tokens, pad, seen, sums, counts) -> None:
    """Add one batch's feedback-token streams (the hook's capture in `seen`) to each level's sum and count."""
    encoded = []
    for r in chunk:
        ids, start = render(lm.tokenizer, messages(r.question, r.student_answer, style), r.feedback)
        encoded.append((ids[: start + max_tokens], start))
    ids, mask, reply = pad_right(encoded, pad)
    seen.clear()
    lm.model(input_ids=ids.to(lm.device), attention_mask=mask.long().to(lm.device))
    stream = seen[0].double().cpu()  # the decoder layer's output: where a residual vector is added
    level = torch.tensor([LEVELS.index(r.level) for r in chunk])
    sums.index_add_(0, level, (stream * reply[..., None]).sum(1))  # each row's feedback tokens, summed
    counts.index_add_(0, level, reply.sum(1))


def calibrated_strengths(vectors: torch.Tensor, alphas: Sequence[float], centroids: LevelCentroids) -> list[dict]:
    """A residual vector's scales in calibrated units: for each alpha, alpha x each level's vector norm over that
    level's centroid distance (vectors: (levels, d)), per level and their mean."""
    norms = vectors.float().norm(dim=-1).cpu()
    dist = centroids.distances()
    out = []
    for a in alphas:
        units = a * norms / dist
        out.append({"alpha": a, "units": float(units.mean()), **{lv: float(u) for lv, u in zip(LEVELS, units)}})
    return out
