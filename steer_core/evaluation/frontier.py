"""The frontier: each steering method along its strength curve, accuracy against fluency (perplexity as
a ratio to unsteered), and methods read off at the same perplexity, with intervals over scenarios.

A method that reads higher at a higher perplexity has not been shown to be better: strength trades the
level for fluency, so methods are compared where their curves reach a common perplexity ratio,
interpolated linearly between measured strengths (the unsteered reply is every curve's strength 0, at
ratio 1 and chance accuracy), as AxBench picks each method's steering factor before comparing them.
Prompt baselines (few-shot, instruction) have no strength: they are points, and a curve is read at a
point's own perplexity to compare with it. A curve is read where it first reaches the ratio (the weakest
strength that costs that much); a ratio beyond its strongest measured point is "not reached".

Every figure is recomputed in each bootstrap draw of whole scenarios (the same draws for every curve, so
a difference between two curves is paired): accuracy and r as in `stats`, perplexity as `summarize`
reports it (the median over target levels of each level's median, over unsteered's).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .. import methods
from ..errors import UserError
from ..methods import PLAIN
from .stats import BOOTSTRAP_DRAWS, VARIANT, _interval, _resample, _scenario_stats, judged_frame

MATCHED_RATIOS = (1.2, 1.3, 1.4)  # where the summary reads every curve (the 1.4x margin of the rule last)
_ALPHA = re.compile(r"(?:^|\s)a-?[0-9.]+(?:e-?\d+)?(?=\s|$)")


def weighted_median(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Median of `values` (n,) under each row of integer weights (draws, n), as np.median of the values
    repeated by their weights; NaN where a row's weights are all 0."""
    order = np.argsort(values, kind="stable")
    v, w = values[order], weights[:, order]
    cum = np.cumsum(w, axis=1)
    total = cum[:, -1:]
    lo = (cum >= total / 2).argmax(1)
    hi = (cum > total / 2).argmax(1)
    out = (v[lo] + v[hi]) / 2
    out[total[:, 0] <= 0] = np.nan
    return out


def read_at(x: np.ndarray, y: np.ndarray, ratio) -> np.ndarray:
    """y where the curve (x, y) (draws, points, in strength order) first reaches `ratio` (a number or one per
    draw), linear between the two points around it; NaN where it never does."""
    R = np.broadcast_to(np.asarray(ratio, dtype=float), (x.shape[0],))[:, None]
    x0, x1, y0, y1 = x[:, :-1], x[:, 1:], y[:, :-1], y[:, 1:]
    cross = (x0 <= R) & (x1 >= R)
    has = cross.any(1)
    i = cross.argmax(1)
    rows = np.arange(x.shape[0])
    a0, a1, b0, b1 = x0[rows, i], x1[rows, i], y0[rows, i], y1[rows, i]
    with np.errstate(invalid="ignore", divide="ignore"):
        t = np.where(a1 > a0, (R[:, 0] - a0) / (a1 - a0), 0.0)
    out = b0 + t * (b1 - b0)
    out[~has] = np.nan
    return out


def curve_setting(setting: str) -> str:
    """A setting label without its scale: the name of the curve its strengths lie on."""
    return " ".join(_ALPHA.sub(" ", f" {setting} ").split())


_TARGET_WORDS = {"learned": "offsets", "proto": "descent to the prototype", "delta": "delta", "softmax": "softmax"}
_FOLDER = re.compile(r"\b(vectors|offsets|saes) (\S+)")


def curve_title(method: str, layers: str, setting: str, prompt: str = PLAIN) -> str:
    """A curve's name for a reader ("SAE offsets, layers 0-29"; "Residual vector, layer 15 (first 8 tokens,
    then x0.5)"; "Instruction + SAE offsets, layers 0-29"), from its method's label and what its setting label
    says: the prompt under it, the target, the layers, and only what sets it apart (another folder of files, a
    schedule, steered positions other than the reply's)."""
    label = methods.REGISTRY[method].label if method in methods.REGISTRY else method
    if method in methods.prompted() or method == "none" or setting in ("", "-"):
        return label
    if prompt != PLAIN:  # its setting ends "+ instruction" (SteerConfig.label_with)
        under = methods.REGISTRY[prompt].label if prompt in methods.REGISTRY else prompt
        return f"{under} + {curve_title(method, layers, setting.removesuffix(f' + {prompt}'))}"
    words = curve_setting(setting).split()
    target = _TARGET_WORDS.get(words[0], words[0]) if words else ""
    head = {
        methods.CODES: f"SAE {target}",
        methods.QUERIES: f"{label} ({target})",
        methods.QUERY_SHIFT: label,
        methods.RESIDUAL: label,
    }.get(methods.REGISTRY[method].site if method in methods.REGISTRY else "", label)
    where = ("layer " if "," not in layers and "-" not in layers else "layers ") + layers
    kinds = {"saes": "SAEs", "vectors": "vectors", "offsets": "offsets"}
    notes = [f"{kinds[kind]} from {name.rstrip('/').split('/')[-1]}" for kind, name in _FOLDER.findall(setting)]
    first = re.search(r"\bfirst (\d+)(?: then x([0-9.]+))?", setting)
    if first:
        notes.append(f"first {first[1]} tokens" + (f", then x{first[2]}" if first[2] else " only"))
    pos = re.search(r"\bpos (\w+)", setting)
    if pos and pos[1] != "generated":
        notes.append(f"{pos[1]} positions")
    return f"{head}, {where}" + (f" ({'; '.join(notes)})" if notes else "")


