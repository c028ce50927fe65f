"""Experiments: methods x levels x layer sets over scenarios, judged and scored for fluency.

Each scenario is one batch: all methods and levels of it share the base prompt (few-shot and
instruction rows are left-padded into the same batch), so a grid costs one generation loop per
scenario and layer set. `run_eval` appends judged rows to `results.csv` as each batch finishes,
so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path

from tqdm.auto import tqdm

from .bloom import LEVELS, FeedbackExample
from .errors import UserError
from .generation import Request, generate_batch, perplexity
from .methods import STEERED
from .steering import SteerConfig


def parse_layers(spec: str) -> tuple[int, ...]:
    """'15' -> (15,), '8-21' -> (8..21), '3,9,15' -> (3, 9, 15)."""
    out: list[int] = []
    for part in str(spec).split(","):
        part = part.strip()
        if "-" in part:
            a, b = part.split("-")
            out += list(range(int(a), int(b) + 1))
        elif part:
            out.append(int(part))
    if not out:
        raise UserError(f"no layers in {spec!r}")
    return tuple(sorted(set(out)))


def layers_label(layers: Sequence[int]) -> str:
    layers = list(layers)
    if len(layers) > 2 and layers == list(range(layers[0], layers[-1] + 1)):
        return f"{layers[0]}-{layers[-1]}"
    return ",".join(map(str, layers))


def run_grid(
    lm,
    scenarios: Iterable[FeedbackExample],
    methods: Sequence[str],
    levels: Sequence[str],
    layer_sets: Sequence[tuple[int, ...]],
    steer: SteerConfig | Sequence[SteerConfig],
    max_new_tokens: int = 80,
    style: str = "plain",
    done: set | None = None,
    progress: bool = True,
    on_rows=None,
    max_batch: int = 96,
) -> list[dict]:
    """Generate every (scenario, method, level, layer set), one batch per scenario (chunked at
    max_batch rows); unsteered and prompt-only methods don't depend on layers and run once."""
    rows_out = []
    done = done or set()
    scenarios = list(scenarios)
    steers = [steer] if isinstance(steer, SteerConfig) else list(steer)
    bar = tqdm(total=len(scenarios), desc="eval", disable=not progress)
    for sc in scenarios:
        reqs, meta = [], []
        for method in methods:
            combos = [(None, None)]
            if method in STEERED:  # one config per distinct setting this method runs (query has no codes)
                usable = list({c.key: c for c in (s.for_method(method) for s in steers)}.values())
                combos = [(layers, s) for layers in layer_sets for s in usable]
            for layers, st in combos:
                for level in levels if method != "none" else ["-"]:
                    cfg = replace(st, method=method, layers=tuple(layers)) if layers else None
                    lab = layers_label(layers) if cfg else "-"
                    setting = cfg.label if cfg else "-"
                    if (sc.scenario_id, method, level, lab, setting, style) in done:
                        continue
                    reqs.append(
                        Request(
                            sc.question,
                            sc.student_answer,
                            method,
                            LEVELS[0] if level == "-" else level,
                            steer=cfg,
                            style=style,
                            scenario_id=sc.scenario_id,
                        )
                    )
                    meta.append((method, level, lab, setting))
        for c in range(0, len(reqs), max_batch):
            chunk, chunk_meta = reqs[c : c + max_batch], meta[c : c + max_batch]
            t0 = time.time()
            outs = generate_batch(lm, chunk, max_new_tokens=max_new_tokens)
            secs = time.time() - t0
            batch_rows = []
            for (method, level, lab, setting), o in zip(chunk_meta, outs):
                batch_rows.append(
                    {
                        "scenario_id": sc.scenario_id,
                        "method": method,
                        "level": level,
                        "layers": lab,
                        "setting": setting,
                        "style": style,
                        "model": lm.label,
                        "text": o.text,
                        "new_tokens": o.new_tokens,
                        "seconds": round(secs / len(outs), 3),
                        "ppl": round(perplexity(lm, sc.question, sc.student_answer, o.token_ids, style), 3),
                    }
                )
            rows_out += batch_rows
            if on_rows:
                on_rows(batch_rows)
        bar.update(1)
    bar.close()
    return rows_out


