"""Everything the default steering needs for a model, in one resumable command (`prepare`): SAEs and
level prototypes for each layer, then the learned offsets, then a manifest of what was built.

Each piece is checked before any work starts and skipped when it is already there and verifies
(a layer's files against its manifest, the offsets against those SAEs), so a killed run continues
where it stopped. Outputs go where the app and the CLI look for a model's own files (the user
cache), or under one folder (`out`: out/saes, out/offsets) to pass to `--saes` and `--offsets`.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..bloom import by_writers, load_dataset, writer_of
from ..errors import UserError
from ..io_utils import atomic_write_text
from ..layer_spec import layers_label
from ..paths import cache_root
from ..prompts import DEFAULT_STYLE
from ..sae.layer_files import verify_layer
from ..sae.module import SAEFileError, SAETrainConfig
from ..sae.store import STORE, user_root
from ..steering.config import DEFAULT_LAYERS
from ..steering.offset_files import (
    OFFSETS_CFG,
    OFFSETS_FILE,
    LevelOffsets,
    OffsetsFileError,
    forget_offsets,
    offsets_roots,
)
from .offsets import OffsetFitConfig

MANIFEST = "prepare.json"
# The shipped offsets were fitted in 144 steps (4 passes over writers A-C's 36 scenarios) and validated at that
# size; the same fit in twice the steps (every writer, 4 passes) came out 1.5x larger per head and read 2.51x
# perplexity on test at the same strength. prepare fits in as many passes as make about 144 steps.
FIT_STEPS = 144
# ... and on the same rows: writers A-C's 36 scenarios, 4 passes. The same steps over every writer (72 scenarios, 2
# passes) fitted offsets half as large (each scenario seen twice), which read 0.27 on test against the shipped 0.47.
FIT_WRITERS = ("A", "B", "C")
# prepare's fit reads each reply's first 32 tokens, not 48: a step takes about two thirds of the time. On
# validation (writers D-F, the same fold as the shipped fit) it read as accurate at the same perplexity and
# stronger at the same alpha (alpha 12 read as alpha 16 of the shipped fit), so its offsets are saved at 12/16
# of their fitted size: strength 1 is then that validated setting (docs/performance.md).
FIT_TOKENS = 32
FIT_SCALE = 0.75
# bfloat16 products fit 1.5x faster a step on 2 CPU cores, but the offsets read less accurate on validation
# (docs/performance.md): float32 stays the default
FIT_PRECISION = "float32"


@dataclass(frozen=True)
class PrepareConfig:
    """What to build; stored in the manifest."""

    layers: tuple[int, ...] = DEFAULT_LAYERS
    style: str = DEFAULT_STYLE
    sae: SAETrainConfig = field(default_factory=SAETrainConfig)
    offsets: OffsetFitConfig | None = None  # None: default_fit, for these layers and style
    writers: tuple[str, ...] | None = None  # only these writers' train scenarios (None: the whole train split)
    cards: bool = True  # then the latent cards (inspect.cards), from the same rows

    def rows(self):
        return by_writers(load_dataset(split="train"), self.writers, "train-split rows")

    def fit_rows(self, rows) -> list:
        """The rows the offsets are fitted on: the chosen writers', else FIT_WRITERS' (as the shipped fit)."""
        return list(rows) if self.writers else [r for r in rows if writer_of(r.scenario_id) in FIT_WRITERS]

    def default_fit(self, rows, epochs: int | None = None, precision: str = FIT_PRECISION) -> OffsetFitConfig:
        """The offsets fit for these layers and style on `rows` (fit_rows): `epochs` passes, or as many as make
        about FIT_STEPS steps (one step a scenario)."""
        if epochs is None:
            epochs = max(1, round(FIT_STEPS / max(1, len({r.scenario_id for r in rows}))))
        return OffsetFitConfig(
            layers=tuple(self.layers), style=self.style, epochs=epochs, precision=precision,
            max_feedback_tokens=FIT_TOKENS, scale=FIT_SCALE,
        )  # fmt: skip


@dataclass
class Plan:
    """What is already there and what a run still has to build."""

    saes_dir: Path
    offsets_dir: Path
    layers_done: list[int]
    layers_todo: list[int]
    offsets_done: bool

    @property
    def nothing_to_do(self) -> bool:
        return not self.layers_todo and self.offsets_done

    def describe(self) -> str:
        parts = []
        if self.layers_todo:
            parts.append(f"SAEs + prototypes for layers {layers_label(self.layers_todo)}")
        if not self.offsets_done:
            parts.append("the learned offsets")
        return "nothing (all built and verified)" if not parts else " and ".join(parts)


def _dirs(lm, style: str, out: str | Path | None) -> tuple[Path, Path]:
    if out is None:
        return user_root(lm, style), offsets_roots(lm, style)[0]
    return Path(out) / "saes", Path(out) / "offsets"


def _layer_ok(d: Path) -> bool:
    try:
        verify_layer(d)
        return True
    except SAEFileError:
        return False


def plan(lm, cfg: PrepareConfig, out: str | Path | None = None) -> Plan:
    """Check what exists (verified) before doing any work."""
    layers = [lm.check_layer(layer) for layer in cfg.layers]
    saes_dir, offsets_dir = _dirs(lm, cfg.style, out)
    if out is None:  # the layer the store would load (the user's, else the shipped one) must verify
        found = {layer: STORE.find(lm, layer, cfg.style) for layer in layers}
        done = [layer for layer, d in found.items() if d is not None and _layer_ok(d)]
    else:
        done = [layer for layer in layers if _layer_ok(saes_dir / f"layer_{layer}")]
    todo = [layer for layer in layers if layer not in done]
    if out is None:  # the model's own offsets: the user's fit, else the shipped ones
        offsets_dir = next((d for d in offsets_roots(lm, cfg.style) if (d / OFFSETS_CFG).is_file()), offsets_dir)
    offsets_done = False
    if not todo and (offsets_dir / OFFSETS_CFG).is_file():
        try:
            off = LevelOffsets.load(offsets_dir)
            offsets_done = off.site == "sae" and set(layers) <= set(off.layers)
            if offsets_done:
                off.check_matches(_banks(lm, cfg, out))
        except OffsetsFileError:
            offsets_done = False
    if out is None and not offsets_done:
        _check_not_shadowing(offsets_dir, layers)
    return Plan(saes_dir, offsets_dir, done, todo, offsets_done)


def _check_not_shadowing(offsets_dir: Path, layers: list[int]) -> None:
    """A new fit into the model's own folder replaces the offsets the default steering reads: refuse
    one that would drop layers they cover (offsets are fitted jointly, so layers cannot be merged)."""
    try:
        have = LevelOffsets.load(offsets_dir).layers if (offsets_dir / OFFSETS_CFG).is_file() else []
    except OffsetsFileError:
        return  # broken offsets are rebuilt, nothing to keep
    lost = sorted(set(have) - set(layers))
    if lost:
        raise UserError(
            f"this model's learned offsets cover layers {layers_label(have)}; offsets fitted for "
            f"{layers_label(layers)} alone would replace them and layers {layers_label(lost)} would lose "
            "theirs. Prepare those layers too, or build into a folder of its own (--out DIR)."
        )


def _banks(lm, cfg: PrepareConfig, out) -> dict:
    root = None if out is None else Path(out) / "saes"
    return STORE.get_many(lm, cfg.layers, style=cfg.style, root=root)


def prepare(lm, cfg: PrepareConfig | None = None, out: str | Path | None = None, progress: bool = True) -> dict:
    """Build what `plan` finds missing and write the manifest; returns it."""
    from .offsets import fit_offsets
    from .sae_training import capture_train_queries, train_layers

    cfg = cfg or PrepareConfig()
    todo = plan(lm, cfg, out)
    rows = cfg.rows() if todo.layers_todo or not todo.offsets_done else []
    timings: dict = {}
    fit_rows = cfg.fit_rows(rows)
    fit_cfg = None if todo.offsets_done else cfg.offsets or cfg.default_fit(fit_rows)
    t_all = time.time()
    captured = None
    if todo.layers_todo:
        t0 = time.time()
        # the offsets fit's reference (the unsteered likelihood of each reply) is read in the same forward
        score = fit_cfg.max_feedback_tokens if fit_cfg is not None and fit_cfg.objective != "kl" else None
        captured = capture_train_queries(lm, todo.layers_todo, cfg.style, progress, rows, score_tokens=score)
        timings["capture_seconds"] = round(time.time() - t0, 1)
        results = train_layers(
            lm, todo.layers_todo, todo.saes_dir, cfg.sae, style=cfg.style, progress=progress, captured=captured
        )
        timings["sae_seconds_per_layer"] = {str(layer): r["seconds"] for layer, r in results.items()}
    if not todo.offsets_done:
        if tuple(fit_cfg.layers) != tuple(cfg.layers):
            raise UserError("the offsets must be fitted for the layers prepared")
        t0 = time.time()
        reference = None
        if captured is not None and captured.reply_logprobs is not None:  # the fit rows' own, in their order
            kept = {id(r) for r in fit_rows}
            reference = captured.reply_logprobs[[i for i, r in enumerate(rows) if id(r) in kept]]
        offsets = fit_offsets(lm, fit_rows, fit_cfg, _banks(lm, cfg, out), progress, reference=reference)
        todo.offsets_dir = _dirs(lm, cfg.style, out)[1]  # a new fit goes to the user's folder, never the shipped one
        offsets.save(todo.offsets_dir)
        forget_offsets(todo.offsets_dir)  # a running app steers with the new fit from its next request
        timings["offsets_seconds"] = round(time.time() - t0, 1)
    if cfg.cards:
        t0 = time.time()
        _cards(lm, cfg, out, rows, captured, progress)
        timings["cards_seconds"] = round(time.time() - t0, 1)
    manifest = {
        "model": lm.name,
        "model_key": lm.key,
        "adapter": lm.adapter,
        "device": str(lm.device),
        "layers": list(cfg.layers),
        "config": asdict(cfg) | {"offsets": asdict(fit_cfg) if fit_cfg else "kept: already built for these SAEs"},
        "saes": str(todo.saes_dir),
        "offsets": str(todo.offsets_dir),
        "built": todo.describe(),
        "reused_layers": todo.layers_done,
        "timings": timings | {"total_seconds": round(time.time() - t_all, 1)},
        "files": _digests(todo, cfg.layers),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    root = cache_root() / "prepared" / lm.folder(cfg.style) if out is None else Path(out)
    atomic_write_text(root / MANIFEST, json.dumps(manifest, indent=1))
    manifest["manifest"] = str(root / MANIFEST)
    return manifest


def _cards(lm, cfg: PrepareConfig, out, rows, captured, progress: bool) -> None:
    """The latent cards of the prepared layers, from the queries captured for their SAEs when this run captured
    them (None otherwise; the same rows: not captured twice)."""
    from ..inspect.cards import cards_root
    from .cards import build_cards

    cards_dir = cards_root(lm, cfg.style) if out is None else Path(out) / "cards"
    banks = _banks(lm, cfg, out)
    build_cards(
        lm, list(cfg.layers), cards_dir, cfg.style, progress=progress, rows=rows or cfg.rows(), banks=banks,
        captured=captured,
    )  # fmt: skip


def _digests(p: Plan, layers) -> dict:
    """The hash of each layer's manifest (which hashes its files) and of the offsets file."""
    out = {}
    for layer in layers:
        d = p.saes_dir / f"layer_{layer}" / "layer.json"
        if d.is_file():
            out[f"layer_{layer}"] = hashlib.sha256(d.read_bytes()).hexdigest()
    f = p.offsets_dir / OFFSETS_FILE
    if f.is_file():
        out["offsets"] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out