@dataclass
class Curve:
    """One method and setting along its strengths (a point: a prompt baseline). Arrays are (draws + 1, k):
    row 0 the estimate on all scenarios, the others bootstrap draws; column 0 of a curve is its strength 0:
    the unsteered origin (ratio 1), or the point of the prompt it steers on top of."""

    name: str
    method: str
    alphas: list[float]
    acc: np.ndarray
    r: np.ndarray
    ratio: np.ndarray
    is_point: bool = False
    title: str = ""  # its name for a reader (curve_title); `name` is the key tables and tests use
    base: str = PLAIN  # the prompt it steers on top of: its strength 0 is that prompt's point

    @property
    def shown(self) -> str:
        return self.title or self.name

    def points(self) -> list[dict]:
        """Each measured strength: alpha, accuracy, r and perplexity ratio, with 95% intervals."""
        start = 0 if self.is_point else 1
        out = []
        for j in range(start, self.acc.shape[1]):
            out.append(
                {
                    "alpha": self.alphas[j - start] if not self.is_point else float("nan"),
                    **_with_interval("accuracy", self.acc[:, j]),
                    **_with_interval("level_corr", self.r[:, j]),
                    **_with_interval("ppl_ratio", self.ratio[:, j]),
                }
            )
        return out

    def at(self, ratio) -> tuple[np.ndarray, np.ndarray]:
        """(accuracy, r) per draw where the curve reaches `ratio` (a point: NaN unless it is that ratio)."""
        return read_at(self.ratio, self.acc, ratio), read_at(self.ratio, self.r, ratio)


def _with_interval(key: str, values: np.ndarray) -> dict:
    lo, hi = _interval(values[1:])
    return {key: float(values[0]), f"{key}_lo": lo, f"{key}_hi": hi}


@dataclass
class Frontier:
    """Every curve and point of some judged results, with the bootstrap draws behind them."""

    curves: list[Curve]
    n_scenarios: int
    draws: int
    notes: list[str] = field(default_factory=list)

    def find(self, spec: str) -> Curve:
        """The one curve named by spec: its name exactly, else the one whose name contains spec."""
        exact = [c for c in self.curves if c.name == spec.strip()]
        found = exact or [c for c in self.curves if spec.strip() in c.name]
        if len(found) != 1:
            names = "; ".join(c.name for c in self.curves)
            raise UserError(f"{spec!r} matches {len(found) or 'no'} curves; give a part of one of: {names}")
        return found[0]

    def matched(self, ratios: Sequence[float] = MATCHED_RATIOS) -> list[dict]:
        """Each curve read at each ratio (points: at their own), accuracy and r with 95% intervals, and the
        share of draws in which the curve reached the ratio."""
        out = []
        for c in self.curves:
            if c.is_point:
                (p,) = c.points()
                out.append({"curve": c.name, "method": c.method, "ratio": p["ppl_ratio"], "point": True, **p})
                continue
            for R in ratios:
                acc, r = c.at(R)
                row = {"curve": c.name, "method": c.method, "ratio": R, "point": False}
                row.update(_with_interval("accuracy", acc) if np.isfinite(acc[1:]).any() else {"accuracy": acc[0]})
                row.update(_with_interval("level_corr", r) if np.isfinite(r[1:]).any() else {"level_corr": r[0]})
                row["reached"] = float(np.isfinite(acc[1:]).mean())
                out.append(row)
        return out

    def paired(self, a: str, b: str, ratios: Sequence[float] = MATCHED_RATIOS) -> list[dict]:
        """Curve a minus b at the same perplexity, the same draws for both: at each ratio when b is a
        curve; at b's own perplexity when b is a point (a prompt baseline)."""
        ca, cb = self.find(a), self.find(b)
        if ca.is_point:
            raise UserError(f"{ca.name} is a point (no strengths); name a curve first, the point second")
        on_top = cb.is_point and ca.base == cb.method  # a over the prompt it stands on: what each step buys
        if on_top:
            where = [(f"at {R:g}x", R, cb.acc[:, 0], cb.r[:, 0]) for R in ratios]
        elif cb.is_point:
            where = [("at " + cb.name + "'s perplexity", cb.ratio[:, 0], cb.acc[:, 0], cb.r[:, 0])]
        else:
            where = [(f"at {R:g}x", R, *cb.at(R)) for R in ratios]
        out = []
        for label, R, acc_b, r_b in where:
            acc_a, r_a = ca.at(R)
            d_acc, d_r = acc_a - acc_b, r_a - r_b
            row = {"a": ca.name, "b": cb.name, "where": label, "reached": float(np.isfinite(d_acc[1:]).mean())}
            row.update(_with_interval("accuracy_diff", d_acc))
            row.update(_with_interval("level_corr_diff", d_r))
            if on_top:  # the level bought per extra 0.1x of perplexity over the prompt alone
                with np.errstate(invalid="ignore", divide="ignore"):
                    row.update(_with_interval("per_tenth", d_acc / ((R - cb.ratio[:, 0]) / 0.1)))
            out.append(row)
        return out


