"""Markdown tables of evaluation results (the `summarize` command): the figures the README quotes,
with their 95% bootstrap intervals over scenarios."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from ..bloom import LEVELS
from ..errors import UserError
from .judging import add_judgements, unsteered_similarity
from .results import read_csv
from .stats import VARIANT, judged_frame, paired_difference, paired_rows, summarize, variant_text


def fmt_number(v, spec: str) -> str:
    """A summary figure as text; '-' for a missing or NaN one."""
    try:
        v = float(v)
    except (TypeError, ValueError):
        return "-"
    return "-" if math.isnan(v) else format(v, spec)


def interval_text(s: dict, key: str, spec: str = ".3f") -> str:
    """A summary figure with its 95% interval, 'x [lo, hi]' (just 'x' without one)."""
    lo, hi = s.get(f"{key}_lo"), s.get(f"{key}_hi")
    if lo is None or hi is None or fmt_number(lo, spec) == "-":
        return fmt_number(s[key], spec)
    return f"{fmt_number(s[key], spec)} [{fmt_number(lo, spec)}, {fmt_number(hi, spec)}]"


def judged_rows(paths: Sequence[str | Path], rejudge: bool = False) -> list[dict]:
    """The judged rows of results.csv files, pooled (re-scored with the shipped judge on request)."""
    rows = [r for p in paths for r in read_csv(Path(p)) if r.get("probs")]
    if not rows:
        raise UserError("no judged rows in " + ", ".join(map(str, paths)))
    if rejudge:
        add_judgements(rows)
    return rows


def summary_rows(
    paths: Sequence[str | Path], rejudge: bool = False, similarity: bool = False, rows: list[dict] | None = None
) -> list[dict]:
    rows = judged_rows(paths, rejudge) if rows is None else rows
    return summarize(rows, similarity=unsteered_similarity(rows) if similarity else None)


def _variant_name(v: tuple) -> str:
    return f"{v[2]} {variant_text(v[3], v[4])}"


def find_variant(variants: Sequence[tuple], spec: str) -> tuple:
    """The one variant named by spec: its "method layers/setting" text exactly, else the one that
    contains spec."""
    exact = [v for v in variants if _variant_name(v) == spec.strip()]
    found = exact or [v for v in variants if spec.strip() in _variant_name(v)]
    if len(found) != 1:
        names = "; ".join(sorted(_variant_name(v) for v in variants))
        what = "no row" if not found else f"{len(found)} rows"
        raise UserError(f"--paired {spec!r} matches {what}; give a part of one of: {names}")
    return found[0]


def paired_table(rows: list[dict], pairs: Sequence[tuple[str, str]]) -> str:
    """Paired differences (row A - row B) of accuracy and r over the scenarios both rows cover."""
    df = judged_frame(rows)
    variants = list(df[list(VARIANT)].drop_duplicates().itertuples(index=False, name=None))
    out = [
        "| A | B | accuracy A - B [95% CI] | r A - B [95% CI] | scenarios |",
        "|---|---|---|---|---|",
    ]
    for spec_a, spec_b in pairs:
        a, b = find_variant(variants, spec_a), find_variant(variants, spec_b)
        d = paired_difference(paired_rows(df, a), paired_rows(df, b))
        out.append(
            f"| {_variant_name(a)} | {_variant_name(b)} | {interval_text(d, 'accuracy_diff', '+.3f')} "
            f"| {interval_text(d, 'level_corr_diff', '+.2f')} | {d['n_scenarios']} |"
        )
    return "\n".join(out)


def overall_table(summary: list[dict], gain_of: str | None = None) -> str:
    """One row per method and setting. gain_of names a row (as for --paired): a last column then gives
    each row's share of that row's gain over unsteered, (row - unsteered) / (that row - unsteered)."""
    overall = [s for s in summary if s["level"] == "ALL"]
    ref = None
    if gain_of is not None:
        ref = find_variant([tuple(s[k] for k in VARIANT) for s in overall], gain_of)
        ref = next(s for s in overall if tuple(s[k] for k in VARIANT) == ref)
        unsteered = [
            s for s in overall if s["method"] == "none" and (s["model"], s["style"]) == (ref["model"], ref["style"])
        ]
        if not unsteered:
            raise UserError(
                f"no unsteered row for {_variant_name(tuple(ref[k] for k in VARIANT))} to measure gains from"
            )
        base = unsteered[0]["accuracy"]
    head = (
        "| method | layers / setting | accuracy [95% CI] | r judged~target [95% CI] | mean judged level "
        "| perplexity (x unsteered) | similarity | words | n |"
    )
    out = [
        head + (f" share of {ref['method']}'s gain |" if ref else ""),
        "|---|---|---|---|---|---|---|---|---|" + ("---|" if ref else ""),
    ]
    for s in sorted(overall, key=lambda s: (s["model"], s["style"], s["method"], -s["accuracy"])):
        line = (
            f"| {s['method']} | {variant_text(s['layers'], s['setting'])} | {interval_text(s, 'accuracy')} "
            f"| {interval_text(s, 'level_corr', '.2f')} "
            f"| {s['mean_level_index']:.2f} | {fmt_number(s['ppl'], '.2f')} ({fmt_number(s['ppl_ratio'], '.2f')}x) "
            f"| {fmt_number(s['similarity'], '.2f')} | {s['words']:.1f} | {s['n']} |"
        )
        if ref:
            line += f" {(s['accuracy'] - base) / (ref['accuracy'] - base):.2f} |" if ref["accuracy"] != base else " - |"
        out.append(line)
    return "\n".join(out)


def per_level_table(summary: list[dict], method: str) -> str:
    """Accuracy per target level, and where the judge put the replies (share of each judged level)."""
    out = [
        "| layers / setting | target level | accuracy | " + " | ".join(f"judged {lv}" for lv in LEVELS) + " |",
        "|---|---|---|" + "---|" * len(LEVELS),
    ]
    rows = [s for s in summary if s["method"] == method and s["level"] in LEVELS]
    for s in sorted(rows, key=lambda s: (s["model"], s["style"], s["layers"], s["setting"], LEVELS.index(s["level"]))):
        shares = " | ".join(fmt_number(s.get(f"judged_{lv}"), ".2f") for lv in LEVELS)
        out.append(f"| {variant_text(s['layers'], s['setting'])} | {s['level']} | {s['accuracy']:.3f} | {shares} |")
    return "\n".join(out)


def matched_table(frontier, ratios: Sequence[float]) -> str:
    """Each curve read at each perplexity ratio (accuracy and r with 95% intervals; "not reached" beyond its
    strongest measured point), then the prompt baselines at their own perplexity."""
    rows = frontier.matched(ratios)
    head = " | ".join(f"accuracy at {R:g}x | r at {R:g}x" for R in ratios)
    out = [f"| method / setting | measured (alpha: ratio) | {head} |", "|---|---|" + "---|---|" * len(ratios)]
    for c in frontier.curves:
        if c.is_point:
            continue
        pts = ", ".join(f"{p['alpha']:g}: {p['ppl_ratio']:.2f}x" for p in c.points())
        cells = []
        for m in (m for m in rows if m["curve"] == c.name):
            if m["reached"] == 0 and not math.isfinite(m["accuracy"]):
                cells += ["not reached", "-"]
            else:
                note = "" if m["reached"] >= 0.95 else f" (reached in {m['reached']:.0%} of draws)"
                cells += [interval_text(m, "accuracy") + note, interval_text(m, "level_corr", ".2f")]
        out.append(f"| {c.name} | {pts} | " + " | ".join(cells) + " |")
    points = [m for m in rows if m["point"]]
    if points:
        out += ["", "| prompt baseline (a point) | accuracy [95% CI] | r [95% CI] | perplexity ratio [95% CI] |"]
        out.append("|---|---|---|---|")
        for m in points:
            out.append(
                f"| {m['curve']} | {interval_text(m, 'accuracy')} | {interval_text(m, 'level_corr', '.2f')} "
                f"| {interval_text(m, 'ppl_ratio', '.2f')} |"
            )
    if frontier.notes:
        out += ["", *(f"Note: {n}." for n in frontier.notes)]
    return "\n".join(out)


def paired_matched_table(frontier, pairs: Sequence[tuple[str, str]], ratios: Sequence[float]) -> str:
    """Curve A minus B at the same perplexity, paired over scenarios (A at B's own perplexity when B is a
    prompt baseline; at each ratio when A steers on top of B, with what each 0.1x of perplexity buys)."""
    out = [
        "| A | B | where | accuracy A - B [95% CI] | r A - B [95% CI] |",
        "|---|---|---|---|---|",
    ]
    for a, b in pairs:
        for d in frontier.paired(a, b, ratios):
            if d["reached"] == 0:
                acc, r = "not reached", "-"
            else:
                acc, r = interval_text(d, "accuracy_diff", "+.3f"), interval_text(d, "level_corr_diff", "+.2f")
            where = d["where"]
            if "per_tenth" in d and d["reached"] > 0:
                where += f" ({interval_text(d, 'per_tenth', '+.3f')} per 0.1x over {d['b']} alone)"
            out.append(f"| {d['a']} | {d['b']} | {where} | {acc} | {r} |")
    return "\n".join(out)
