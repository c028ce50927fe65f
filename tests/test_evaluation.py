"""The evaluation tables: summary statistics on hand-made rows (fast) and the resumable `eval`
command on the real model (slow)."""

import csv
import json
import math
import subprocess
import sys

import pytest
from conftest import ROOT

from steer_core.bloom import LEVELS
from steer_core.evaluation import read_results, summarize
from steer_core.layer_spec import parse_layers


def _row(sid, method, level, pred, ppl=2.0, layers="15"):
    return {
        "scenario_id": sid,
        "method": method,
        "level": level,
        "layers": layers if method in ("sae", "query") else "-",
        "setting": "s" if method in ("sae", "query") else "-",
        "style": "plain",
        "model": "m",
        "text": "a b c",
        "ppl": ppl,
        "pred": pred,
        "pred_index": LEVELS.index(pred),
    }


def test_summary_accuracy_shift_correlation_and_ppl_ratio():
    rows = [_row(s, "none", "-", "remember", ppl=2.0) for s in ("a", "b")]
    # steering that always hits its target: accuracy 1, judged level follows the target exactly
    rows += [_row(s, "sae", lv, lv, ppl=3.0) for s in ("a", "b") for lv in LEVELS]
    rows += [_row(s, "query", lv, "remember", ppl=4.0) for s in ("a", "b") for lv in LEVELS]
    out = {(r["method"], r["level"]): r for r in summarize(rows)}
    assert out[("sae", "ALL")]["accuracy"] == 1.0 and out[("sae", "ALL")]["level_corr"] == 1.0
    assert out[("query", "ALL")]["accuracy"] == pytest.approx(1 / 6, abs=1e-3)
    assert math.isnan(out[("query", "ALL")]["level_corr"])  # judged level never moves
    assert out[("none", "remember")]["accuracy"] == 1.0 and out[("none", "create")]["accuracy"] == 0.0
    assert out[("sae", "create")]["level_shift"] == 5.0 and out[("sae", "ALL")]["level_shift"] == 2.5
    assert out[("sae", "ALL")]["ppl_ratio"] == 1.5 and out[("query", "ALL")]["ppl_ratio"] == 2.0


def test_parse_layers():
    assert parse_layers("15") == (15,) and parse_layers("8-10") == (8, 9, 10) and parse_layers("3,1,3") == (1, 3)
    with pytest.raises(ValueError):
        parse_layers(",")


@pytest.mark.slow
def test_eval_cli_writes_tables_and_resumes(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "steer_core",
        "eval",
        "--limit",
        "1",
        "--levels",
        "apply",
        "create",
        "--methods",
        "none",
        "sae",
        "fewshot",
        "--layers",
        "15",
        "--max-new-tokens",
        "12",
        "--out",
        str(tmp_path),
    ]
    first = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert first.returncode == 0, first.stderr[-2000:]
    rep = json.loads(first.stdout.strip().splitlines()[-1])
    assert rep["generated"] == 5 and rep["skipped"] == 0  # 1 unsteered + 2 sae + 2 few-shot
    rows = read_results(tmp_path / "results.csv")
    assert {r["method"] for r in rows} == {"none", "sae", "fewshot"} and all(r["pred"] in LEVELS for r in rows)
    with (tmp_path / "summary.csv").open() as fh:
        summary = list(csv.DictReader(fh))
    assert {"accuracy", "level_shift", "ppl", "ppl_ratio", "similarity", "words"} <= set(summary[0])
    assert any(r["method"] == "sae" and r["level"] == "ALL" for r in summary)
    assert "Plotly.newPlot" in (tmp_path / "report.html").read_text()

    # an interrupted write leaves a torn last line: it is dropped and redone, the rest is skipped
    text = (tmp_path / "results.csv").read_text()
    (tmp_path / "results.csv").write_text(text + text.splitlines()[-1][:40])
    again = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert again.returncode == 0, again.stderr[-2000:]
    rep2 = json.loads(again.stdout.strip().splitlines()[-1])
    assert rep2["generated"] == 0 and rep2["skipped"] == 5 and rep2["rows"] == 5

    bad = subprocess.run(
        cmd[:-2] + ["--layers", "99", "--out", str(tmp_path / "x")], capture_output=True, text=True, cwd=ROOT
    )
    assert bad.returncode == 2 and "out of range" in bad.stderr and "Traceback" not in bad.stderr


