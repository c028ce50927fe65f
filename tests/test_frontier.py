"""The frontier on made-up rows with a known answer: weighted medians, reading a curve at a perplexity,
matched and paired figures, and the summarize tables built on them (fast: no model)."""

import json

import numpy as np
import pytest

from steer_core.bloom import LEVELS
from steer_core.errors import UserError
from steer_core.evaluation.frontier import build_frontier, curve_setting, read_at, weighted_median


def test_weighted_median_is_the_median_of_the_repeated_values():
    rng = np.random.default_rng(0)
    for n in (1, 2, 5, 8):
        v = rng.normal(size=n)
        w = rng.integers(0, 4, size=(50, n))
        w[:, 0] += 1  # never all zero
        got = weighted_median(v, w)
        want = [np.median(np.repeat(v, row)) for row in w]
        assert np.allclose(got, want)
    assert np.isnan(weighted_median(np.array([1.0, 2.0]), np.zeros((1, 2))))[0]


def test_a_curve_is_read_where_it_first_reaches_the_ratio():
    x = np.array([[1.0, 1.2, 1.6, 1.3]])  # the last strength costs less than the one before: not the first crossing
    y = np.array([[0.1, 0.3, 0.5, 0.9]])
    assert read_at(x, y, 1.4)[0] == pytest.approx(0.4)
    assert read_at(x, y, 1.0)[0] == pytest.approx(0.1)
    assert read_at(x, y, 1.6)[0] == pytest.approx(0.5)
    assert np.isnan(read_at(x, y, 1.7)[0])  # beyond the strongest point: not reached
    assert read_at(np.vstack([x, x]), np.vstack([y, y]), np.array([1.2, 1.4])).tolist() == pytest.approx([0.3, 0.4])


def test_curve_names_drop_the_scale():
    assert curve_setting("learned a16 pos generated") == "learned pos generated"
    assert curve_setting("delta a0.375 T20 lr0.2 mu0 pos generated") == "delta T20 lr0.2 mu0 pos generated"
    # the paper's prototype labels its strength 1 bare ("proto T20"): every strength lies on one curve
    assert curve_setting("proto a0.5 T20") == curve_setting("proto T20") == "proto T20"


def _rows(method, setting, alpha, hits_per_scenario, ppl, scenarios=10, layers="0-29", levels=LEVELS):
    """Every scenario alike: `hits_per_scenario` of its six replies judged at their target level."""
    out = []
    for s in range(scenarios):
        for i, lv in enumerate(levels):
            hit = i < hits_per_scenario
            pred = i if hit else (i + 1) % 6
            out.append(
                {
                    "scenario_id": f"S{s:02d}",
                    "method": method,
                    "level": lv,
                    "layers": layers,
                    "setting": setting,
                    "alpha": "-" if alpha is None else str(alpha),
                    "config": "-",
                    "style": "plain",
                    "model": "m",
                    "text": "x",
                    "ppl": str(ppl),
                    "pred": LEVELS[pred],
                    "pred_index": str(pred),
                    "probs": json.dumps([1 / 6] * 6),
                }
            )
    return out


def _unsteered(scenarios=10, ppl=2.0):
    rows = _rows("none", "-", None, 1, ppl, scenarios, layers="-", levels=["-"])
    for r in rows:  # one text per scenario, judged once
        r["pred"], r["pred_index"] = "remember", "0"
    return rows


@pytest.fixture()
def frontier():
    rows = _unsteered()
    rows += _rows("sae", "learned a8 pos generated", 8, 3, 2.4)  # ratio 1.2, accuracy 0.5
    rows += _rows("sae", "learned a16 pos generated", 16, 5, 3.2)  # ratio 1.6, accuracy 5/6
    rows += _rows("residual", "learned a3 pos generated", 3, 2, 2.8, layers="15")  # ratio 1.4, accuracy 1/3
    rows += _rows("fewshot", "-", None, 2, 2.6, layers="-")  # a point: ratio 1.3, accuracy 1/3
    return build_frontier(rows, draws=200)


