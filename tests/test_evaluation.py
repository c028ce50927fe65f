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

    # rows carry their settings as columns, and are known by them, not by the label
    sae = [r for r in read_results(tmp_path / "results.csv") if r["method"] == "sae"]
    assert {(r["target"], r["strength"], r["alpha"]) for r in sae} == {("learned", "1", "16")}
    assert json.loads(sae[0]["config"])["positions"] == "generated"
    # a results file from before the settings columns resumes (keyed on its labels), converted once
    from steer_core.evaluation import RESULT_FIELDS, write_csv
    from steer_core.evaluation.results import header

    old_fields = [f for f in RESULT_FIELDS if f not in ("target", "strength", "alpha", "config")]
    write_csv(tmp_path / "results.csv", read_results(tmp_path / "results.csv"), old_fields)
    third = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert third.returncode == 0, third.stderr[-2000:]
    rep3 = json.loads(third.stdout.strip().splitlines()[-1])
    assert rep3["generated"] == 0 and rep3["skipped"] == 5 and header(tmp_path / "results.csv") == RESULT_FIELDS

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
    from steer_core.steering.config import SteerConfig

    seen = []

    def fake_generate(lm, reqs, max_new_tokens):
        seen.extend(reqs)
        return [Output("text", r.method, r.level, 1, 0.0, [1]) for r in reqs]

    monkeypatch.setattr(evaluation, "generate_batch", fake_generate)
    monkeypatch.setattr(evaluation, "perplexity", lambda *a, **k: 2.0)
    sc = FeedbackExample("x-apply", "x", "s", "q?", "a.", "apply", "f", "test")
    lm = type("LM", (), {"name": "m", "adapter": None, "label": "m"})()
    steers = [
        SteerConfig(target="softmax"),
        SteerConfig(target="learned", strength=1 / 16),
        SteerConfig(target="delta"),
    ]
    grid = evaluation.Grid(
        methods=["none", "sae", "query", "fewshot"], levels=["apply", "create"], layer_sets=[(8, 9)], steer=steers
    )
    rows = evaluation.run_grid(lm, [sc], grid, progress=False)
    by_method = {}
    for r in rows:
        by_method.setdefault(r["method"], set()).add(r["setting"])
    assert len(by_method["sae"]) == 3 and by_method["fewshot"] == {"-"} and by_method["none"] == {"-"}
    assert all(s.startswith("delta") for s in by_method["query"])
    assert sum(r["method"] == "query" for r in rows) == 2 * len(by_method["query"])
    assert sum(r["method"] == "none" for r in rows) == 1


def test_paired_difference_shares_the_draw_and_is_narrower_than_two_intervals():
    import numpy as np

    from steer_core.evaluation.stats import bootstrap_over_scenarios, paired_difference

    rng = np.random.default_rng(1)
    sids = [f"s{i:02d}" for i in range(30) for _ in range(6)]
    targets = [t for _ in range(30) for t in range(6)]
    easy = {f"s{i:02d}": rng.random() < 0.5 for i in range(30)}  # scenario difficulty, shared by both methods
    a = [t if easy[s] or rng.random() < 0.3 else (t + 1) % 6 for s, t in zip(sids, targets)]
    b = [t if easy[s] and rng.random() < 0.7 else (t + 2) % 6 for s, t in zip(sids, targets)]
    d = paired_difference((sids, targets, a), (sids, targets, b))
    acc = lambda p: float(np.mean(np.array(p) == np.array(targets)))  # noqa: E731
    assert d["accuracy_diff"] == pytest.approx(acc(a) - acc(b))
    assert d["accuracy_diff_lo"] < d["accuracy_diff"] < d["accuracy_diff_hi"]
    ia, ib = bootstrap_over_scenarios(sids, targets, a), bootstrap_over_scenarios(sids, targets, b)
    separate = (ia["accuracy_hi"] - ia["accuracy_lo"]) + (ib["accuracy_hi"] - ib["accuracy_lo"])
    assert d["accuracy_diff_hi"] - d["accuracy_diff_lo"] < 0.75 * separate
    same = paired_difference((sids, targets, a), (sids, targets, a))
    assert same["accuracy_diff"] == same["accuracy_diff_lo"] == same["accuracy_diff_hi"] == 0.0
    # only the scenarios both rows cover count
    half = paired_difference((sids[:60], targets[:60], a[:60]), (sids, targets, b))
    assert half["n_scenarios"] == 10
    with pytest.raises(ValueError, match="share no scenario"):
        paired_difference((sids[:6], targets[:6], a[:6]), (sids[6:12], targets[6:12], b[6:12]))


def test_summarize_paired_names_rows_and_refuses_ambiguous_ones(tmp_path):
    from steer_core.errors import UserError
    from steer_core.evaluation.tables import paired_table

    def row(sid, method, level, setting, pred):
        return {
            "scenario_id": sid, "method": method, "level": level, "layers": "8-21" if setting != "-" else "-",
            "setting": setting, "style": "plain", "model": "m", "text": "t", "ppl": "2", "pred_index": str(pred),
        }  # fmt: skip

    rows = [row(f"s{i}", "none", "-", "-", 1) for i in range(4)]
    for setting in ("learned a1", "learned a24"):
        rows += [row(f"s{i}", "sae", lv, setting, t) for i in range(4) for t, lv in enumerate(LEVELS)]
    table = paired_table(rows, [("learned a24", "none")])
    assert "| sae 8-21 learned a24 | none - | +0.833 [+0.833, +0.833] |" in table
    with pytest.raises(UserError, match="2 rows"):
        paired_table(rows, [("learned", "none")])
    from steer_core.evaluation.tables import overall_table

    table = overall_table(summarize(rows), gain_of="learned a24").splitlines()
    assert table[0].endswith("share of sae's gain |")
    shares = {line.split(" | ")[1]: line.split(" | ")[-1] for line in table[2:]}
    assert shares["8-21 learned a24"] == "1.00 |" and shares["-"] == "0.00 |"
    with pytest.raises(UserError, match="no row"):
        paired_table(rows, [("softmax", "none")])
