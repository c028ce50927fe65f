"""Scoring generated rows: the judge's level and probabilities, and similarity to the unsteered text."""

from __future__ import annotations

import json

from ..bloom import LEVELS
from .results import row_key


def add_judgements(rows: list[dict], judge=None) -> list[dict]:
    from ..judge.classifier import default_judge

    judge = judge or default_judge()
    probs = judge.predict_proba([r["text"] or "" for r in rows])
    for r, p in zip(rows, probs):
        r["pred"] = LEVELS[int(p.argmax())]
        r["pred_index"] = int(p.argmax())
        r["target_prob"] = round(float(p[LEVELS.index(r["level"])]), 4) if r["level"] in LEVELS else ""
        r["probs"] = json.dumps([round(float(v), 4) for v in p])
    return rows


def unsteered_similarity(rows: list[dict]) -> dict[tuple, float]:
    """row_key -> MiniLM cosine between a row's text and the unsteered text of its scenario: how much
    of the original feedback survives steering (1 = unchanged)."""
    from ..judge.classifier import embed

    base = {(r["scenario_id"], r["style"], r["model"]): r["text"] for r in rows if r["method"] == "none"}
    pairs = [(r, base.get((r["scenario_id"], r["style"], r["model"]))) for r in rows]
    pairs = [(r, b) for r, b in pairs if b is not None]
    if not pairs:
        return {}
    a = embed([r["text"] or " " for r, _ in pairs])
    b = embed([t or " " for _, t in pairs])
    sims = (a * b).sum(-1)
    return {row_key(r): float(s) for (r, _), s in zip(pairs, sims)}