def test_matched_accuracy_is_interpolated_along_strength(frontier):
    sae = frontier.find("sae")
    assert sae.name == "sae 0-29 learned pos generated" and not sae.is_point
    assert [p["alpha"] for p in sae.points()] == [8, 16]
    rows = {(m["curve"], m["ratio"]): m for m in frontier.matched()}
    at = rows[("sae 0-29 learned pos generated", 1.4)]
    assert at["accuracy"] == pytest.approx(0.5 + 0.5 * (5 / 6 - 0.5))
    assert at["accuracy_lo"] == pytest.approx(at["accuracy"]) == pytest.approx(at["accuracy_hi"])  # identical scenarios
    assert rows[("sae 0-29 learned pos generated", 1.2)]["accuracy"] == pytest.approx(0.5)
    # between the unsteered origin (1.0, 1/6) and the first strength
    residual = frontier.find("residual").at(1.2)[0][0]
    assert residual == pytest.approx(1 / 6 + 0.5 * (1 / 3 - 1 / 6))
    (point,) = [m for m in frontier.matched() if m["curve"] == "fewshot"]
    assert point["point"] and point["ratio"] == pytest.approx(1.3) and point["accuracy"] == pytest.approx(1 / 3)


def test_paired_at_a_ratio_and_at_a_points_own_perplexity(frontier):
    (at_fewshot,) = frontier.paired("sae", "fewshot")
    sae_at_13 = 0.5 + 0.25 * (5 / 6 - 0.5)
    assert at_fewshot["accuracy_diff"] == pytest.approx(sae_at_13 - 1 / 3)
    by = {p["where"]: p for p in frontier.paired("sae", "residual", ratios=(1.2, 1.4, 1.7))}
    assert by["at 1.4x"]["accuracy_diff"] == pytest.approx(0.5 + 0.5 * (5 / 6 - 0.5) - 1 / 3)
    assert np.isnan(by["at 1.7x"]["accuracy_diff"]) and by["at 1.7x"]["reached"] == 0
    with pytest.raises(UserError, match="is a point"):
        frontier.paired("fewshot", "sae")
    with pytest.raises(UserError, match="matches 0 curves|matches no curves"):
        frontier.find("meandiff")


def test_a_curve_on_top_of_a_prompt_starts_at_the_prompts_point():
    rows = _unsteered()
    rows += _rows("instruction", "-", None, 3, 2.2, layers="-")  # the prompt alone: ratio 1.1, accuracy 0.5
    for r in rows[-60:]:
        r["prompt"] = "instruction"
    on_top = _rows("residual", "learned a2 + instruction", 2, 5, 3.0, layers="15")  # ratio 1.5, accuracy 5/6
    for r in on_top:
        r["prompt"] = "instruction"
    rows += on_top + _rows("residual", "learned a2", 2, 2, 3.0, layers="15")  # the same strength, plain
    f = build_frontier(rows, draws=100)
    curve = f.find("+ instruction")
    assert curve.base == "instruction" and curve.title == "Instruction + Residual vector, layer 15"
    assert f.find("residual 15 learned").base == "plain"  # "learned" alone names both; the plain one exactly
    # strength 0 is the prompt's point (1.1, 0.5), not the unsteered origin (1, 1/6)
    assert curve.at(1.3)[0][0] == pytest.approx(0.5 + 0.5 * (5 / 6 - 0.5))
    assert np.isnan(curve.at(1.05)[0][0])  # below the prompt's own perplexity it has no reading
    by = {p["where"]: p for p in f.paired("+ instruction", "instruction", ratios=(1.3,))}
    gain = 0.5 * (5 / 6 - 0.5)
    assert by["at 1.3x"]["accuracy_diff"] == pytest.approx(gain)  # over the prompt alone, at each ratio
    assert by["at 1.3x"]["per_tenth"] == pytest.approx(gain / 2)  # what each 0.1x of perplexity buys
    with pytest.raises(UserError, match="needs that prompt's own rows"):
        build_frontier([r for r in rows if r["method"] != "instruction"], draws=10)


def test_intervals_come_from_resampling_scenarios():
    rows = _unsteered(scenarios=12)
    for s in range(12):  # scenarios differ: half respond to steering, half do not
        hits = 6 if s % 2 else 1
        rows += [r for r in _rows("sae", "learned a16", 16, hits, 3.0, scenarios=12) if r["scenario_id"] == f"S{s:02d}"]
    (p,) = build_frontier(rows, draws=500).find("sae").points()
    assert p["accuracy"] == pytest.approx(7 / 12)
    assert p["accuracy_lo"] < p["accuracy"] < p["accuracy_hi"]
    assert p["ppl_ratio"] == pytest.approx(1.5) == pytest.approx(p["ppl_ratio_lo"])


