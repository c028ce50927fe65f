"""summary.csv: per variant and target level, and per variant overall ("ALL"), the target accuracy,
the judged-level distribution, the correlation of judged with target level, perplexity, similarity
to the unsteered text and length, with 95% bootstrap intervals over scenarios."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from ..bloom import LEVELS
from .results import row_key, row_prompt

SUMMARY_FIELDS = [
    "model",
    "style",
    "method",
    "layers",
    "setting",
    "level",
    "n",
    "n_scenarios",
    "accuracy",
    "accuracy_lo",
    "accuracy_hi",
    "mean_level_index",
    "level_shift",
    "level_corr",
    "level_corr_lo",
    "level_corr_hi",
    "ppl",
    "ppl_ratio",
    "similarity",
    "words",
] + [f"judged_{lv}" for lv in LEVELS]
BOOTSTRAP_DRAWS = 2000


def _scenario_stats(ws: np.ndarray, sc: np.ndarray, t: np.ndarray, p: np.ndarray, n_sc: int):
    """Accuracy and the judged-vs-target correlation for each row of scenario multiplicities ws
    (draws, n_sc), from per-scenario sums, so every bootstrap draw is one matrix product."""
    cnt = ws @ np.bincount(sc, minlength=n_sc)
    acc = (ws @ np.bincount(sc, weights=(t == p).astype(float), minlength=n_sc)) / cnt
    m = {}
    for name, v in (("t", t), ("p", p), ("tt", t * t), ("pp", p * p), ("tp", t * p)):
        m[name] = (ws @ np.bincount(sc, weights=v, minlength=n_sc)) / cnt
    vt, vp = m["tt"] - m["t"] ** 2, m["pp"] - m["p"] ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (m["tp"] - m["t"] * m["p"]) / np.sqrt(vt * vp)
    return acc, r


def _resample(n_sc: int, draws: int, seed: int) -> np.ndarray:
    """(draws, n_sc) multiplicities of scenarios drawn with replacement."""
    rng = np.random.default_rng(seed)
    return np.stack([np.bincount(rng.integers(0, n_sc, n_sc), minlength=n_sc) for _ in range(draws)]).astype(float)


def _interval(values: np.ndarray) -> tuple[float, float]:
    values = values[np.isfinite(values)]
    if not len(values):
        return float("nan"), float("nan")
    lo, hi = np.percentile(values, [2.5, 97.5])
    return float(lo), float(hi)


def bootstrap_over_scenarios(
    scenario_ids: Sequence[str],
    targets: Sequence[int],
    preds: Sequence[int],
    draws: int = BOOTSTRAP_DRAWS,
    seed: int = 0,
) -> dict:
    """Accuracy and the judged-vs-target level correlation, with 95% percentile intervals from
    resampling whole scenarios (a scenario's rows share a question, so they are not independent)."""
    sids = sorted(set(scenario_ids))
    index = {s: i for i, s in enumerate(sids)}
    sc = np.array([index[s] for s in scenario_ids])
    t, p = np.asarray(targets, dtype=float), np.asarray(preds, dtype=float)
    n_sc = len(sids)
    acc, r = _scenario_stats(np.ones((1, n_sc)), sc, t, p, n_sc)
    accs, rs = _scenario_stats(_resample(n_sc, draws, seed), sc, t, p, n_sc)
    lo, hi = _interval(accs)
    rlo, rhi = _interval(rs)
    return {
        "accuracy": float(acc[0]),
        "accuracy_lo": lo,
        "accuracy_hi": hi,
        "level_corr": float(r[0]),
        "level_corr_lo": rlo,
        "level_corr_hi": rhi,
        "n_scenarios": n_sc,
    }


def paired_difference(
    a: tuple[Sequence[str], Sequence[int], Sequence[int]],
    b: tuple[Sequence[str], Sequence[int], Sequence[int]],
    draws: int = BOOTSTRAP_DRAWS,
    seed: int = 0,
) -> dict:
    """Accuracy and r of rows a minus rows b (each: scenario ids, targets, predictions), with 95%
    intervals from resampling the scenarios both cover, the same draw for both: a scenario that is
    hard for one method is hard for the other, so the paired interval is narrower than the two
    separate ones, and a difference whose interval excludes 0 is one the data show."""
    common = sorted(set(a[0]) & set(b[0]))
    if not common:
        raise ValueError("the two rows share no scenario")
    index = {s: i for i, s in enumerate(common)}
    n_sc = len(common)
    ws = _resample(n_sc, draws, seed)
    point, boot = [], []
    for sids, targets, preds in (a, b):
        keep = [i for i, s in enumerate(sids) if s in index]
        sc = np.array([index[sids[i]] for i in keep])
        t = np.asarray([targets[i] for i in keep], dtype=float)
        p = np.asarray([preds[i] for i in keep], dtype=float)
        point.append(_scenario_stats(np.ones((1, n_sc)), sc, t, p, n_sc))
        boot.append(_scenario_stats(ws, sc, t, p, n_sc))
    acc = float(point[0][0][0] - point[1][0][0])
    r = float(point[0][1][0] - point[1][1][0])
    acc_lo, acc_hi = _interval(boot[0][0] - boot[1][0])
    r_lo, r_hi = _interval(boot[0][1] - boot[1][1])
    return {
        "accuracy_diff": acc,
        "accuracy_diff_lo": acc_lo,
        "accuracy_diff_hi": acc_hi,
        "level_corr_diff": r,
        "level_corr_diff_lo": r_lo,
        "level_corr_diff_hi": r_hi,
        "n_scenarios": n_sc,
    }


VARIANT = ("model", "style", "method", "layers", "setting")  # what tells two rows of a summary apart


def variant_text(layers: str, setting: str) -> str:
    """A variant's layer set and steering setting as one label ("15 learned a16"; "-" for neither)."""
    return layers if setting in ("-", "", None) else f"{layers} {setting}"


def judged_frame(rows: list[dict], similarity: dict[tuple, float] | None = None) -> pd.DataFrame:
    """One judged generation a row, with its target level index and hit; an unsteered text counts once
    for every target level (it does not depend on the target). A variant is (model, style, method,
    layer set, steering setting)."""
    similarity = similarity or {}
    df = pd.DataFrame(
        {
            "model": [r["model"] for r in rows],
            "style": [r["style"] for r in rows],
            "method": [r["method"] for r in rows],
            "layers": [r["layers"] for r in rows],
            "setting": [r.get("setting") or "-" for r in rows],
            "prompt": [row_prompt(r) for r in rows],
            "level": [r["level"] for r in rows],
            "scenario_id": [r["scenario_id"] for r in rows],
            "pred_index": [int(r["pred_index"]) for r in rows],
            "ppl": pd.to_numeric(pd.Series([r["ppl"] for r in rows], dtype=object), errors="coerce"),
            "similarity": [similarity.get(row_key(r), np.nan) for r in rows],
            "words": [len(str(r["text"]).split()) for r in rows],
        }
    )
    unsteered = df["method"] == "none"
    df = pd.concat([df[~unsteered]] + [df[unsteered].assign(level=lv) for lv in LEVELS], ignore_index=True)
    df["target"] = df["level"].map(LEVELS.index)
    df["hit"] = (df["pred_index"] == df["target"]).astype(float)
    return df


def paired_rows(df: pd.DataFrame, variant: tuple) -> tuple[list[str], list[int], list[int]]:
    """(scenario ids, targets, predictions) of one variant of a judged frame, for paired_difference."""
    g = df[(df[list(VARIANT)] == pd.Series(variant, index=list(VARIANT))).all(axis=1)]
    return g["scenario_id"].tolist(), g["target"].tolist(), g["pred_index"].tolist()


def summarize(rows: list[dict], similarity: dict[tuple, float] | None = None) -> list[dict]:
    """Per (model, style, method, variant, level) and per (model, style, method, variant) overall
    (level "ALL"). A variant is the layer set plus the steering setting. Unsteered rows carry one text
    per scenario, scored against every target level. Overall rows average the per-level figures
    (perplexity: the median of the per-level medians) and bootstrap accuracy and r over scenarios."""
    if not rows:
        return []
    df = judged_frame(rows, similarity)
    per = per_level_summary(df)
    overall = [overall_summary(key, g, per) for key, g in df.groupby(list(VARIANT), sort=True)]
    out = per.to_dict("records") + overall
    _against_unsteered(out)
    return out


def per_level_summary(df: pd.DataFrame) -> pd.DataFrame:
    """One row per variant and target level of a judged frame: counts, accuracy, mean judged level, perplexity,
    similarity, length and the judged-level shares, rounded, in the summary's row order."""
    variant = list(VARIANT)
    shares = pd.crosstab([df[k] for k in [*variant, "level"]], df["pred_index"], normalize="index")
    shares = shares.reindex(columns=range(len(LEVELS)), fill_value=0.0)
    shares.columns = [f"judged_{lv}" for lv in LEVELS]
    per = df.groupby([*variant, "level"]).agg(
        n=("hit", "size"),
        n_scenarios=("scenario_id", "nunique"),
        accuracy=("hit", "mean"),
        mean_level_index=("pred_index", "mean"),
        ppl=("ppl", "median"),
        similarity=("similarity", "mean"),
        words=("words", "mean"),
    )
    per = per.join(shares).reset_index()
    digits = {"accuracy": 4, "mean_level_index": 3, "ppl": 3, "similarity": 3, "words": 1}
    digits.update({c: 4 for c in shares.columns})
    for col, d in digits.items():  # Python's round, as every other figure of the summary
        per[col] = per[col].map(lambda v, d=d: round(float(v), d))
    # unsteered per-level rows in the levels' order, the others by level name (as before pandas)
    per["_order"] = np.where(per["method"] == "none", per["level"].map(LEVELS.index).astype(str), per["level"])
    return per.sort_values([*variant, "_order"], kind="stable").drop(columns="_order")


def overall_summary(key: tuple, g: pd.DataFrame, per: pd.DataFrame) -> dict:
    """The "ALL" row of one variant (`key`, its rows `g` of the judged frame): accuracy and r bootstrapped over
    scenarios (a scenario's rows are not independent), the judged-level shares of all its rows, and the per-level
    figures of `per` averaged (perplexity: the median of the per-level medians)."""
    variant = list(VARIANT)
    boot = bootstrap_over_scenarios(g["scenario_id"].tolist(), g["target"].tolist(), g["pred_index"].tolist())
    ci = {k: round(v, 4) if isinstance(v, float) else v for k, v in boot.items()}
    if key[2] == "none":  # the judged level does not depend on the target: no correlation to report
        ci.update(level_corr=float("nan"), level_corr_lo=float("nan"), level_corr_hi=float("nan"))
    levels = per[(per[variant] == pd.Series(key, index=variant)).all(axis=1)]
    counts = np.bincount(g["pred_index"], minlength=len(LEVELS)) / len(g)
    sim = levels["similarity"]
    return {
        **dict(zip(variant, key)),
        "level": "ALL",
        "n": int(levels["n"].sum()),
        **ci,
        **{f"judged_{lv}": round(float(f), 4) for lv, f in zip(LEVELS, counts)},
        "mean_level_index": round(float(levels["mean_level_index"].mean()), 3),
        "ppl": round(float(levels["ppl"].median()), 3),
        "similarity": round(float(sim.mean()), 3) if sim.notna().any() else float("nan"),
        "words": round(float(levels["words"].mean()), 1),
    }


def _against_unsteered(out: list[dict]) -> None:
    """In place: plain int and float figures (CSV and JSON write them alike), and each row's level shift and
    perplexity ratio against the unsteered row of the same model, prompt style and level (NaN where there is none)."""
    base = {(s["model"], s["style"], s["level"]): s for s in out if s["method"] == "none"}
    for s in out:
        for k in ("n", "n_scenarios"):
            if k in s:
                s[k] = int(s[k])
        for k in ("accuracy", "mean_level_index", "ppl", "similarity", "words"):
            s[k] = float(s[k])
        b = base.get((s["model"], s["style"], s["level"]))
        s["level_shift"] = round(s["mean_level_index"] - b["mean_level_index"], 3) if b else float("nan")
        s["ppl_ratio"] = round(s["ppl"] / b["ppl"], 3) if b and b["ppl"] and np.isfinite(b["ppl"]) else float("nan")
