"""Experiments: methods x levels x layer sets over scenarios, judged and scored for fluency.

Each scenario is one batch: all methods and levels of it share the base prompt (few-shot and
instruction rows are left-padded into the same batch), so a grid costs one generation loop per
scenario and layer set.
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Iterable, Sequence

from tqdm.auto import tqdm

from .bloom import LEVELS, FeedbackExample
from .generation import Request, generate_batch, perplexity
from .steering import SteerConfig

STEERED = ("sae", "query", "meandiff")


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
        raise ValueError(f"no layers in {spec!r}")
    return tuple(sorted(set(out)))


def layers_label(layers: Sequence[int]) -> str:
    layers = list(layers)
    if len(layers) > 2 and layers == list(range(layers[0], layers[-1] + 1)):
        return f"{layers[0]}-{layers[-1]}"
    return ",".join(map(str, layers))


def run_grid(lm, scenarios: Iterable[FeedbackExample], methods: Sequence[str], levels: Sequence[str],
             layer_sets: Sequence[tuple[int, ...]], steer: SteerConfig | Sequence[SteerConfig], max_new_tokens: int = 80,
             style: str = "plain", done: set | None = None, progress: bool = True,
             on_rows=None, max_batch: int = 96) -> list[dict]:
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
            combos = [(l, s) for l in layer_sets for s in steers] if method in STEERED else [(None, None)]
            for layers, st in combos:
                for level in (levels if method != "none" else ["-"]):
                    cfg = replace(st, method=method, layers=tuple(layers)) if layers else None
                    lab = layers_label(layers) if cfg else "-"
                    setting = cfg.label if cfg else "-"
                    if (sc.scenario_id, method, level, lab, setting, style) in done:
                        continue
                    reqs.append(Request(sc.question, sc.student_answer, method, LEVELS[0] if level == "-" else level,
                                        steer=cfg, style=style, scenario_id=sc.scenario_id))
                    meta.append((method, level, lab, setting))
        for c in range(0, len(reqs), max_batch):
            chunk, chunk_meta = reqs[c : c + max_batch], meta[c : c + max_batch]
            t0 = time.time()
            outs = generate_batch(lm, chunk, max_new_tokens=max_new_tokens)
            secs = time.time() - t0
            batch_rows = []
            for (method, level, lab, setting), o in zip(chunk_meta, outs):
                batch_rows.append({
                    "scenario_id": sc.scenario_id, "method": method, "level": level, "layers": lab,
                    "setting": setting, "style": style,
                    "model": lm.name + ("+adapter" if lm.adapter else ""), "text": o.text,
                    "new_tokens": o.new_tokens, "seconds": round(secs / len(outs), 3),
                    "ppl": round(perplexity(lm, sc.question, sc.student_answer, o.token_ids, style), 3),
                })
            rows_out += batch_rows
            if on_rows:
                on_rows(batch_rows)
        bar.update(1)
    bar.close()
    return rows_out


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


def summarize(rows: list[dict]) -> list[dict]:
    """Per (model, style, method, layers, level) and per (model, style, method, layers) overall:
    target accuracy, mean judged level index, perplexity, length."""
    import numpy as np

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
        out.append({"model": model, "style": style, "method": method, "layers": layers, "level": "ALL",
                    "n": sum(s["n"] for s in ss),
                    "accuracy": round(float(np.mean([s["accuracy"] for s in ss])), 4),
                    "mean_level_index": round(float(np.mean([s["mean_level_index"] for s in ss])), 3),
                    "ppl": round(float(np.nanmedian([s["ppl"] for s in ss])), 3),
                    "words": round(float(np.mean([s["words"] for s in ss])), 1)})
    return out


def _stats(model, style, method, layers, level, rs, target):
    import numpy as np

    ppl = [float(r["ppl"]) for r in rs if r["ppl"] not in ("", None) and not np.isnan(float(r["ppl"]))]
    return {"model": model, "style": style, "method": method, "layers": layers, "level": level, "n": len(rs),
            "accuracy": round(float(np.mean([r["pred"] == target for r in rs])), 4),
            "mean_level_index": round(float(np.mean([int(r["pred_index"]) for r in rs])), 3),
            "ppl": round(float(np.median(ppl)), 3) if ppl else float("nan"),
            "words": round(float(np.mean([len(str(r["text"]).split()) for r in rs])), 1)}


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
