"""Learned offsets on disk and in memory: the files `fit-offsets` writes (offsets.safetensors +
offsets.json, with the hash that verifies them), where a model's offsets are looked for, and
loading them once per process. Generation needs only this module; the fitting is in `offsets`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..bloom import LEVELS
from ..caches import ProcessCache
from ..errors import UserError
from ..io_utils import atomic_write_bytes, atomic_write_text
from ..paths import ASSET_OFFSETS, ASSET_RESIDUAL, cache_root
from ..prompts import DEFAULT_STYLE

OFFSETS_FILE = "offsets.safetensors"
OFFSETS_CFG = "offsets.json"
SITES = ("sae", "residual")  # offsets of the query SAEs' codes, or vectors added to the residual stream


class OffsetsFileError(UserError):
    """An offsets folder that is missing, corrupt, or made for other SAEs or another model."""


def _site_words(site: str) -> tuple[str, str]:
    """What a site's fitted file holds, and the fit-offsets flag that builds it, for messages."""
    return ("residual-stream vectors", " --site residual") if site == "residual" else ("learned offsets", "")


@dataclass
class LevelOffsets:
    """Fitted offsets: delta (levels, layers, heads, d_sae), for the SAEs whose manifests are named; for
    the residual site (meta "site"), delta (levels, layers, 1, hidden). A per-token fit also has a gate, (levels,
    layers, hidden + 1) at the residual site or (levels, layers, heads, head_dim + 1) at the SAE site: each
    token's coefficient on its level's edit is read from the token's own activation (edits.token_coefficients),
    so the edit can push where the level is written and stay light elsewhere."""

    delta: torch.Tensor
    layers: tuple[int, ...]
    meta: dict = field(default_factory=dict)
    gate: torch.Tensor | None = None

    @property
    def site(self) -> str:
        return self.meta.get("site", "sae")

    def for_layer(self, layer: int) -> torch.Tensor:
        """(levels, heads, d_sae) offsets of one layer; residual site: (levels, hidden)."""
        if layer not in self.layers:
            what, site = _site_words(self.site)
            raise OffsetsFileError(
                f"no {what} for layer {layer} (fitted for layers "
                f"{', '.join(map(str, self.layers))}); fit them with `python -m steer_core "
                f"fit-offsets{site} --layers ...` or choose those layers"
            )
        d = self.delta[:, self.layers.index(layer)]
        return d[:, 0] if self.site == "residual" else d

    def gate_for_layer(self, layer: int) -> torch.Tensor | None:
        """The per-token coefficient's weights and bias at one layer, (levels, hidden + 1) or (levels, heads,
        head_dim + 1); None: a constant edit."""
        self.for_layer(layer)  # the same message for a layer that was not fitted
        return None if self.gate is None else self.gate[:, self.layers.index(layer)]

    def sparsity(self) -> dict:
        nz = self.delta != 0
        return {
            "nonzero_fraction": round(float(nz.float().mean()), 5),
            "nonzero_per_head": round(float(nz.sum(-1).float().mean()), 2),
        }

    def save(self, out_dir: str | Path) -> Path:
        from safetensors.torch import save

        d = Path(out_dir)
        d.mkdir(parents=True, exist_ok=True)
        (d / OFFSETS_CFG).unlink(missing_ok=True)  # unfinished until the config is back
        tensors = {"delta": self.delta}
        if self.gate is not None:
            tensors["gate"] = self.gate
        blob = save({k: t.detach().float().cpu().contiguous() for k, t in tensors.items()})
        atomic_write_bytes(d / OFFSETS_FILE, blob)
        cfg = {
            **self.meta,
            "layers": list(self.layers),
            "levels": list(LEVELS),
            "shape": list(self.delta.shape),
            "sha256": hashlib.sha256(blob).hexdigest(),
        }
        atomic_write_text(d / OFFSETS_CFG, json.dumps(cfg, indent=1))
        return d

    @classmethod
    def load(cls, d: str | Path, device="cpu") -> LevelOffsets:
        from safetensors.torch import load

        d = Path(d)
        cpath, fpath = d / OFFSETS_CFG, d / OFFSETS_FILE
        if not cpath.is_file() or not fpath.is_file():
            raise OffsetsFileError(f"{d}: no learned offsets here (expected {OFFSETS_CFG} and {OFFSETS_FILE})")
        try:
            cfg = json.loads(cpath.read_text())
            layers = tuple(int(x) for x in cfg["layers"])
            digest = cfg["sha256"]
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            raise OffsetsFileError(f"{cpath}: unreadable config") from None
        blob = fpath.read_bytes()
        if hashlib.sha256(blob).hexdigest() != digest:
            raise OffsetsFileError(f"{fpath}: contents do not match {OFFSETS_CFG} (corrupt or edited)")
        tensors = load(blob)
        delta, gate = tensors.get("delta"), tensors.get("gate")
        if delta is None or delta.dim() != 4 or delta.shape[0] != len(LEVELS) or delta.shape[1] != len(layers):
            raise OffsetsFileError(f"{fpath}: delta must have shape (6, {len(layers)}, heads, d_sae)")
        residual = cfg.get("site") == "residual"
        if gate is not None and (
            gate.shape[:2] != (len(LEVELS), len(layers))
            or (residual and gate.shape[2:] != (delta.shape[-1] + 1,))
            or (not residual and (gate.dim() != 4 or gate.shape[2] != delta.shape[2]))
        ):
            want = f"(6, {len(layers)}, hidden + 1)" if residual else f"(6, {len(layers)}, heads, head_dim + 1)"
            raise OffsetsFileError(f"{fpath}: gate must have shape {want}")
        if not all(torch.isfinite(t).all() for t in tensors.values()):
            raise OffsetsFileError(f"{fpath}: the offsets hold NaN or infinite values")
        return cls(delta.to(device), layers, cfg, None if gate is None else gate.to(device))

    def check_matches(self, banks: dict) -> None:
        """Offsets are codes of particular SAEs: refuse them for any others."""
        if self.site != "sae":
            raise OffsetsFileError("these are residual-stream vectors, not offsets of SAE codes")
        want = self.meta.get("sae_manifests", {})
        for layer, bank in banks.items():
            have = manifest_digest(bank.meta)
            if str(layer) in want and want[str(layer)] != have:
                raise OffsetsFileError(
                    f"learned offsets of layer {layer} were fitted for other SAEs than the ones "
                    "loaded; refit them (`python -m steer_core fit-offsets`)"
                )
            if bank.sae.n_heads != self.delta.shape[2] or bank.sae.d_sae != self.delta.shape[3]:
                raise OffsetsFileError(
                    f"learned offsets have {self.delta.shape[2]} heads x {self.delta.shape[3]} "
                    f"latents, the SAEs of layer {layer} {bank.sae.n_heads} x {bank.sae.d_sae}"
                )