RESULT_FIELDS = [
    "scenario_id",
    "method",
    "level",
    "layers",
    "setting",
    "style",
    "model",
    "text",
    "new_tokens",
    "seconds",
    "ppl",
    "pred",
    "pred_index",
    "target_prob",
    "probs",
]


def row_key(r: dict) -> tuple:
    return (r["scenario_id"], r["method"], r["level"], r["layers"], r["setting"], r["style"])


def read_results(path: Path) -> list[dict]:
    """Rows of a results.csv; a row cut short by an interrupted write is dropped (and redone)."""
    if not Path(path).is_file():
        return []
    return [r for r in read_csv(path) if r.get("probs") and None not in r.values()]


def append_csv(path: Path, rows: list[dict], fields: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.is_file() or path.stat().st_size == 0
    with path.open("a", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        if new:
            w.writeheader()
        w.writerows(rows)
        fh.flush()


def run_eval(
    lm,
    scenarios: Sequence[FeedbackExample],
    methods: Sequence[str],
    levels: Sequence[str],
    layer_sets: Sequence[tuple[int, ...]],
    steer: SteerConfig | Sequence[SteerConfig],
    out_dir: Path,
    max_new_tokens: int = 64,
    style: str = "plain",
    judge=None,
    progress: bool = True,
    max_batch: int = 96,
) -> dict:
    """The `eval` command: resumable grid -> results.csv, then summary.csv and report.html."""
    out_dir = Path(out_dir)
    results = out_dir / "results.csv"
    existing = read_results(results)
    if results.is_file() and len(existing) < len(read_csv(results)):  # drop torn rows before appending
        write_csv(results, existing, RESULT_FIELDS) if existing else results.unlink()
    done = {row_key(r) for r in existing}
    from .judge import default_judge

    judge = judge or default_judge()

    def on_rows(rows):
        append_csv(results, add_judgements(rows, judge), RESULT_FIELDS)

    new = run_grid(
        lm,
        scenarios,
        methods,
        levels,
        layer_sets,
        steer,
        max_new_tokens=max_new_tokens,
        style=style,
        done=done,
        progress=progress,
        on_rows=on_rows,
        max_batch=max_batch,
    )
    wanted = {s.scenario_id for s in scenarios}
    rows = [r for r in read_results(results) if r["scenario_id"] in wanted]
    summary = summarize(rows, similarity=unsteered_similarity(rows))
    write_csv(out_dir / "summary.csv", summary, SUMMARY_FIELDS)
    write_report(out_dir / "report.html", summary, rows)
    return {
        "results": str(results),
        "summary": str(out_dir / "summary.csv"),
        "report": str(out_dir / "report.html"),
        "generated": len(new),
        "skipped": len(done),
        "rows": len(rows),
    }


def unsteered_similarity(rows: list[dict]) -> dict[tuple, float]:
    """row_key -> MiniLM cosine between a row's text and the unsteered text of its scenario: how much
    of the original feedback survives steering (1 = unchanged)."""
    from .judge import embed

    base = {(r["scenario_id"], r["style"], r["model"]): r["text"] for r in rows if r["method"] == "none"}
    pairs = [(r, base.get((r["scenario_id"], r["style"], r["model"]))) for r in rows]
    pairs = [(r, b) for r, b in pairs if b is not None]
    if not pairs:
        return {}
    a = embed([r["text"] or " " for r, _ in pairs])
    b = embed([t or " " for _, t in pairs])
    sims = (a * b).sum(-1)
    return {row_key(r): float(s) for (r, _), s in zip(pairs, sims)}


def write_report(path: Path, summary: list[dict], rows: list[dict]) -> None:
    from .charts import accuracy_by_method_level, judged_vs_target, layer_sweep, report_html
    from .io_utils import atomic_write_text

    n_sc = len({r["scenario_id"] for r in rows})
    intro = (
        f"<p>{len(rows)} generations over {n_sc} scenarios. Accuracy = the judge's predicted level equals the "
        "target level (chance 1/6). Figures from <code>summary.csv</code> next to this file.</p>"
    )
    html = report_html(
        [accuracy_by_method_level(summary), judged_vs_target(summary), layer_sweep(summary)],
        "Bloom steering evaluation",
        intro,
    )
    atomic_write_text(path, html)


def add_judgements(rows: list[dict], judge=None) -> list[dict]:
    from .judge import default_judge

    judge = judge or default_judge()
    probs = judge.predict_proba([r["text"] or "" for r in rows])
    for r, p in zip(rows, probs):
        r["pred"] = LEVELS[int(p.argmax())]
        r["pred_index"] = int(p.argmax())
        r["target_prob"] = round(float(p[LEVELS.index(r["level"])]), 4) if r["level"] in LEVELS else ""
        r["probs"] = json.dumps([round(float(v), 4) for v in p])
    return rows


SUMMARY_FIELDS = [
    "model",
    "style",
    "method",
    "layers",
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


def bootstrap_over_scenarios(
    scenario_ids: Sequence[str],
    targets: Sequence[int],
    preds: Sequence[int],
    draws: int = BOOTSTRAP_DRAWS,
    seed: int = 0,
) -> dict:
    """Accuracy and the judged-vs-target level correlation, with 95% percentile intervals from
    resampling whole scenarios (a scenario's rows share a question, so they are not independent)."""
    import numpy as np

    sids = sorted(set(scenario_ids))
    index = {s: i for i, s in enumerate(sids)}
    sc = np.array([index[s] for s in scenario_ids])
    t, p = np.asarray(targets, dtype=float), np.asarray(preds, dtype=float)
    hit = (t == p).astype(float)
    n_sc = len(sids)

    # per scenario sufficient statistics: count, hits, sums for the correlation
    def stats(ws):  # ws: (draws, n_sc) multiplicity of each scenario
        cnt = ws @ np.bincount(sc, minlength=n_sc)
        acc = (ws @ np.bincount(sc, weights=hit, minlength=n_sc)) / cnt
        m = {}
        for name, v in (("t", t), ("p", p), ("tt", t * t), ("pp", p * p), ("tp", t * p)):
            m[name] = (ws @ np.bincount(sc, weights=v, minlength=n_sc)) / cnt
        vt, vp = m["tt"] - m["t"] ** 2, m["pp"] - m["p"] ** 2
        with np.errstate(invalid="ignore", divide="ignore"):
            r = (m["tp"] - m["t"] * m["p"]) / np.sqrt(vt * vp)
        return acc, r

    acc, r = stats(np.ones((1, n_sc)))
    rng = np.random.default_rng(seed)
    ws = np.stack([np.bincount(rng.integers(0, n_sc, n_sc), minlength=n_sc) for _ in range(draws)]).astype(float)
    accs, rs = stats(ws)
    lo, hi = np.percentile(accs, [2.5, 97.5])
    rs = rs[np.isfinite(rs)]
    rlo, rhi = np.percentile(rs, [2.5, 97.5]) if len(rs) else (float("nan"), float("nan"))
    return {
        "accuracy": float(acc[0]),
        "accuracy_lo": float(lo),
        "accuracy_hi": float(hi),
        "level_corr": float(r[0]),
        "level_corr_lo": float(rlo),
        "level_corr_hi": float(rhi),
        "n_scenarios": n_sc,
    }


def summarize(rows: list[dict], similarity: dict[tuple, float] | None = None) -> list[dict]:
    """Per (model, style, method, layers, level) and per (model, style, method, layers) overall
    (level "ALL"): target accuracy, mean judged level index and its shift from unsteered, the
    correlation of judged with target level index (ALL rows: does the judged level follow the
    target?), median perplexity and its ratio to unsteered's, similarity to the unsteered text,
    length in words."""
    import numpy as np

    similarity = similarity or {}
    for r in rows:
        r["_sim"] = similarity.get(row_key(r), float("nan"))

    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        variant = r["layers"] + ("" if r.get("setting", "-") in ("-", "") else " " + r["setting"])
        groups.setdefault((r["model"], r["style"], r["method"], variant, r["level"]), []).append(r)
    out = []
    for (model, style, method, layers, level), rs in sorted(groups.items()):
        if method == "none":  # unsteered: the same text scored against every target level
            for t in LEVELS:
                out.append(_stats(model, style, method, layers, t, rs, t))
        else:
            out.append(_stats(model, style, method, layers, level, rs, level))
    # overall rows (mean over levels)
    agg: dict[tuple, list[dict]] = {}
    for s in out:
        agg.setdefault((s["model"], s["style"], s["method"], s["layers"]), []).append(s)
    for (model, style, method, layers), ss in sorted(agg.items()):
        rs = [r for key, g in groups.items() if key[:4] == (model, style, method, layers) for r in g]
        if method == "none":  # one text per scenario, scored against every target level
            rs = [dict(r, level=t) for r in rs for t in LEVELS]
        boot = bootstrap_over_scenarios(
            [r["scenario_id"] for r in rs], [LEVELS.index(r["level"]) for r in rs], [int(r["pred_index"]) for r in rs]
        )
        ci = {k: round(v, 4) if isinstance(v, float) else v for k, v in boot.items()}
        if method == "none":  # judged level does not depend on the target: no correlation to report
            ci.update(level_corr=float("nan"), level_corr_lo=float("nan"), level_corr_hi=float("nan"))
        out.append(
            {
                "model": model,
                "style": style,
                "method": method,
                "layers": layers,
                "level": "ALL",
                "n": sum(s["n"] for s in ss),
                **ci,
                **_judged_shares(rs),
                "mean_level_index": round(float(np.mean([s["mean_level_index"] for s in ss])), 3),
                "ppl": round(float(np.nanmedian([s["ppl"] for s in ss])), 3),
                "similarity": round(float(np.nanmean([s["similarity"] for s in ss])), 3)
                if any(np.isfinite(s["similarity"]) for s in ss)
                else float("nan"),
                "words": round(float(np.mean([s["words"] for s in ss])), 1),
            }
        )
    base = {(s["model"], s["style"], s["level"]): s for s in out if s["method"] == "none"}
    for s in out:
        b = base.get((s["model"], s["style"], s["level"]))
        s["level_shift"] = round(s["mean_level_index"] - b["mean_level_index"], 3) if b else float("nan")
        s["ppl_ratio"] = round(s["ppl"] / b["ppl"], 3) if b and b["ppl"] and np.isfinite(b["ppl"]) else float("nan")
    for r in rows:
        r.pop("_sim", None)
    return out


def _judged_shares(rs: list[dict]) -> dict[str, float]:
    """judged_<level>: the share of rows the judge put at each level."""
    import numpy as np

    shares = np.bincount([int(r["pred_index"]) for r in rs], minlength=len(LEVELS)) / max(1, len(rs))
    return {f"judged_{lv}": round(float(f), 4) for lv, f in zip(LEVELS, shares)}


def _stats(model, style, method, layers, level, rs, target):
    import numpy as np

    ppl = [float(r["ppl"]) for r in rs if r["ppl"] not in ("", None) and not np.isnan(float(r["ppl"]))]
    sims = np.array([r.get("_sim", float("nan")) for r in rs], dtype=float)
    return {
        "model": model,
        "style": style,
        "method": method,
        "layers": layers,
        "level": level,
        "n": len(rs),
        "n_scenarios": len({r["scenario_id"] for r in rs}),
        **_judged_shares(rs),
        "accuracy": round(float(np.mean([r["pred"] == target for r in rs])), 4),
        "mean_level_index": round(float(np.mean([int(r["pred_index"]) for r in rs])), 3),
        "ppl": round(float(np.median(ppl)), 3) if ppl else float("nan"),
        "similarity": round(float(np.nanmean(sims)), 3) if np.isfinite(sims).any() else float("nan"),
        "words": round(float(np.mean([len(str(r["text"]).split()) for r in rs])), 1),
    }


def write_csv(path: Path, rows: list[dict], fields: list[str] | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = fields or list(rows[0].keys())
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def read_csv(path: Path) -> list[dict]:
    with Path(path).open(encoding="utf-8") as fh:
        return list(csv.DictReader(fh))
