"""Regenerate recorded result rows with what ships, and say which come back token for token.

A figure is only a result if the files behind it ship and reproduce it: a row of results.csv names its
scenario, method, target level, layers and (in its `config` column) every other steering setting, so
greedy decoding with the shipped model, adapter, SAEs and offsets must give the same text again.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from .. import methods
from ..bloom import load_dataset, scenarios
from ..errors import UserError
from ..generation import EVAL_TOKENS, Request, generate_batch
from ..layer_spec import parse_layers
from ..methods import PLAIN
from ..steering.config import SteerConfig
from ..steering.files import MODEL_OWN, SteerFiles
from .results import row_prompt

LEGACY_FIELDS = {"saes": "saes_dir", "offsets": "offsets_dir", "residual": "residual_dir"}  # before "_dir"


def row_config(row: dict) -> SteerConfig | None:
    """The SteerConfig a result row was generated with (None for unsteered and prompt-only rows);
    UserError for a steered row written before results carried their settings (no `config`)."""
    if row["method"] not in methods.steered():
        return None
    fields = _config_fields(row)
    SteerFiles.pop_fields(fields)
    try:  # the scale it ran at, in the target's own units: what strength 1 means may change, alpha not
        alpha = float(row.get("alpha") or "nan")
    except ValueError:
        alpha = float("nan")
    if alpha == alpha:
        fields["strength"] = SteerConfig.strength_for(
            fields.get("target", "learned"), alpha, row["method"], fields.get("prompt", PLAIN)
        )
    return SteerConfig(method=row["method"], layers=parse_layers(row["layers"]), **fields)


def row_files(row: dict) -> SteerFiles:
    """The folders a result row steered with (the model's own for unsteered and prompt-only rows)."""
    if row["method"] not in methods.steered():
        return MODEL_OWN
    return SteerFiles.pop_fields(_config_fields(row))


def _config_fields(row: dict) -> dict:
    """A steered row's config column as a dict, the folder fields under today's names."""
    raw = row.get("config") or ""
    if raw in ("", "-"):
        raise UserError(
            f"row {row['scenario_id']}/{row['method']}/{row['level']} ({row.get('setting')}) has no config column: "
            "it was written before results recorded their settings and cannot be regenerated exactly"
        )
    fields = json.loads(raw)
    for old, new in LEGACY_FIELDS.items():  # rows written before the folder fields said they are folders
        if old in fields:
            fields[new] = fields.pop(old)
    return fields


def row_request(row: dict, by_id: dict, steer: SteerConfig | None = None) -> Request:
    """The request that wrote a result row (its scenario looked up by id in the dataset); `steer`: steer
    with this config instead of the recorded one (a method's shipped default, for rows it should give)."""
    sc = by_id.get(row["scenario_id"])
    if sc is None:
        raise UserError(f"scenario {row['scenario_id']!r} is not in the dataset")
    level = None if row["level"] in ("-", "") else row["level"]
    return Request(
        sc.question,
        sc.student_answer,
        row["method"],
        level,
        steer=(steer if steer is not None and row["method"] in methods.steered() else row_config(row)),
        files=MODEL_OWN if steer is not None else row_files(row),
        style=row.get("style") or "plain",
        scenario_id=sc.scenario_id,
        prompt=row_prompt(row) if row["method"] in methods.steered() else None,  # a default steers under it too
    )


def reproduce_rows(
    lm, rows: Sequence[dict], max_new_tokens: int = EVAL_TOKENS, steer: SteerConfig | None = None
) -> list[dict]:
    """Regenerate `rows` in one greedy batch (steered rows with their recorded settings, or with `steer`);
    for each: its identity, the recorded and the new text, and whether they are the same token for token
    (as decoded text)."""
    if not rows:
        return []
    by_id = {s.scenario_id: s for s in scenarios(load_dataset())}
    outs = generate_batch(lm, [row_request(r, by_id, steer) for r in rows], max_new_tokens=max_new_tokens)
    return [
        {
            "scenario_id": r["scenario_id"],
            "method": r["method"],
            "level": r["level"],
            "layers": r["layers"],
            "setting": r.get("setting", ""),
            "recorded": r["text"],
            "regenerated": o.text,
            "same": o.text == r["text"],
        }
        for r, o in zip(rows, outs)
    ]