def manifest_digest(manifest: dict) -> str:
    """Identity of a layer's SAEs: the hashes of their weight and config files (not the prototypes,
    which offsets do not use, so a cross-writer fold's offsets stay valid for the shipped SAEs)."""
    files = {k: v for k, v in manifest.get("files", {}).items() if k.startswith("head_")}
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:16]


def offsets_roots(lm, style: str = DEFAULT_STYLE, site: str = "sae") -> list[Path]:
    """Where a model's learned offsets (or residual vectors) are looked for: the user's own fit first,
    then the shipped one."""
    if site == "residual":
        return [cache_root() / "residual" / lm.folder(style), ASSET_RESIDUAL / lm.folder(style)]
    return [cache_root() / "offsets" / lm.folder(style), ASSET_OFFSETS / lm.folder(style)]


_LOADED = ProcessCache("learned offsets")


def load_offsets(lm, folder: str | Path | None = None, style: str = DEFAULT_STYLE, site: str = "sae") -> LevelOffsets:
    """The learned offsets (site "sae") or residual vectors in `folder`, or the model's own (user fit,
    else shipped); loaded once."""
    what, flag = _site_words(site)
    if folder is None:
        found = [d for d in offsets_roots(lm, style, site) if (d / OFFSETS_CFG).is_file()]
        if not found:
            build = (
                f"`python -m steer_core fit-offsets{flag}`"
                if flag
                else f"`python -m steer_core prepare --model {lm.name}` (SAEs, prototypes and offsets; "
                "`fit-offsets` fits the offsets alone)"
            )
            raise OffsetsFileError(
                f"no {what} for {lm.key} ({style} prompt); build them with {build}, or choose another steering target"
            )
        folder = found[0]
    key = (str(Path(folder).resolve()), str(lm.device))
    got = _LOADED.get(key, lambda: LevelOffsets.load(folder, lm.device))
    if got.site != site:
        raise OffsetsFileError(f"{folder}: these are {got.site} offsets, not {what}")
    return got


def forget_offsets(folder: str | Path) -> None:
    """Drop a folder's loaded offsets (a new fit was written there), so the next load reads the files."""
    path = str(Path(folder).resolve())
    _LOADED.forget(where=lambda key: key[0] == path)
