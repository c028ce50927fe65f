"""Fast checks of the plotly figures in steer_core.charts (no model needed)."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import pytest

from steer_core import charts
from steer_core.bloom import LEVELS

RNG = np.random.default_rng(0)
ROOT = Path(__file__).resolve().parent.parent


def _common(fig):
    """Every figure: a title, axis titles, hover templates, compact height, white template."""
    assert isinstance(fig, go.Figure)
    assert fig.layout.title.text
    assert 300 <= fig.layout.height <= 400
    assert fig.layout.template.layout.paper_bgcolor == "white"
    for tr in fig.data:
        assert tr.hovertemplate, f"trace {tr.name!r} has no hovertemplate"


def _axes_titled(fig):
    assert fig.layout.xaxis.title.text
    assert fig.layout.yaxis.title.text


def test_palettes_cover_levels_and_methods():
    assert set(charts.LEVEL_COLORS) == set(LEVELS)
    assert len(set(charts.LEVEL_COLORS.values())) == 6
    names = ("none", "sae", "query", "meandiff", "residual", "fewshot", "instruction")
    assert len({charts._method_color(m) for m in names}) == 7  # every method its own colour, from its entry
    assert [charts._method_label(m) for m in ("none", "sae", "fewshot")] == ["Unsteered", "SAE-steered", "Few-shot"]
    assert charts._method_label("not-a-method") == "not-a-method" and charts._method_color("x").startswith("#")


def test_module_does_not_import_gradio():
    code = "import sys, steer_core.charts; assert 'gradio' not in sys.modules"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_white_by_default_draws_the_same_figures():
    """The app's process-wide default template only saves work: every chart's JSON is the same with it or without."""
    import json

    import plotly.io as pio

    def drawn():
        rng = np.random.default_rng(1)
        return [
            charts.latent_bars(rng.uniform(0, 1, 30), rng.uniform(0, 1, 30), rng.uniform(0, 1, 30), level="apply"),
            charts.token_latent_heatmap(["a", "b"], rng.uniform(0, 1, (2, 30))),
            charts.figure_from_saved(charts.saved_figure(charts.judge_probs({"sae": [1 / 6] * 6}, "apply"))),
        ]

    before = pio.templates.default
    try:
        pio.templates.default = "plotly"
        plain = [json.loads(f.to_json()) for f in drawn()]
        charts.white_by_default()
        assert pio.templates.default == charts.TEMPLATE
        assert [json.loads(f.to_json()) for f in drawn()] == plain  # (keys in another order)
    finally:
        pio.templates.default = before


# ---------------------------------------------------------------- latent_bars


def test_latent_bars_picks_largest_latents():
    k = 50
    before = RNG.uniform(0, 0.1, k)
    after = RNG.uniform(0, 0.1, k)
    proto = RNG.uniform(0, 0.1, k)
    before[3] = 2.0  # big only before
    proto[7] = 3.0  # big only in the prototype
    fig = charts.latent_bars(before, after, proto, top=2, level="analyze")
    _common(fig)
    _axes_titled(fig)
    assert len(fig.data) == 3
    assert [t.name for t in fig.data] == ["before steering", "after steering", "analyze prototype"]
    assert list(fig.data[0].x) == ["#7", "#3"]  # largest first
    np.testing.assert_allclose(fig.data[0].y, [before[7], before[3]])
    np.testing.assert_allclose(fig.data[2].y, [3.0, proto[3]])
    assert fig.data[2].marker.color == charts.LEVEL_COLORS["analyze"]
    assert fig.layout.title.text == "Top latents: before vs after steering vs target"


def test_latent_bars_default_count_and_explicit_ids():
    k = 40
    v = RNG.uniform(0, 1, (3, k))
    fig = charts.latent_bars(*v)
    assert all(len(t.x) == 15 for t in fig.data)
    assert fig.data[2].name == "target prototype"
    fig = charts.latent_bars(*v, latent_ids=[5, 1, 9], title="mine")
    assert list(fig.data[1].x) == ["#5", "#1", "#9"]
    np.testing.assert_allclose(fig.data[1].y, v[1][[5, 1, 9]])
    assert fig.layout.title.text == "mine"


def test_latent_bars_rejects_bad_shapes():
    with pytest.raises(ValueError, match="same length"):
        charts.latent_bars(np.zeros(5), np.zeros(5), np.zeros(6))
    with pytest.raises(ValueError, match="1-D"):
        charts.latent_bars(np.zeros((2, 5)), np.zeros(10), np.zeros(10))
    with pytest.raises(ValueError, match="latent_ids"):
        charts.latent_bars(np.zeros(5), np.zeros(5), np.zeros(5), latent_ids=[2, 9])


# ---------------------------------------------------------------- token_latent_heatmap


def test_token_heatmap_top_latents_and_labels():
    tokens = ["Hello", " world", "\n", "\tok"]
    codes = np.zeros((4, 30))
    codes[:, 3] = 1.0
    codes[1, 7] = 10.0
    codes[2, 11] = 0.5
    fig = charts.token_latent_heatmap(tokens, codes, top=2)
    _common(fig)
    _axes_titled(fig)
    hm = fig.data[0]
    assert list(hm.x) == ["#7", "#3"]
    assert np.asarray(hm.z).shape == (4, 2)
    assert list(hm.y) == ["0: Hello", "1: world", "2: ⏎", "3: ⇥ok"]
    assert "activation" in hm.hovertemplate and "token" in hm.hovertemplate
    assert fig.layout.title.text == "Sparse code per token (latents × tokens)"


def test_token_heatmap_keeps_last_120_tokens():
    s, k = 150, 25
    tokens = [f"t{i}" for i in range(s)]
    codes = RNG.uniform(0, 1, (s, k))
    fig = charts.token_latent_heatmap(tokens, codes)
    hm = fig.data[0]
    assert len(hm.y) == 120
    assert hm.y[0] == "30: t30" and hm.y[-1] == "149: t149"
    assert len(hm.x) == 20


def test_token_heatmap_escapes_html():
    fig = charts.token_latent_heatmap(["<s>", "a"], np.ones((2, 3)))
    assert fig.data[0].y[0] == "0: &lt;s&gt;"


def test_token_heatmap_rejects_mismatch():
    with pytest.raises(ValueError, match="rows"):
        charts.token_latent_heatmap(["a", "b", "c"], np.zeros((2, 8)))
    with pytest.raises(ValueError, match="2-D"):
        charts.token_latent_heatmap(["a"], np.zeros(8))


# ---------------------------------------------------------------- descent_trace


def test_descent_trace_emphasises_target():
    trace = RNG.uniform(0.5, 2.0, (11, 6))
    fig = charts.descent_trace(trace, "evaluate")
    _common(fig)
    assert fig.layout.xaxis.title.text == "descent step"
    assert fig.layout.yaxis.title.text == "distance to prototype"
    assert len(fig.data) == 6
    target = fig.data[LEVELS.index("evaluate")]
    others = [t for i, t in enumerate(fig.data) if i != LEVELS.index("evaluate")]
    assert "evaluate" in target.name
    assert all(target.line.width > o.line.width for o in others)
    assert target.line.dash == "solid" and all(o.line.dash != "solid" for o in others)
    for lv, tr in zip(LEVELS, fig.data):
        assert tr.line.color == charts.LEVEL_COLORS[lv]
    assert list(target.x) == list(range(11))
    np.testing.assert_allclose(target.y, trace[:, LEVELS.index("evaluate")])
    assert fig.layout.title.text == "Descent toward 'evaluate': distance to each level's prototype"


def test_descent_trace_rejects_bad_input():
    with pytest.raises(ValueError, match="shape"):
        charts.descent_trace(np.zeros((4, 5)), "apply")
    with pytest.raises(ValueError, match="target_level"):
        charts.descent_trace(np.zeros((4, 6)), "synthesize")


# ---------------------------------------------------------------- judge_probs


def test_judge_probs_series_and_target_mark():
    probs = {m: RNG.dirichlet(np.ones(6)) for m in ("none", "sae", "fewshot")}
    fig = charts.judge_probs(probs, "apply")
    _common(fig)
    _axes_titled(fig)
    assert [t.name for t in fig.data] == ["Unsteered", "SAE-steered", "Few-shot"]
    assert [t.marker.color for t in fig.data] == [charts._method_color(m) for m in probs]
    assert all(list(t.x) == list(LEVELS) for t in fig.data)
    assert tuple(fig.layout.yaxis.range) == (0, 1)
    assert fig.layout.yaxis.title.text == "judge probability"
    rects = [s for s in fig.layout.shapes if s.type == "rect"]
    assert len(rects) == 1 and rects[0].x0 == 1.5 and rects[0].x1 == 2.5  # 'apply' is index 2
    assert "<b>" in fig.layout.xaxis.ticktext[2] and "<b>" not in fig.layout.xaxis.ticktext[0]


def test_judge_probs_rejects_wrong_length():
    with pytest.raises(ValueError, match="6 values"):
        charts.judge_probs({"sae": [0.5, 0.5]}, "apply")
    with pytest.raises(ValueError, match="target_level"):
        charts.judge_probs({"sae": np.full(6, 1 / 6)}, "nope")


# ---------------------------------------------------------------- separability_map


def test_separability_map_nan_and_highlight():
    scores = RNG.uniform(0, 1, (4, 8))
    scores[1] = np.nan
    fig = charts.separability_map(scores, layers=[8, 12, 15, 21], highlight=(15, [2, 5]))
    _common(fig)
    assert fig.layout.xaxis.title.text == "head h" and fig.layout.yaxis.title.text == "layer l"
    hm = fig.data[0]
    assert list(hm.y) == ["8", "12", "15", "21"]
    assert len(hm.x) == 8
    assert np.isnan(np.asarray(hm.z, dtype=float)[1]).all()
    text = np.asarray(hm.text)
    assert text[1, 3] == "layer 12, head 3: no SAE"
    assert text[0, 0] == f"layer 8, head 0: {scores[0, 0]:.3f}"
    rects = [s for s in fig.layout.shapes if s.type == "rect"]
    assert len(rects) == 2
    assert {(r.x0, r.y0) for r in rects} == {(1.5, 1.5), (4.5, 1.5)}  # row index 2 ("15")
    assert fig.to_json()  # NaN serialises
    assert fig.layout.title.text.startswith("Where do the six levels differ?")


def test_separability_map_default_layers_and_errors():
    fig = charts.separability_map(np.full((3, 2), np.nan))
    assert list(fig.data[0].y) == ["0", "1", "2"]
    assert not fig.layout.shapes
    with pytest.raises(ValueError, match="2-D"):
        charts.separability_map(np.zeros(5))
    with pytest.raises(ValueError, match="labels"):
        charts.separability_map(np.zeros((3, 2)), layers=[1, 2])
    with pytest.raises(ValueError, match="highlight"):
        charts.separability_map(np.zeros((3, 2)), highlight=(7, [0]))
    with pytest.raises(ValueError, match="head"):
        charts.separability_map(np.zeros((3, 2)), highlight=(1, [2]))


# ---------------------------------------------------------------- evaluation summaries


def _summary():
    rows = []
    for method, layers in (("none", "-"), ("sae", "8-21"), ("sae", "15"), ("fewshot", "-")):
        for i, lv in enumerate(LEVELS):
            rows.append({"method": method, "layers": layers, "level": lv, "accuracy": str(0.1 * i + 0.05)})
        rows.append({"method": method, "layers": layers, "level": "ALL", "accuracy": "0.4"})
    for layer, acc in ((8, "0.3"), (21, "0.5"), (12, "0.35")):
        rows.append({"method": "sae", "layers": str(layer), "level": "ALL", "accuracy": acc})
        rows.append({"method": "query", "layers": str(layer), "level": "ALL", "accuracy": acc})
    return rows


def test_accuracy_by_method_level():
    fig = charts.accuracy_by_method_level(_summary())
    _common(fig)
    _axes_titled(fig)
    assert [t.name for t in fig.data] == ["Unsteered", "SAE-steered (8-21)", "SAE-steered (15)", "Few-shot"]
    assert all(list(t.x) == list(LEVELS) for t in fig.data)
    np.testing.assert_allclose(fig.data[1].y, 0.1 * np.arange(6) + 0.05)
    # same method, different layers: same colour, different pattern
    assert fig.data[1].marker.color == fig.data[2].marker.color == charts._method_color("sae")
    assert fig.data[1].marker.pattern.shape != fig.data[2].marker.pattern.shape
    chance = [s for s in fig.layout.shapes if s.type == "line"]
    assert len(chance) == 1 and chance[0].y0 == pytest.approx(1 / 6) and chance[0].line.dash == "dash"
    assert any(a.text == "chance" for a in fig.layout.annotations)
    assert fig.layout.title.text == "Target-level accuracy by method and level"


def test_accuracy_by_method_level_bad_rows():
    with pytest.raises(ValueError, match="accuracy"):
        charts.accuracy_by_method_level([{"method": "sae", "layers": "-", "level": "apply"}])
    with pytest.raises(ValueError, match="not a number"):
        charts.accuracy_by_method_level([{"method": "sae", "layers": "-", "level": "apply", "accuracy": "x"}])


def test_layer_sweep_lines_and_references():
    fig = charts.layer_sweep(_summary())
    _common(fig)
    _axes_titled(fig)
    names = [t.name for t in fig.data]
    assert names == ["SAE-steered", "Query-steered", "Unsteered", "Few-shot"]
    sae = fig.data[0]
    assert list(sae.x) == [8, 12, 15, 21]  # sorted by layer, "8-21" excluded
    np.testing.assert_allclose(sae.y, [0.3, 0.35, 0.4, 0.5])
    assert sae.mode == "lines+markers"
    ref = fig.data[2]
    assert ref.line.dash == "dash" and list(ref.x) == [8, 21] and list(ref.y) == [0.4, 0.4]
    chance = [s for s in fig.layout.shapes if s.type == "line"]
    assert len(chance) == 1 and chance[0].y0 == pytest.approx(1 / 6)
    assert fig.layout.title.text == "Layer sweep: accuracy vs steered layer"


def test_layer_sweep_without_single_layer_runs():
    rows = [r for r in _summary() if not r["layers"].isdigit()]
    fig = charts.layer_sweep(rows)
    assert fig.layout.title.text == "Layer sweep: accuracy vs steered layer"
    assert len(fig.data) == 0
    assert any("no single-layer runs" in a.text for a in fig.layout.annotations)


# ---------------------------------------------------------------- report_html


def test_report_html_inlines_plotly_once():
    figs = [
        charts.descent_trace(RNG.uniform(0, 1, (3, 6)), "create"),
        charts.judge_probs({"sae": np.full(6, 1 / 6)}, "create"),
        charts.separability_map(RNG.uniform(0, 1, (2, 3))),
    ]
    page = charts.report_html(figs, "Bloom <steering> report", "<p>Intro text here.</p>")
    assert page.lstrip().lower().startswith("<!doctype html>")
    assert "<html" in page and "</html>" in page
    assert "<h1>Bloom &lt;steering&gt; report</h1>" in page
    assert "<p>Intro text here.</p>" in page
    assert page.count("Plotly.newPlot") == len(figs)
    assert page.count("* plotly.js v") == 1  # the library, inline, exactly once
    assert '<script src="https://cdn.plot.ly' not in page and "cdn.plot.ly/plotly" not in page
    assert page.index("<h1>") < page.index("Intro text") < page.index("Plotly.newPlot")


def test_report_html_rejects_non_figures():
    with pytest.raises(ValueError, match="figures"):
        charts.report_html([{"data": []}], "x")


def test_judged_vs_target_plots_each_variant_and_the_diagonal():
    from steer_core.charts import judged_vs_target

    rows = [
        {"method": "sae", "layers": "8-21 learned a1", "level": lv, "accuracy": 0.5, "mean_level_index": i * 0.5}
        for i, lv in enumerate(LEVELS)
    ]
    rows += [{"method": "none", "layers": "-", "level": lv, "accuracy": 0.17, "mean_level_index": 2.0} for lv in LEVELS]
    rows.append({"method": "sae", "layers": "8-21 learned a1", "level": "ALL", "accuracy": 0.5, "mean_level_index": 1})
    fig = judged_vs_target(rows)
    names = [t.name for t in fig.data]
    assert names == ["perfect steering", "SAE-steered (8-21 learned a1)", "Unsteered"]
    assert list(fig.data[1].y) == [i * 0.5 for i in range(6)] and list(fig.data[0].y) == list(range(6))
    assert "no per-level rows" in judged_vs_target([])["layout"]["annotations"][0]["text"]
    with pytest.raises(ValueError, match="mean_level_index"):
        judged_vs_target([{"method": "sae", "layers": "-", "level": "apply", "accuracy": 0.1}])


def test_descent_trace_shows_level_probabilities_when_given():
    probs = np.full((5, 6), 1 / 6)
    probs[:, 2] = np.linspace(1 / 6, 0.6, 5)
    fig = charts.descent_trace(np.ones((5, 6)), "apply", probs=probs)
    target = next(t for t in fig.data if t.name == "apply (target)")
    assert list(target.y) == list(probs[:, 2]) and "probability" in fig.layout.yaxis.title.text
    assert tuple(fig.layout.yaxis.range) == (0, 1)
    with pytest.raises(ValueError):
        charts.descent_trace(np.ones((5, 6)), "apply", probs=np.ones((5, 4)))


def test_descent_trace_adds_the_objective_on_its_own_axis():
    probs = np.full((5, 6), 1 / 6)
    objective = np.array([2.0, 1.5, 1.2, 1.1, 1.0])
    fig = charts.descent_trace(probs, "apply", probs=probs, objective=objective, objective_name="-log p(target)")
    obj = fig.data[-1]
    assert len(fig.data) == 7 and obj.yaxis == "y2" and "-log p(target)" in obj.name
    assert list(obj.y) == list(objective) and fig.layout.yaxis2.title.text == "-log p(target)"
    with pytest.raises(ValueError, match="one value per step"):
        charts.descent_trace(probs, "apply", probs=probs, objective=objective[:3])


def test_ladder_chart_has_diagonal_judged_points_and_probability_bars():
    targets = list(LEVELS)
    judged = ["understand", "understand", "apply", "apply", "remember", "create"]
    fig = charts.ladder_chart(targets, judged, [0.2, 0.5, 0.4, 0.1, 0.05, 0.6], ["sae"] * 6)
    names = [t.name for t in fig.data]
    assert names[0] == "perfect steering" and list(fig.data[0].x) == list(LEVELS) == list(fig.data[0].y)
    points = next(t for t in fig.data if t.name.endswith("judged level"))
    assert list(points.y) == judged
    bars = next(t for t in fig.data if t.type == "bar")
    assert bars.yaxis == "y2" and fig.layout.yaxis2.range == (0, 1)
    with pytest.raises(ValueError, match="same length"):
        charts.ladder_chart(targets, judged[:3], [0.1] * 6, ["sae"] * 6)
    with pytest.raises(ValueError, match="level"):
        charts.ladder_chart(["remember"], ["brilliant"], [0.1], ["sae"])


def test_sweep_chart_probability_and_perplexity_against_strength():
    fig = charts.sweep_chart([0, 1, 2], [0.1, 0.3, 0.5], [2.0, 2.5, 4.0], "create", baseline_ppl=2.0)
    prob, ppl, budget = fig.data
    assert list(prob.x) == [0, 1, 2] and prob.yaxis in (None, "y") and ppl.yaxis == "y2"
    assert list(budget.y) == [3.0, 3.0] and fig.layout.yaxis2.title.text == "perplexity"
    with pytest.raises(ValueError, match="same length"):
        charts.sweep_chart([0, 1], [0.1], [2.0, 2.5], "create")


def test_attention_parts_and_text():
    fig = charts.attention_parts(["question", "student answer"], [0.2, 0.3], [0.25, 0.2])
    assert [t.name for t in fig.data] == ["unsteered", "steered"] and list(fig.data[1].y) == [0.25, 0.2]
    html_text = charts.attention_text(["<b>", " more", " less"], [0.0, 0.02, -0.01])
    assert "&lt;b&gt;" in html_text and "<b>" not in html_text  # tokens are escaped
    assert "rgba(230,120,20,0.85)" in html_text and "rgba(30,110,200,0.42)" in html_text
    with pytest.raises(ValueError, match="same length"):
        charts.attention_text(["a"], [0.1, 0.2])


def test_layer_sweep_draws_a_real_eval_summary():
    """Rows as `eval` writes them (layer set and setting in their own columns), through `summarize`:
    one line per method and setting over the single layers, the layer band left out."""
    from steer_core.evaluation import summarize

    rows = []
    for sid in ("A01", "B02"):
        rows.append(_result(sid, "none", "-", "-", "-", 0))
        for lv_i, lv in enumerate(LEVELS):
            for layers in ("10", "15", "20", "8-21"):
                for setting in ("learned a16", "learned a8"):
                    pred = lv_i if (layers == "15" and setting == "learned a16") else 0
                    rows.append(_result(sid, "sae", lv, layers, setting, pred))
    summary = summarize(rows)
    assert {s["setting"] for s in summary} == {"-", "learned a16", "learned a8"}
    fig = charts.layer_sweep(summary)
    lines = [t for t in fig.data if t.mode == "lines+markers"]
    assert sorted(t.name for t in lines) == ["SAE-steered (learned a16)", "SAE-steered (learned a8)"]
    a16 = next(t for t in lines if "a16" in t.name)
    assert list(a16.x) == [10, 15, 20] and a16.y[1] == pytest.approx(1.0) and a16.y[0] == pytest.approx(1 / 6, abs=1e-4)
    # a summary.csv from before the setting column (setting glued to the layers) still draws
    old = [{**s, "layers": f"{s['layers']} {s['setting']}".replace(" -", "")} for s in summary]
    for s in old:
        s.pop("setting")
    assert [list(t.x) for t in charts.layer_sweep(old).data if t.mode == "lines+markers"] == [[10, 15, 20]] * 2


def _result(sid, method, level, layers, setting, pred):
    return {
        "scenario_id": sid,
        "method": method,
        "level": level,
        "layers": layers,
        "setting": setting,
        "style": "plain",
        "model": "m",
        "text": "a reply",
        "new_tokens": "3",
        "seconds": "0.1",
        "ppl": "2.0",
        "pred": LEVELS[pred],
        "pred_index": str(pred),
        "target_prob": "",
        "probs": "[]",
    }


def test_every_public_chart_is_exported():
    public = {
        n for n, f in vars(charts).items() if callable(f) and not n.startswith("_") and f.__module__ == charts.__name__
    }
    assert public <= set(charts.__all__), sorted(public - set(charts.__all__))
