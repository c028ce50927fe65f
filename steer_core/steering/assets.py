"""The files a batch's steering reads, resolved before any generation starts: each steered row's config, with
the layers' SAEs and prototypes, the learned offsets its target needs, or the residual-stream vectors,
grouped by site. What a method needs is read from its registry entry (methods.Method.needs) and what a
target needs from its own (targets.Target.needs_offsets), so rows that steer nothing read no file."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .. import methods
from ..bloom import LEVELS
from ..model.hooks import RESIDUAL
from ..sae.store import STORE, layer_roots
from .edits import RowGroup
from .files import SteerFiles
from .offset_files import load_offsets, manifest_digest


def steering_groups(lm, requests: Sequence) -> dict:
    """site -> row groups sharing one SteerConfig, files and prompt style, each with its layer's bank (a site is
    a layer's queries, or ("residual", layer) for the residual-stream vectors). Layers and heads are checked
    here, before any generation starts. `requests`: generation.Request rows (steer, files, style, level)."""
    by_cfg: dict[tuple, list[int]] = {}
    for i, r in enumerate(requests):
        if r.steer is not None and methods.get(r.steer.method).steers:
            by_cfg.setdefault((r.steer, r.files, r.style), []).append(i)
    out: dict = {}
    for (cfg, files, style), rows in by_cfg.items():
        row_idx = torch.tensor(rows, device=lm.device)
        levels = torch.tensor([LEVELS.index(requests[i].level) for i in rows], device=lm.device)
        needs = methods.get(cfg.method).needs
        if methods.RESIDUAL_VECTORS in needs:
            _residual_groups(lm, cfg, files, style, row_idx, levels, out)
        if methods.SAES in needs:
            _query_groups(lm, cfg, files, style, row_idx, levels, out)
    return out


def _residual_groups(lm, cfg, files: SteerFiles, style: str, row_idx, levels, out: dict) -> None:
    vectors = load_offsets(lm, files.residual, style, site="residual")
    for layer in cfg.layers:
        layer = lm.check_layer(layer)
        group = RowGroup(row_idx, levels, cfg, offsets=vectors.for_layer(layer), gate=vectors.gate_for_layer(layer))
        out.setdefault((RESIDUAL, layer), []).append(group)


def _query_groups(lm, cfg, files: SteerFiles, style: str, row_idx, levels, out: dict) -> None:
    learned = None
    if methods.get(cfg.method).has_codes and cfg.target_spec.needs_offsets:  # before the SAEs: say what is missing
        learned = load_offsets(lm, files.offsets, style)
        for layer in cfg.layers:
            learned.for_layer(lm.check_layer(layer))
    banks = STORE.get_many(lm, cfg.layers, style=style, root=files.saes)
    if learned is not None:
        if files.saes is None:
            banks = _banks_of(lm, learned, banks, style)
        learned.check_matches(banks)
    for layer, bank in banks.items():
        heads = cfg.heads_at(layer)
        heads = lm.check_heads("all" if heads is None else list(heads))
        head_idx = None if len(heads) == lm.n_heads else torch.tensor(heads, device=lm.device)
        offsets, gate = (None, None) if learned is None else (learned.for_layer(layer), learned.gate_for_layer(layer))
        group = RowGroup(row_idx, levels, cfg, bank, heads=head_idx, offsets=offsets, gate=gate)
        out.setdefault(layer, []).append(group)


def _banks_of(lm, learned, banks: dict, style: str) -> dict:
    """Offsets are codes of the SAEs they were fitted for: a layer whose newest SAEs (say, retrained in
    the Train tab) are others steers with the ones the offsets were fitted for, while those are still
    on disk (the shipped ones); descent targets use the newest."""
    want = learned.meta.get("sae_manifests", {})
    out = dict(banks)
    for layer, bank in banks.items():
        if str(layer) not in want or manifest_digest(bank.meta) == want[str(layer)]:
            continue
        for root in layer_roots(lm, style)[1:]:
            if (root / f"layer_{layer}" / "layer.json").is_file():
                other = STORE.get(lm, layer, style, root=root)
                if manifest_digest(other.meta) == want[str(layer)]:
                    out[layer] = other
                    break
    return out