def build_frontier(rows: list[dict], draws: int = BOOTSTRAP_DRAWS, seed: int = 0) -> Frontier:
    """The frontier of judged result rows of one split (one model and prompt style)."""
    df = judged_frame(rows)
    df["alpha"] = _alphas(rows, df)
    keys = ["model", "style"]
    if df[keys].drop_duplicates().shape[0] != 1:
        raise UserError("the frontier compares methods on one model and prompt style; give results of one")
    df = df.drop_duplicates(subset=[*VARIANT, "level", "scenario_id"])
    sids = sorted(df["scenario_id"].unique())
    index = {s: i for i, s in enumerate(sids)}
    df["sc"] = df["scenario_id"].map(index)
    n_sc = len(sids)
    ws = np.vstack([np.ones((1, n_sc)), _resample(n_sc, draws, seed)])

    def stats(g: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        sc, t, p = g["sc"].to_numpy(), g["target"].to_numpy(float), g["pred_index"].to_numpy(float)
        acc, r = _scenario_stats(ws, sc, t, p, n_sc)
        per_level = [
            weighted_median(lv["ppl"].to_numpy(float), ws[:, lv["sc"].to_numpy()])
            for _, lv in g[g["ppl"].notna()].groupby("level")
        ]
        ppl = np.median(np.vstack(per_level), axis=0) if per_level else np.full(len(ws), np.nan)
        return acc, r, ppl

    none = df[df["method"] == "none"]
    if none.empty:
        raise UserError("the frontier needs the unsteered rows (method none): every curve starts there")
    acc0, _, ppl0 = stats(none)
    notes = []
    if set(none["scenario_id"]) != set(sids):
        notes.append("some scenarios have no unsteered row; their steered rows still count")
    curves = []
    steered = df[df["method"] != "none"].copy()
    steered["curve"] = [
        m if m in methods.prompted() else f"{m} {lay} {curve_setting(s)}".strip()
        for m, lay, s in zip(steered["method"], steered["layers"], steered["setting"])
    ]
    for name, g in steered.groupby("curve", sort=True):
        method, prompt = g["method"].iloc[0], g["prompt"].iloc[0]
        variants = sorted(g.groupby("setting"), key=lambda kv: kv[1]["alpha"].iloc[0])
        point = method in methods.prompted() or len(variants) == 1 and math.isnan(variants[0][1]["alpha"].iloc[0])
        cols = [] if point else [_origin(df, prompt, stats, name, (acc0, ppl0))]
        for _, v in variants:
            acc, r, ppl = stats(v)
            cols.append((acc, r, ppl / ppl0))
        acc, r, ratio = (np.stack([c[i] for c in cols], axis=1) for i in range(3))
        alphas = [float(v["alpha"].iloc[0]) for _, v in variants]
        title = curve_title(method, g["layers"].iloc[0], g["setting"].iloc[0], prompt)
        curves.append(Curve(name, method, alphas, acc, r, ratio, is_point=point, title=title, base=prompt))
    return Frontier(curves, n_scenarios=n_sc, draws=draws, notes=notes)


def _origin(df: pd.DataFrame, prompt: str, stats, name: str, unsteered) -> tuple:
    """A curve's strength 0: the unsteered reply (ratio 1, r 0) under the plain prompt, else the point of the
    prompt it steers on top of (strength 0 is that prompt's own reply)."""
    acc0, ppl0 = unsteered
    if prompt == PLAIN:
        return acc0, np.zeros_like(acc0), np.ones_like(ppl0)
    own = df[df["method"] == prompt]
    if own.empty:
        raise UserError(f"{name} steers on top of the {prompt} prompt: the frontier needs that prompt's own rows "
                        f"(method {prompt}) as its start")  # fmt: skip
    acc, r, ppl = stats(own)
    return acc, r, ppl / ppl0


def _alphas(rows: list[dict], df: pd.DataFrame) -> list[float]:
    """Each frame row's scale: the alpha column, else the one its label names ("learned a16"; "proto": 1);
    NaN for prompt baselines."""
    by_variant = {}
    for r in rows:
        try:
            a = float(r.get("alpha") or "nan")
        except ValueError:
            a = float("nan")
        if math.isnan(a) and r["method"] not in methods.prompted() and r["method"] != "none":
            m = re.search(r"(?:^|\s)a(-?[0-9.]+(?:e-?\d+)?)(?=\s|$)", r.get("setting") or "")
            a = float(m[1]) if m else 1.0 if (r.get("setting") or "").startswith("proto") else float("nan")
        by_variant[tuple(r.get(k) or "-" for k in VARIANT)] = a
    return [by_variant.get(tuple(row), float("nan")) for row in df[list(VARIANT)].itertuples(index=False, name=None)]
