"""Which files steering reads, apart from how it steers: a SteerConfig says how (method, layers, strength, ...),
a SteerFiles says from which folders (the loaded model's own unless given). One setting runs on any files; a
result row records both, under the column names it always had."""

from __future__ import annotations

from dataclasses import dataclass

FIELDS = {"saes": "saes_dir", "offsets": "offsets_dir", "residual": "residual_dir"}  # -> a result row's config keys


@dataclass(frozen=True)
class SteerFiles:
    """Folders to steer with instead of the model's own (None: the model's own): layer_<l>/ SAEs and
    prototypes, learned offsets (targets that need them), residual-stream vectors (the residual method)."""

    saes: str | None = None
    offsets: str | None = None
    residual: str | None = None

    def as_fields(self) -> dict:
        """The folders under a result row's config keys (saes_dir, offsets_dir, residual_dir)."""
        return {key: getattr(self, name) for name, key in FIELDS.items()}

    @classmethod
    def pop_fields(cls, fields: dict) -> SteerFiles:
        """The folders out of a result row's config fields (removed from `fields`)."""
        return cls(**{name: fields.pop(key, None) for name, key in FIELDS.items()})


MODEL_OWN = SteerFiles()