def test_the_frontier_needs_unsteered_rows_and_one_model():
    rows = _rows("sae", "learned a16", 16, 3, 3.0)
    with pytest.raises(UserError, match="unsteered"):
        build_frontier(rows)
    other = _unsteered()
    for r in other:
        r["model"] = "other"
    with pytest.raises(UserError, match="one model"):
        build_frontier(_unsteered() + rows + other)


@pytest.mark.parametrize("split", ["test", "validation"])
def test_the_shipped_frontier_rows_give_every_shipped_method_a_place(split):
    """What the "Does it steer?" tab draws: the rows in results/frontier/ build a frontier in which every
    steering method that ships is a curve and both prompt baselines are points."""
    from steer_core.views.evidence import DRAWS, evidence

    ev = evidence(split)
    assert ev.frontier.draws == DRAWS and ev.files == [f"results/frontier/{split}.csv"]
    curves = {c.method: c for c in ev.frontier.curves}
    assert {"sae", "residual", "query", "fewshot", "instruction"} <= set(curves)
    assert curves["fewshot"].is_point and curves["instruction"].is_point
    assert not curves["sae"].is_point and len(curves["sae"].alphas) >= 2
    if split == "validation":  # steering on top of the instruction prompt: curves that start at its point
        on_top = {c.title: c for c in ev.frontier.curves if c.base == "instruction" and not c.is_point}
        assert {"Instruction + SAE offsets, layers 0-29", "Instruction + Residual vector, layer 15"} <= set(on_top)
        assert all(len(c.alphas) >= 3 for c in on_top.values())


@pytest.mark.parametrize("split", ["test", "validation"])
def test_every_file_a_shipped_frontier_row_steered_with_ships(split):
    """No figure from files users don't have: each folder a row was steered with (its config's SAEs, offsets
    and residual vectors) is in the repository, save the query rows' fold prototypes (writers A-C only),
    which frontier_rows marks as not given back."""
    from steer_core.evaluation.reproduce import row_files
    from steer_core.evaluation.results import read_results
    from steer_core.paths import ROOT

    rows = read_results(ROOT / "results" / "frontier" / f"{split}.csv")
    assert rows
    named = set()
    for row in rows:
        files = row_files(row)
        named |= {(row["method"], d) for d in (files.saes, files.offsets, files.residual) if d}
    missing = {(m, p) for m, p in named if not (ROOT / p).exists()}
    assert missing <= {("query", "runs/fold_ABC_all/saes")}, f"rows steered with files that do not ship: {missing}"


def test_every_curve_has_a_readers_name_and_the_legend_is_off_the_data():
    """The chart names each curve by its method, target and layers and only what sets it apart (a folder of
    files, a schedule), never a configuration string, and puts the legend under the plot."""
    from steer_core import charts
    from steer_core.evaluation.frontier import curve_title
    from steer_core.evaluation.results import read_results
    from steer_core.paths import ROOT

    assert curve_title("sae", "0-29", "learned a16 pos generated") == "SAE offsets, layers 0-29"
    assert curve_title("sae", "8-21", "proto T20 lr0.2 mu0 pos all") == (
        "SAE descent to the prototype, layers 8-21 (all positions)"
    )
    assert curve_title("residual", "15", "learned a4 pos generated first 8 then x0.5") == (
        "Residual vector, layer 15 (first 8 tokens, then x0.5)"
    )
    assert curve_title("query", "0-29", "delta a3 T20 lr0.2 mu0 pos generated saes saes") == (
        "Query-steered (delta), layers 0-29 (SAEs from saes)"
    )
    assert curve_title("fewshot", "-", "-") == "Few-shot"
    shipped = build_frontier(read_results(ROOT / "results" / "frontier" / "validation.csv"), draws=5)
    titles = [c.title for c in shipped.curves]
    assert len(set(titles)) == len(titles) and not [t for t in titles if "lr0" in t or "pos " in t], titles
    fig = charts.frontier_chart(shipped)
    assert fig.layout.legend.y < 0 and fig.layout.legend.orientation == "h"
    assert {t.name for t in fig.data if t.showlegend is not False} == set(titles)