def test_summary_carries_intervals_and_judged_shares(tmp_path):
    from steer_core.evaluation import RESULT_FIELDS, write_csv

    rows = [_row(s, "none", "-", "remember") for s in "abcdef"]
    rows += [_row(s, "sae", lv, lv if i % 2 else "apply") for i, s in enumerate("abcdef") for lv in LEVELS]
    out = {(r["method"], r["level"]): r for r in summarize([dict(r) for r in rows])}
    sae = out[("sae", "ALL")]
    assert sae["accuracy_lo"] <= sae["accuracy"] <= sae["accuracy_hi"] and sae["accuracy_hi"] > sae["accuracy_lo"]
    assert sae["n_scenarios"] == 6 and out[("none", "ALL")]["accuracy"] == pytest.approx(1 / 6, abs=1e-4)
    assert out[("sae", "create")]["judged_create"] == 0.5 and out[("sae", "create")]["judged_apply"] == 0.5
    assert sum(sae[f"judged_{lv}"] for lv in LEVELS) == pytest.approx(1.0, abs=1e-3)
    # the summarize command prints the same figures as a Markdown table
    for r in rows:
        r.update(probs="[]", new_tokens=3, seconds=0.1)
    write_csv(tmp_path / "results.csv", rows, RESULT_FIELDS)
    out = subprocess.run(
        [sys.executable, "-m", "steer_core", "summarize", str(tmp_path / "results.csv")],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    line = next(x for x in out.stdout.splitlines() if x.startswith("| sae"))
    assert f"{sae['accuracy']:.3f} [{sae['accuracy_lo']:.3f}, {sae['accuracy_hi']:.3f}]" in line
    per = subprocess.run(
        [sys.executable, "-m", "steer_core", "summarize", str(tmp_path / "results.csv"), "--per-level", "sae"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert per.returncode == 0 and per.stdout.count("| 15 s |") == 6
    bad = subprocess.run(
        [sys.executable, "-m", "steer_core", "eval", "--variants", "learned:x", "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert bad.returncode == 2 and "--variants" in bad.stderr


def test_grid_runs_prompt_methods_once_and_query_on_delta(monkeypatch):
    """Several SAE targets in one grid: prompt-only methods run once, query steering (no codes)
    runs the delta form of each code-only target, once per distinct setting."""
    from steer_core.bloom import FeedbackExample
    from steer_core.evaluation import grid as evaluation
    from steer_core.generation import Output
    from steer_core.steering import SteerConfig

    seen = []

    def fake_generate(lm, reqs, max_new_tokens):
        seen.extend(reqs)
        return [Output("text", r.method, r.level, 1, 0.0, [1]) for r in reqs]

    monkeypatch.setattr(evaluation, "generate_batch", fake_generate)
    monkeypatch.setattr(evaluation, "perplexity", lambda *a, **k: 2.0)
    sc = FeedbackExample("x-apply", "x", "s", "q?", "a.", "apply", "f", "test")
    lm = type("LM", (), {"name": "m", "adapter": None, "label": "m"})()
    steers = [
        SteerConfig(target="softmax", alpha=3.0),
        SteerConfig(target="learned", alpha=1.0),
        SteerConfig(target="delta", alpha=8.0),
    ]
    rows = evaluation.run_grid(
        lm, [sc], ["none", "sae", "query", "fewshot"], ["apply", "create"], [(8, 9)], steers, progress=False
    )
    by_method = {}
    for r in rows:
        by_method.setdefault(r["method"], set()).add(r["setting"])
    assert len(by_method["sae"]) == 3 and by_method["fewshot"] == {"-"} and by_method["none"] == {"-"}
    assert all(s.startswith("delta") for s in by_method["query"])
    assert sum(r["method"] == "query" for r in rows) == 2 * len(by_method["query"])
    assert sum(r["method"] == "none" for r in rows) == 1
