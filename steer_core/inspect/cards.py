"""Latent cards: what each SAE latent responds to and what pushing it does, built once from the dataset by
`python -m steer_core cards` (and by `prepare`), and looked up, never computed, when a page opens one.

For each (layer, head, latent): how often it fires on the train split's tokens; its top-activating tokens in
context (indices into one token table of the rendered dataset, not copies of text); its mean activation on the
feedback tokens of each Bloom level; and what pushing it alone does to its head: the attention its reply tokens
move onto the prompt's parts (the question, the student's answer, the rest of the prompt, the reply so far), on a
few held-out scenarios, pushed by the latent's own top activation. For the latents each level's learned offset
uses most, also the judge's level probabilities of replies steered by that latent alone (`effects`). A latent's
weight in each level's offset and prototype is read from those files when its card opens (views.latents).

Files, per model folder: `tokens.safetensors` (the token table), `cards.json` (its rows, the settings, the SAE
files the cards were built from, the effects) and `layer_<l>.safetensors` (that layer's cards), each written
atomically; a layer whose SAEs changed since its cards were built is rebuilt, one that did not is kept.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from ..bloom import LEVELS
from ..caches import ProcessCache
from ..errors import UserError
from ..paths import ASSETS, DEFAULT_MODEL, cache_root
from ..prompts import DEFAULT_STYLE

FORMAT = 1
CONTEXTS = 6  # top-activating tokens kept a latent
PARTS = ("question", "student answer", "rest of the prompt", "reply so far")
REFERENCE_WRITERS = ("D", "E", "F")  # held-out writers: the scenarios the attention shift and effects are read on
REFERENCES = 3  # scenarios
REFERENCE_TOKENS = 32  # reply tokens of each reference feedback
EFFECT_TOKENS = 32
CHUNK = 2048  # tokens encoded at once
ASSET_CARDS = ASSETS / "cards"
# How hard a card pushes its latent (its attention shift, its judged effect, the "steer with this latent" value):
# 16x its top activation (the learned offsets' own alpha), at least 1. On the default model a latent's activations
# are small (top activations: median 0.14) and its decoder row long (norm about 14): latent 24.6:374 pushed by 1
# left two 48-token replies unchanged, by 1.5 to 5.4 changed them more the harder it was pushed.
PUSH_PER_ACTIVATION, MIN_PUSH = 16.0, 1.0


def push_of(top_activation: torch.Tensor) -> torch.Tensor:
    """The push of each latent from its top activation (PUSH_PER_ACTIVATION, MIN_PUSH)."""
    return (PUSH_PER_ACTIVATION * top_activation).clamp_min(MIN_PUSH)


def cards_root(lm, style: str = DEFAULT_STYLE) -> Path:
    """Where `cards` writes for this model (the shipped model's cards ship in assets/cards)."""
    return cache_root() / "cards" / lm.folder(style)


def cards_roots(lm, style: str = DEFAULT_STYLE) -> list[Path]:
    """Where to look, in order: the user's own build, then the shipped cards (default model only)."""
    roots = [cards_root(lm, style)]
    if lm.name == DEFAULT_MODEL:
        roots.append(ASSET_CARDS / lm.folder(style))
    return roots


@dataclass
class LayerCards:
    """One layer's cards, every head: tensors (heads, latents, ...)."""

    layer: int
    freq: torch.Tensor  # (H, K) share of the table's tokens it fires on
    top_act: torch.Tensor  # (H, K, C) its largest activations, largest first (0 where it fired less often)
    top_token: torch.Tensor  # (H, K, C) int32 where: indices into the token table
    level_mean: torch.Tensor  # (H, K, 6) mean activation on feedback tokens of each level
    attention: torch.Tensor  # (H, K, parts) change of the head's attention mass on each part when pushed
    push: torch.Tensor  # (H, K) how hard it was pushed (push_of its top activation)

    def tensors(self) -> dict:
        """As saved: compact dtypes, on the CPU."""
        t = {
            "freq": self.freq.float(),
            "top_act": self.top_act.half(),
            "top_token": self.top_token.int(),
            "level_mean": self.level_mean.half(),
            "attention": self.attention.half(),
            "push": self.push.half(),
        }
        return {k: v.cpu().contiguous() for k, v in t.items()}

    @classmethod
    def load(cls, path: Path, layer: int) -> LayerCards:
        t = load_file(str(path))
        return cls(layer, **{k: (v.float() if v.is_floating_point() else v) for k, v in t.items()})


def _read_meta(out: Path) -> dict:
    try:
        return json.loads((out / "cards.json").read_text())
    except (OSError, ValueError):
        return {}


def top_offset_latents(lm, layers: list[int], per_level: int, style: str = DEFAULT_STYLE) -> dict[str, list]:
    """level -> its learned offset's `per_level` largest positive weights over `layers`: [(layer, head, latent,
    weight)], largest first. Empty where the model has no learned offsets."""
    from ..steering.offset_files import OffsetsFileError, load_offsets

    try:
        learned = load_offsets(lm, None, style)
    except OffsetsFileError:
        return {}
    have = [layer for layer in layers if layer in learned.layers]
    if not have:
        return {}
    stacked = torch.stack([learned.for_layer(layer).float().cpu() for layer in have])  # (L, levels, H, K)
    out = {}
    for li, level in enumerate(LEVELS):
        w = stacked[:, li]  # (L, H, K)
        v, i = w.flatten().topk(min(per_level, w.numel()))
        coords = torch.unravel_index(i, w.shape)
        out[level] = [
            (have[a], int(h), int(k), float(x)) for a, h, k, x in zip(coords[0].tolist(), coords[1], coords[2], v)
        ]
    return out


class CardSet:
    """A model's cards as a page reads them: the token table and each layer's tensors, loaded once."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.meta = _read_meta(self.folder)
        if not self.meta:
            raise UserError(f"{self.folder} holds no latent cards (cards.json)")
        t = load_file(str(self.folder / "tokens.safetensors"))
        self.ids, self.starts = t["ids"], t["starts"]
        self._layers: dict[int, LayerCards] = {}

    @property
    def layers(self) -> list[int]:
        return sorted(int(layer) for layer in self.meta.get("layers", {}))

    def layer(self, layer: int) -> LayerCards:
        if layer not in self._layers:
            path = self.folder / f"layer_{layer}.safetensors"
            if not path.is_file():
                have = ", ".join(map(str, self.layers)) or "none"
                raise UserError(
                    f"no latent cards for layer {layer} (built: {have}); `python -m steer_core cards --layers {layer}` "
                    "builds them"
                )
            self._layers[layer] = LayerCards.load(path, layer)
        return self._layers[layer]

    def example_of(self, token: int) -> int:
        """The table row a token index belongs to."""
        return int(torch.searchsorted(self.starts, torch.tensor(token), right=True)) - 1


def find_cards(lm, style: str = DEFAULT_STYLE) -> Path:
    """The folder of this model's cards (the user's build first, then the shipped ones), or a UserError that says
    how to build them."""
    for root in cards_roots(lm, style):
        if (root / "cards.json").is_file():
            return root
    raise UserError(f"no latent cards for {lm.key}; build them with `python -m steer_core cards --model {lm.name}`")


class _Cards(ProcessCache):
    def of(self, lm, style: str = DEFAULT_STYLE) -> CardSet:
        folder = find_cards(lm, style)
        return self.get((str(folder.resolve()),), lambda: CardSet(folder))


CARDS = _Cards("latent cards")
