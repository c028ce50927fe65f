"""Plotly figures that show a teacher *why* steering changed the feedback.

Numbers alone (a judge score, a distance) do not explain what the sparse autoencoders see. These
charts put the same quantities the engine computes -- sparse codes, distances to the six level
prototypes, judge probabilities, evaluation summaries -- into small, consistently coloured pictures:
one colour per Bloom level and one per steering method everywhere, so the web UI and the standalone
HTML report read the same way. The module only builds figures (no gradio import); callers decide
where to show them.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio

from . import methods
from .bloom import LEVELS

__all__ = [
    "LEVEL_COLORS",
    "TEMPLATE",
    "white_by_default",
    "latent_bars",
    "token_latent_heatmap",
    "descent_trace",
    "judge_probs",
    "separability_map",
    "accuracy_by_method_level",
    "judged_vs_target",
    "layer_sweep",
    "judged_shares",
    "ladder_chart",
    "sweep_chart",
    "attention_parts",
    "attention_text",
    "frontier_chart",
    "report_html",
    "saved_figure",
    "figure_from_saved",
]

# Okabe-Ito-like qualitative palette: distinguishable for common colour-vision deficiencies.
LEVEL_COLORS: dict[str, str] = dict(
    zip(LEVELS, ("#0072B2", "#56B4E9", "#009E73", "#E69F00", "#D55E00", "#CC79A7"), strict=True)
)

_FALLBACK_COLORS = ("#8C564B", "#E377C2", "#BCBD22", "#393B79", "#637939", "#843C39")
_PATTERNS = ("", "/", "x", ".", "\\", "+", "-", "|")
_CHANCE = 1.0 / len(LEVELS)
_HEIGHT = 360
_MAX_TOKENS = 120
TEMPLATE = "steer_white"  # every chart's look: plotly_white with the layout all the charts share


def _register_template() -> None:
    """TEMPLATE in plotly's registry of named templates. The shared layout lives in the template, not on each
    figure: a figure's own layout properties are validated one by one as they are set, and the default template
    is taken whole."""
    look = go.layout.Template(pio.templates["plotly_white"])
    look.layout.update(
        title={"x": 0.01, "xanchor": "left", "font": {"size": 15}},
        margin={"l": 10, "r": 10, "t": 48, "b": 10},
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.0, "xanchor": "right", "x": 1.0},
        hoverlabel={"align": "left"},
        xaxis={"automargin": True},  # (a template's axis is every axis's)
        yaxis={"automargin": True},
    )
    pio.templates[TEMPLATE] = look


_register_template()


def white_by_default() -> None:
    """Make TEMPLATE plotly's default for this process (the app and bench call it once). A figure takes the default
    as it is made, as is; a template given to a figure is validated as a deep copy of itself, about 10 ms a figure
    (experiments/click_parts), more than the rest of most charts. The figures are the same either way."""
    pio.templates.default = TEMPLATE


def _white(fig: go.Figure) -> go.Figure:
    """The shared template on `fig`, where the process's default did not already give it."""
    if pio.templates.default != TEMPLATE:
        fig.update_layout(template=TEMPLATE)
    return fig


def saved_figure(fig: go.Figure) -> dict:
    """A figure as a report keeps it: plotly's JSON without the template every chart shares (most of its size)."""
    import json

    data = json.loads(fig.to_json())
    data.get("layout", {}).pop("template", None)
    return data


def figure_from_saved(data: Mapping) -> go.Figure:
    """A saved figure drawn again, in the shared look."""
    return _white(go.Figure(data))


# ---------------------------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------------------------


def _style(fig: go.Figure, title: str, xtitle: str, ytitle: str, height: int = _HEIGHT) -> go.Figure:
    """The shared look (TEMPLATE) with this chart's title, axis titles and height. The axis titles go on the
    primary axes: a right-hand axis keeps its own title."""
    return _white(fig).update_layout(title_text=title, height=height, xaxis_title_text=xtitle, yaxis_title_text=ytitle)


def _made(traces: list[dict], title: str, xtitle: str, ytitle: str, height: int = _HEIGHT, **layout: Any) -> go.Figure:
    """A figure made whole from plain traces and layout, as `_style` would style it: plotly validates it once,
    where each trace added and each layout update validates again (a Compare click's six charts: 50-85 ms made one
    property at a time, 15-26 ms whole, the same JSON; experiments/charts_ab). layout's xaxis and yaxis are dicts
    of the primary axes' properties, given the titles."""
    xaxis, yaxis = layout.pop("xaxis", {}), layout.pop("yaxis", {})
    layout |= {"title": {"text": title}, "height": height}
    layout |= {"xaxis": {**xaxis, "title": {"text": xtitle}}, "yaxis": {**yaxis, "title": {"text": ytitle}}}
    if pio.templates.default != TEMPLATE:
        layout["template"] = TEMPLATE
    return go.Figure({"data": traces, "layout": layout})


def _note(fig: go.Figure, text: str) -> go.Figure:
    """Centre a grey message on an otherwise empty figure."""
    fig.add_annotation(
        text=text, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False, font={"size": 14, "color": "#777"}
    )
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return fig


def _vector(x: Any, name: str) -> np.ndarray:
    """A 1-D float array, or ValueError naming the argument."""
    arr = np.asarray(x, dtype=float)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array, got shape {arr.shape}")
    return arr


def _method_label(method: str) -> str:
    """A method's label from its registry entry (read now: a method registered later has its own)."""
    return methods.REGISTRY[method].label if method in methods.REGISTRY else method


def _method_color(method: str) -> str:
    if method in methods.REGISTRY:
        return methods.REGISTRY[method].color
    return _FALLBACK_COLORS[sum(map(ord, method)) % len(_FALLBACK_COLORS)]


def _check_level(level: str, name: str = "target_level") -> int:
    if level not in LEVELS:
        raise ValueError(f"{name} must be one of {', '.join(LEVELS)}; got {level!r}")
    return LEVELS.index(level)


def _top_ids(scores: np.ndarray, top: int) -> np.ndarray:
    """Indices of the `top` largest scores, largest first (ties: lower index first)."""
    if top < 1:
        raise ValueError(f"top must be >= 1, got {top}")
    return np.argsort(-scores, kind="stable")[: min(top, scores.size)]


def _given_ids(latent_ids: Sequence[int], k: int) -> np.ndarray:
    ids = np.asarray(latent_ids)
    if ids.ndim != 1 or ids.size == 0 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError("latent_ids must be a non-empty 1-D sequence of integers")
    if ids.min() < 0 or ids.max() >= k:
        raise ValueError(f"latent_ids must lie in [0, {k}); got min {ids.min()}, max {ids.max()}")
    return ids


def _latent_labels(ids: np.ndarray) -> list[str]:
    return [f"#{int(i)}" for i in ids]


def _clean_token(tok: str) -> str:
    """Make a token readable as a tick label: visible newlines/tabs, no stray spaces, no HTML."""
    t = str(tok).replace("\r\n", "⏎").replace("\n", "⏎").replace("\r", "⏎").replace("\t", "⇥").strip()
    return html.escape(t, quote=False) if t else "␣"


def _rows(summary_rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Normalise CSV-like rows: strings for method/layers/level, float accuracy."""
    out = []
    for i, row in enumerate(summary_rows):
        missing = [k for k in ("method", "layers", "level", "accuracy") if k not in row]
        if missing:
            raise ValueError(f"summary row {i} lacks {', '.join(missing)}: {dict(row)!r}")
        try:
            acc = float(row["accuracy"])
        except (TypeError, ValueError):
            raise ValueError(f"summary row {i}: accuracy {row['accuracy']!r} is not a number") from None
        layers = str(row["layers"]).strip() or "-"
        setting = str(row.get("setting", "-") or "-").strip() or "-"
        if setting == "-" and " " in layers:  # summaries before the setting column glued it to the layers
            layers, setting = layers.split(" ", 1)
        method, level = str(row["method"]).strip(), str(row["level"]).strip()
        where = layers if setting == "-" else f"{layers} {setting}"
        out.append(
            {"method": method, "layers": layers, "setting": setting, "where": where, "level": level, "accuracy": acc}
        )
    return out


def _add_chance(fig: go.Figure) -> None:
    fig.add_hline(
        y=_CHANCE,
        line={"dash": "dash", "color": "#888", "width": 1},
        annotation_text="chance",
        annotation_position="top left",
        annotation_font={"color": "#666", "size": 11},
    )


# ---------------------------------------------------------------------------------------------
# per-request figures (what steering did to one answer)
# ---------------------------------------------------------------------------------------------


def latent_bars(
    before: Any,
    after: Any,
    prototype: Any,
    latent_ids: Sequence[int] | None = None,
    top: int = 15,
    title: str | None = None,
    level: str | None = None,
    where: tuple[int, int] | None = None,
) -> go.Figure:
    """Grouped bars of one head's mean sparse code before/after steering next to the target prototype.

    Shows the `top` latents with the largest value in any of the three codes (or `latent_ids`). With `where`
    (layer, head) each bar carries its latent's name, "layer.head:latent", which a click opens (the Latents tab).
    """
    b, a, p = _vector(before, "before"), _vector(after, "after"), _vector(prototype, "prototype")
    if not b.shape == a.shape == p.shape:
        raise ValueError(f"before, after and prototype must have the same length; got {b.size}, {a.size}, {p.size}")
    if b.size == 0:
        raise ValueError("before/after/prototype are empty (no latents)")
    ids = _given_ids(latent_ids, b.size) if latent_ids is not None else _top_ids(np.maximum(np.maximum(b, a), p), top)
    x = _latent_labels(ids)
    proto_name = f"{level} prototype" if level else "target prototype"
    proto_color = LEVEL_COLORS.get(level or "", "#444444")
    named = {} if where is None else {"customdata": [f"{where[0]}.{where[1]}:{int(i)}" for i in ids]}
    traces = [
        {
            "type": "bar",
            "x": x,
            "y": vals[ids],
            "name": name,
            "marker": {"color": color},
            "hovertemplate": f"latent %{{x}}<br>{html.escape(name)}: %{{y:.3f}}<extra></extra>",
            **named,
        }
        for name, vals, color in (
            ("before steering", b, "#BBBBBB"),
            ("after steering", a, _method_color("sae")),
            (proto_name, p, proto_color),
        )
    ]
    title = title or "Top latents: before vs after steering vs target"
    return _made(
        traces, title, "SAE latent", "mean activation", barmode="group", bargap=0.25, xaxis={"type": "category"}
    )


def token_latent_heatmap(
    tokens: Sequence[str],
    codes: Any,
    latent_ids: Sequence[int] | None = None,
    top: int = 20,
    title: str | None = None,
    where: tuple[int, int] | None = None,
) -> go.Figure:
    """Heatmap of one head's sparse code per token (rows: tokens, columns: the most active latents).

    Only the last 120 tokens are drawn; the top latents are chosen over those tokens. With `where` (layer, head)
    each cell carries its latent's name, "layer.head:latent", which a click opens (the Latents tab).
    """
    tokens = list(tokens)
    z = np.asarray(codes, dtype=float)
    if z.ndim != 2:
        raise ValueError(f"codes must be a 2-D (tokens, latents) array, got shape {z.shape}")
    if z.shape[0] != len(tokens):
        raise ValueError(f"codes has {z.shape[0]} rows but there are {len(tokens)} tokens")
    title = title or "Sparse code per token (latents × tokens)"
    if z.shape[0] == 0 or z.shape[1] == 0:
        return _style(_note(go.Figure(), "no tokens to show"), title, "", "")
    start = max(0, len(tokens) - _MAX_TOKENS)
    z, tokens = z[start:], tokens[start:]
    ids = _given_ids(latent_ids, z.shape[1]) if latent_ids is not None else _top_ids(z.sum(axis=0), top)
    y = [f"{start + i}: {_clean_token(t)}" for i, t in enumerate(tokens)]
    heat = {
        "type": "heatmap",
        "z": z[:, ids],
        "x": _latent_labels(ids),
        "y": y,
        "colorscale": "Blues",
        "colorbar": {"title": {"text": "activation"}, "thickness": 12},
        "hovertemplate": "token %{y}<br>latent %{x}<br>activation %{z:.3f}<extra></extra>",
    }
    if np.nanmin(z[:, ids]) >= 0:
        heat["zmin"] = 0.0
    if where is not None:
        heat["customdata"] = [[f"{where[0]}.{where[1]}:{int(i)}" for i in ids]] * len(y)
    axes = {"xaxis": {"type": "category"}, "yaxis": {"type": "category", "autorange": "reversed"}}
    return _made([heat], title, "SAE latent", "token (position: text)", height=380, **axes)


def _trace_matrix(trace: Any) -> np.ndarray:
    """A descent trace as a (steps + 1, levels) array, refused with what it should be when it is not one."""
    d = np.asarray(trace, dtype=float)
    if d.ndim != 2 or d.shape[1] != len(LEVELS):
        raise ValueError(f"trace must have shape (steps + 1, {len(LEVELS)}), got {d.shape}")
    if d.shape[0] == 0:
        raise ValueError("trace has no rows (expected at least the 'before' row)")
    return d


def _level_lines(d: np.ndarray, t_idx: int, quantity: str) -> list[dict]:
    """One line per level over the steps: the target's bold, solid and marked, the others thin and dotted, so the
    target's course stands out against the five it is compared with."""
    steps = np.arange(d.shape[0])
    return [
        {
            "type": "scatter",
            "x": steps,
            "y": d[:, j],
            "name": f"{level} (target)" if j == t_idx else level,
            "mode": "lines+markers" if j == t_idx else "lines",
            "line": {
                "color": LEVEL_COLORS[level],
                "width": 4 if j == t_idx else 1.5,
                "dash": "solid" if j == t_idx else "dot",
            },
            "opacity": 1.0 if j == t_idx else 0.7,
            "hovertemplate": f"{level}<br>step %{{x}}<br>{quantity} %{{y:.3f}}<extra></extra>",
        }
        for j, level in enumerate(LEVELS)
    ]


def _objective_line(objective: Any, n_steps: int, name: str) -> tuple[dict, dict]:
    """The descent's own objective, one value per step, on a second y axis (its scale is not the levels' scale):
    (its trace, that axis)."""
    obj = _vector(objective, "objective")
    if len(obj) != n_steps:
        raise ValueError("objective must have one value per step")
    trace = {
        "type": "scatter",
        "x": np.arange(n_steps),
        "y": obj,
        "name": f"descent objective: {name}",
        "mode": "lines",
        "yaxis": "y2",
        "line": {"color": "#222", "width": 2, "dash": "dash"},
        "hovertemplate": f"{name}<br>step %{{x}}<br>%{{y:.3f}}<extra></extra>",
    }
    axis = {"overlaying": "y", "side": "right", "showgrid": False, "title": {"text": name}, "rangemode": "tozero"}
    return trace, axis


def descent_trace(
    trace: Any,
    target_level: str,
    title: str | None = None,
    probs: Any = None,
    objective: Any = None,
    objective_name: str = "what the descent minimises",
) -> go.Figure:
    """Over the steering steps (for the learned offsets, which do no descent: before and after),
    each level's probability under the prototypes (a softmax over negative squared distances: what
    the softmax target raises) when `probs` is given, else the
    distance of the sparse code to each level's prototype; target drawn bold. Either way the
    target's line goes the right way (up, or down) when steering moves the code toward its level."""
    t_idx = _check_level(target_level)
    d = _trace_matrix(trace if probs is None else probs)
    traces = _level_lines(d, t_idx, "probability" if probs is not None else "distance")
    layout: dict[str, Any] = {"xaxis": {"tickmode": "auto", "rangemode": "tozero"}}
    if objective is not None:
        trace, layout["yaxis2"] = _objective_line(objective, d.shape[0], objective_name)
        traces.append(trace)
    if probs is not None:
        layout["yaxis"] = {"range": [0, 1]}
        title = title or f"Steering toward '{target_level}': each level's probability under the prototypes"
        return _made(traces, title, "steering step", "probability of the level", **layout)
    title = title or f"Descent toward '{target_level}': distance to each level's prototype"
    return _made(traces, title, "descent step", "distance to prototype", **layout)


def judge_probs(probs: Mapping[str, Sequence[float]], target_level: str, title: str | None = None) -> go.Figure:
    """Grouped bars of the judge's six level probabilities, one series per method; target level shaded."""
    t_idx = _check_level(target_level)
    title = title or "Judge: probability of each level, per method"
    traces = []
    for method, values in probs.items():
        v = _vector(values, f"probs[{method!r}]")
        if v.size != len(LEVELS):
            raise ValueError(f"probs[{method!r}] must have {len(LEVELS)} values (one per level), got {v.size}")
        label = _method_label(method)
        traces.append(
            {
                "type": "bar",
                "x": list(LEVELS),
                "y": v,
                "name": label,
                "marker": {"color": _method_color(method)},
                "hovertemplate": f"{html.escape(label)}<br>%{{x}}: %{{y:.2f}}<extra></extra>",
            }
        )
    if not traces:
        return _style(_note(go.Figure(), "no judge results"), title, "", "")
    shade = {  # the target's column, as add_vrect draws it
        "type": "rect", "xref": "x", "yref": "y domain", "x0": t_idx - 0.5, "x1": t_idx + 0.5, "y0": 0, "y1": 1,
        "fillcolor": LEVEL_COLORS[target_level], "opacity": 0.15, "layer": "below", "line": {"width": 0},
    }  # fmt: skip
    ticktext = [f"<b>{lv} (target)</b>" if i == t_idx else lv for i, lv in enumerate(LEVELS)]
    xaxis = {"type": "category", "tickmode": "array", "tickvals": list(LEVELS), "ticktext": ticktext}
    return _made(
        traces, title, "Bloom level", "judge probability", shapes=[shade], barmode="group", bargap=0.2,
        xaxis=xaxis, yaxis={"range": [0, 1]},
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# model-level and evaluation figures
# ---------------------------------------------------------------------------------------------


def separability_map(
    scores: Any,
    layers: Sequence[Any] | None = None,
    title: str | None = None,
    highlight: tuple[Any, Sequence[int]] | None = None,
) -> go.Figure:
    """Heatmap of prototype separability per (layer, head); NaN = no SAE; `highlight` outlines chosen cells."""
    s = np.asarray(scores, dtype=float)
    if s.ndim != 2:
        raise ValueError(f"scores must be a 2-D (layers, heads) array, got shape {s.shape}")
    n_layers, n_heads = s.shape
    layer_labels = [str(v) for v in (range(n_layers) if layers is None else layers)]
    if len(layer_labels) != n_layers:
        raise ValueError(f"layers has {len(layer_labels)} labels but scores has {n_layers} rows")
    heads = [str(h) for h in range(n_heads)]
    finite = np.isfinite(s)
    cell = np.char.add(
        np.char.add(np.char.add("layer ", np.asarray(layer_labels)[:, None]), ", head "), np.asarray(heads)[None, :]
    )
    text = np.char.add(np.char.add(cell, ": "), np.where(finite, np.char.mod("%.3f", np.nan_to_num(s)), "no SAE"))
    heat = {
        "type": "heatmap",
        "z": s,
        "x": heads,
        "y": layer_labels,
        "text": text,
        "colorscale": "Viridis",
        "hoverongaps": True,
        "colorbar": {"title": {"text": "separability"}, "thickness": 12},
        "hovertemplate": "%{text}<extra></extra>",
    }
    layout: dict[str, Any] = {"xaxis": {"type": "category"}, "yaxis": {"type": "category"}}
    if highlight is not None:
        h_layer, h_heads = highlight
        if str(h_layer) not in layer_labels:
            raise ValueError(f"highlight layer {h_layer!r} is not one of the layers {layer_labels}")
        row = layer_labels.index(str(h_layer))
        for h in h_heads:
            if not 0 <= int(h) < n_heads:
                raise ValueError(f"highlight head {h} is out of range [0, {n_heads})")
        outline = {"type": "rect", "xref": "x", "yref": "y", "line": {"color": "#D62728", "width": 3}}
        layout["shapes"] = [
            {**outline, "x0": int(h) - 0.5, "x1": int(h) + 0.5, "y0": row - 0.5, "y1": row + 0.5,
             "fillcolor": "rgba(0,0,0,0)"}
            for h in h_heads
        ]  # fmt: skip
    if not finite.any():
        note = {"text": "no trained SAEs", "x": 0.5, "y": 0.5, "xref": "paper", "yref": "paper", "showarrow": False}
        layout["annotations"] = [note]
    title = title or "Where do the six levels differ? Prototype separability per layer and head"
    return _made([heat], title, "head h", "layer l", **layout)


def accuracy_by_method_level(summary_rows: Sequence[Mapping[str, Any]], title: str | None = None) -> go.Figure:
    """Grouped bars of target-level accuracy per level, one series per (method, layers); chance at 1/6."""
    title = title or "Target-level accuracy by method and level"
    rows = [r for r in _rows(summary_rows) if r["level"] != "ALL"]
    for r in rows:
        _check_level(r["level"], "level")
    series: dict[tuple[str, str], np.ndarray] = {}
    for r in rows:
        y = series.setdefault((r["method"], r["where"]), np.full(len(LEVELS), np.nan))
        y[LEVELS.index(r["level"])] = r["accuracy"]
    fig = go.Figure()
    if not series:
        return _style(_note(fig, "no per-level rows in this evaluation"), title, "", "")
    seen: dict[str, int] = {}
    for (method, layers), y in series.items():
        label = _method_label(method) if layers == "-" else f"{_method_label(method)} ({layers})"
        k = seen[method] = seen.get(method, -1) + 1  # same method at other layers: same colour, new pattern
        fig.add_trace(
            go.Bar(
                x=list(LEVELS),
                y=y,
                name=label,
                marker={"color": _method_color(method), "pattern": {"shape": _PATTERNS[k % len(_PATTERNS)]}},
                hovertemplate=f"{html.escape(label)}<br>%{{x}}: %{{y:.2f}}<extra></extra>",
            )
        )
    _add_chance(fig)
    fig.update_layout(barmode="group", bargap=0.2)
    fig.update_xaxes(type="category")
    fig.update_yaxes(range=[0, 1])
    return _style(fig, title, "target Bloom level", "target-level accuracy")


def judged_vs_target(summary_rows: Sequence[Mapping[str, Any]], title: str | None = None) -> go.Figure:
    """Mean judged level against target level, one line per method variant, with the diagonal that
    perfect steering would follow and unsteered's flat line (it does not depend on the target)."""
    title = title or "Judged level against target level"
    series: dict[str, np.ndarray] = {}
    for i, row in enumerate(summary_rows):
        if str(row.get("level", "")).strip() not in LEVELS:
            continue
        try:
            y = float(row["mean_level_index"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"summary row {i} lacks a numeric mean_level_index") from None
        method, layers = str(row["method"]).strip(), str(row.get("layers", "-")).strip() or "-"
        setting = str(row.get("setting", "-") or "-").strip() or "-"
        layers = layers if setting == "-" else f"{layers} {setting}"
        label = _method_label(method) if layers == "-" else f"{_method_label(method)} ({layers})"
        series.setdefault(label, np.full(len(LEVELS), np.nan))[LEVELS.index(str(row["level"]).strip())] = y
    fig = go.Figure()
    if not series:
        return _style(_note(fig, "no per-level rows in this evaluation"), title, "", "")
    idx = list(range(len(LEVELS)))
    fig.add_trace(
        go.Scatter(
            x=list(LEVELS),
            y=idx,
            mode="lines",
            name="perfect steering",
            line={"dash": "dot", "color": "#999"},
            hoverinfo="skip",
        )
    )
    used = set()
    for label, y in series.items():
        method = label.split(" (")[0]  # a method's first variant gets its colour, the others plotly's
        color = (
            None if method in used else next((m.color for m in methods.REGISTRY.values() if m.label == method), None)
        )
        used.add(method)
        fig.add_trace(
            go.Scatter(
                x=list(LEVELS),
                y=y,
                mode="lines+markers",
                name=label,
                line={"color": color} if color else None,
                hovertemplate=f"{html.escape(label)}<br>target %{{x}}: judged %{{y:.2f}}<extra></extra>",
            )
        )
    fig.update_xaxes(type="category")
    fig.update_yaxes(range=[-0.2, len(LEVELS) - 0.8], tickvals=idx, ticktext=list(LEVELS))
    fig = _style(fig, title, "target Bloom level", "mean judged level", height=560)
    fig.update_layout(
        legend={"orientation": "v", "yanchor": "top", "y": -0.22, "xanchor": "left", "x": 0},
        margin={"l": 70, "r": 10, "t": 48, "b": 10},
    )  # long names: listed below the plot
    return fig


def judged_shares(summary_rows: Sequence[Mapping[str, Any]], title: str | None = None) -> go.Figure:
    """One stacked bar per method: the share of its replies the judge reads at each level, over all
    target levels (an even spread is what steering that follows the target gives; a method stuck on
    one level shows one colour)."""
    title = title or "Which levels the judge reads, per method"
    rows = [r for r in summary_rows if str(r.get("level", "")).strip() == "ALL"]
    fig = go.Figure()
    if not rows:
        return _style(_note(fig, "no results yet"), title, "", "")
    names = [_method_label(str(r["method"])) for r in rows]
    for lv in LEVELS:
        shares = [float(r.get(f"judged_{lv}", 0.0) or 0.0) for r in rows]
        fig.add_trace(
            go.Bar(
                y=names,
                x=shares,
                name=lv,
                orientation="h",
                marker={"color": LEVEL_COLORS[lv]},
                hovertemplate=f"%{{y}}<br>judged {lv}: %{{x:.0%}}<extra></extra>",
            )
        )
    fig.update_layout(barmode="stack", yaxis={"autorange": "reversed"})
    fig.update_xaxes(range=[0, 1], tickformat=".0%")
    return _style(fig, title, "share of the replies", "")


def layer_sweep(summary_rows: Sequence[Mapping[str, Any]], title: str | None = None) -> go.Figure:
    """Overall accuracy against the single steered layer, one line per method; unsteered baselines dashed."""
    title = title or "Layer sweep: accuracy vs steered layer"
    rows = [r for r in _rows(summary_rows) if r["level"] == "ALL"]
    single = [r for r in rows if r["layers"].isdigit()]
    fig = go.Figure()
    if not single:
        return _style(_note(fig, "no single-layer runs in this evaluation"), title, "steered layer", "accuracy")
    by_method: dict[tuple[str, str], dict[int, float]] = {}  # one line per method and steering setting
    for r in single:
        by_method.setdefault((r["method"], r["setting"]), {})[int(r["layers"])] = r["accuracy"]
    all_layers = np.array([int(r["layers"]) for r in single])
    lo, hi = int(all_layers.min()), int(all_layers.max())
    if lo == hi:
        lo, hi = lo - 1, hi + 1
    settings = {m: sum(k[0] == m for k in by_method) for m, _ in by_method}
    for (method, setting), points in by_method.items():
        xs = np.array(sorted(points))
        label = (
            _method_label(method) if settings[method] == 1 or setting == "-" else f"{_method_label(method)} ({setting})"
        )
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=[points[int(x)] for x in xs],
                name=label,
                mode="lines+markers",
                line={"color": _method_color(method), "width": 2.5},
                hovertemplate=f"{html.escape(label)}<br>layer %{{x}}: %{{y:.2f}}<extra></extra>",
            )
        )
    refs: dict[str, float] = {}
    for r in rows:
        if r["layers"] == "-":
            refs[r["method"]] = r["accuracy"]
    for method, acc in refs.items():
        label = _method_label(method)
        fig.add_trace(
            go.Scatter(
                x=[lo, hi],
                y=[acc, acc],
                name=label,
                mode="lines",
                line={"color": _method_color(method), "width": 1.5, "dash": "dash"},
                hovertemplate=f"{html.escape(label)} (no steered layer): {acc:.2f}<extra></extra>",
            )
        )
    _add_chance(fig)
    fig.update_xaxes(tickmode="auto")
    fig.update_yaxes(range=[0, 1])
    return _style(fig, title, "steered layer", "target-level accuracy")


# ---------------------------------------------------------------------------------------------
# teacher views: the level ladder, the strength sweep, what steering changes in attention
# ---------------------------------------------------------------------------------------------


def ladder_chart(
    targets: Sequence[str],
    judged: Sequence[str],
    target_probs: Sequence[float],
    methods: Sequence[str],
    title: str | None = None,
) -> go.Figure:
    """One marker per steered reply at (target level, judged level), one series per method, with the
    diagonal of perfect steering; bars: the judge's probability of the target level per column."""
    if not len(targets) == len(judged) == len(target_probs) == len(methods):
        raise ValueError("targets, judged, target_probs and methods must have the same length")
    for lv in (*targets, *judged):
        _check_level(lv, "level")
    traces = [
        {
            "type": "scatter", "x": list(LEVELS), "y": list(LEVELS), "mode": "lines", "name": "perfect steering",
            "line": {"color": "#BBB", "dash": "dash"}, "hoverinfo": "skip",
        }
    ]  # fmt: skip
    for m in dict.fromkeys(methods):
        idx = [i for i, mm in enumerate(methods) if mm == m]
        x = [targets[i] for i in idx]
        traces.append(
            {
                "type": "bar",
                "x": x,
                "y": [float(target_probs[i]) for i in idx],
                "name": f"{_method_label(m)}: probability of the target",
                "marker": {"color": _method_color(m), "opacity": 0.25},
                "yaxis": "y2",
                "offsetgroup": m,
                "hovertemplate": "target %{x}<br>probability %{y:.2f}<extra></extra>",
            }
        )
        traces.append(
            {
                "type": "scatter",
                "x": x,
                "y": [judged[i] for i in idx],
                "mode": "markers",
                "name": f"{_method_label(m)}: judged level",
                "marker": {"color": _method_color(m), "size": 14, "line": {"width": 1, "color": "white"}},
                "hovertemplate": "target %{x}<br>judged %{y}<extra></extra>",
            }
        )
    levels = {"categoryorder": "array", "categoryarray": list(LEVELS), "type": "category"}
    right = {"overlaying": "y", "side": "right", "range": [0, 1], "showgrid": False, "title": {"text": "probability"}}
    title = title or "Judged level against the level asked for"
    return _made(
        traces, title, "target level", "judged level", xaxis=levels, yaxis=levels, yaxis2=right, barmode="group"
    )


def sweep_chart(
    strengths: Sequence[float],
    target_probs: Sequence[float],
    perplexities: Sequence[float],
    level: str,
    baseline_ppl: float | None = None,
    title: str | None = None,
) -> go.Figure:
    """The trade-off in one picture: the judge's probability of the target level (left axis) and the
    reply's perplexity under the unsteered model (right axis) against steering strength."""
    _check_level(level, "level")
    x = _vector(strengths, "strengths")
    p = _vector(target_probs, "target_probs")
    ppl = _vector(perplexities, "perplexities")
    if not len(x) == len(p) == len(ppl):
        raise ValueError("strengths, target_probs and perplexities must have the same length")
    traces = [
        {
            "type": "scatter",
            "x": x,
            "y": p,
            "mode": "lines+markers",
            "name": f"probability of '{level}' (judge)",
            "line": {"color": LEVEL_COLORS[level], "width": 3},
            "hovertemplate": "strength %{x}<br>probability %{y:.2f}<extra></extra>",
        },
        {
            "type": "scatter",
            "x": x,
            "y": ppl,
            "mode": "lines+markers",
            "name": "perplexity (lower = more fluent)",
            "yaxis": "y2",
            "line": {"color": "#555", "dash": "dot"},
            "hovertemplate": "strength %{x}<br>perplexity %{y:.2f}<extra></extra>",
        },
    ]
    if baseline_ppl is not None and np.isfinite(baseline_ppl):
        traces.append(
            {
                "type": "scatter",
                "x": [x.min(), x.max()],
                "y": [1.5 * baseline_ppl] * 2,
                "mode": "lines",
                "yaxis": "y2",
                "name": "1.5x the unsteered perplexity",
                "line": {"color": "#D55E00", "dash": "dash", "width": 1},
                "hoverinfo": "skip",
            }
        )
    right = {"overlaying": "y", "side": "right", "title": {"text": "perplexity"}}
    title = title or f"Steering strength toward '{level}'"
    return _made(traces, title, "strength", "probability of the level", yaxis={"range": [0, 1]}, yaxis2=right)


def attention_parts(
    parts: Sequence[str], unsteered: Sequence[float], steered: Sequence[float], title: str | None = None
) -> go.Figure:
    """Share of the reply's attention on each part of the prompt, unsteered against steered."""
    u, st = _vector(unsteered, "unsteered"), _vector(steered, "steered")
    if not len(parts) == len(u) == len(st):
        raise ValueError("parts, unsteered and steered must have the same length")
    traces = [
        {
            "type": "bar",
            "x": list(parts),
            "y": vals,
            "name": name,
            "marker": {"color": color},
            "hovertemplate": "%{x}<br>" + name + " %{y:.3f}<extra></extra>",
        }
        for name, vals, color in (("unsteered", u, _method_color("none")), ("steered", st, _method_color("sae")))
    ]
    title = title or "Where the reply looks in the prompt"
    return _made(traces, title, "part of the prompt", "share of attention", barmode="group")


def attention_text(tokens: Sequence[str], change: Sequence[float], start: int = 0, end: int | None = None) -> str:
    """The prompt as HTML, each token shaded by how much more (orange) or less (blue) the steered reply
    reads it than the unsteered one; `change` is per token, tokens[start:end] are shown."""
    c = _vector(change, "change")
    if len(c) != len(tokens):
        raise ValueError("tokens and change must have the same length")
    end = len(tokens) if end is None else end
    scale = float(np.abs(c[start:end]).max()) if end > start else 0.0
    out = []
    for tok, v in zip(tokens[start:end], c[start:end]):
        a = 0.0 if scale == 0 else min(1.0, abs(float(v)) / scale)
        rgb = "230,120,20" if v > 0 else "30,110,200"
        text = html.escape(tok).replace("\n", "<br>")
        style = f"background:rgba({rgb},{a * 0.85:.2f});border-radius:2px"
        out.append(f'<span title="{float(v):+.4f}" style="{style}">{text}</span>')
    return '<div class="attention-text" style="line-height:1.7;font-family:monospace">' + "".join(out) + "</div>"


def _error_bar(value: float, lo: float, hi: float) -> dict:
    return {"type": "data", "symmetric": False, "array": [hi - value], "arrayminus": [value - lo]}


def _frontier_point(c) -> go.Scatter:
    """A prompt baseline: one point with its intervals in accuracy and perplexity."""
    (p,) = c.points()
    return go.Scatter(
        x=[p["ppl_ratio"]],
        y=[p["accuracy"]],
        mode="markers",
        name=c.shown,
        marker={"color": _method_color(c.method), "size": 12, "symbol": "diamond"},
        error_y=_error_bar(p["accuracy"], p["accuracy_lo"], p["accuracy_hi"]),
        error_x=_error_bar(p["ppl_ratio"], p["ppl_ratio_lo"], p["ppl_ratio_hi"]),
        hovertemplate=f"{html.escape(c.shown)}<br>accuracy %{{y:.3f}} [{p['accuracy_lo']:.3f}, "
        f"{p['accuracy_hi']:.3f}]<br>r {p['level_corr']:.2f}<br>perplexity %{{x:.2f}}x<extra></extra>",
    )


def _frontier_curve(c, dash: str) -> list[go.Scatter]:
    """A method along its strengths from the unsteered origin: the band of the accuracy intervals, then the line."""
    color, pts = _method_color(c.method), c.points()
    x = [1.0] + [p["ppl_ratio"] for p in pts]
    y = [_CHANCE] + [p["accuracy"] for p in pts]
    lo = [_CHANCE] + [p["accuracy_lo"] for p in pts]
    hi = [_CHANCE] + [p["accuracy_hi"] for p in pts]
    band = go.Scatter(
        x=x + x[::-1], y=hi + lo[::-1], fill="toself", fillcolor=color, opacity=0.12, line={"width": 0},
        hoverinfo="skip", showlegend=False,
    )  # fmt: skip
    text = ["unsteered"] + [
        f"alpha {p['alpha']:g}: accuracy {p['accuracy']:.3f} [{p['accuracy_lo']:.3f}, {p['accuracy_hi']:.3f}], "
        f"r {p['level_corr']:.2f}"
        for p in pts
    ]
    line = go.Scatter(
        x=x, y=y, mode="lines+markers", name=c.shown, line={"color": color, "dash": dash, "width": 2},
        marker={"color": color, "size": 7}, text=text,
        hovertemplate=f"{html.escape(c.shown)}<br>%{{text}}<br>perplexity %{{x:.2f}}x<extra></extra>",
    )  # fmt: skip
    return [band, line]


def _clip_frontier(fig: go.Figure, frontier, x_max: float) -> None:
    """Keep the axis on the range where methods are compared: points past x_max (a setting that broke the
    text) are named in a note instead of stretching the axis until every other curve is a vertical line."""
    beyond = {
        c.shown: [p["ppl_ratio"] for p in c.points() if p["ppl_ratio"] > x_max] for c in frontier.curves
    }  # fmt: skip
    beyond = {name: xs for name, xs in beyond.items() if xs}
    if not beyond:
        return
    fig.update_xaxes(range=[0.95, x_max])
    text = "; ".join(f"{name} at {', '.join(f'{x:.1f}x' for x in xs)}" for name, xs in beyond.items())
    fig.add_annotation(
        text=f"past {x_max:g}x, not drawn: {html.escape(text)}", xref="paper", yref="paper", x=0.99, y=0.99,
        xanchor="right", yanchor="top", showarrow=False, font={"size": 10, "color": "#666"},
        bgcolor="rgba(255,255,255,0.8)",
    )  # fmt: skip


def frontier_chart(
    frontier, title: str | None = None, margin: float = 1.4, budget: float = 1.5, x_max: float = 2.0
) -> go.Figure:
    """Accuracy against perplexity ratio: one line per method along its strengths (from the unsteered
    origin), a band for each point's 95% interval; prompt baselines as points with both intervals. Read
    methods against each other along a vertical line: at the same fluency."""
    fig = go.Figure()
    dashes = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")
    seen: dict[str, int] = {}
    for c in frontier.curves:
        if c.is_point:
            fig.add_trace(_frontier_point(c))
            continue
        dash = dashes[seen.get(c.method, 0) % len(dashes)]
        seen[c.method] = seen.get(c.method, 0) + 1
        fig.add_traces(_frontier_curve(c, dash))
    _add_chance(fig)
    lines = (
        (margin, f"{margin:g}x: the validation margin", "top left"),
        (budget, f"{budget:g}x: the budget", "top right"),
    )
    for x, label, where in lines:  # labels on either side of their lines, so the two never overlap
        fig.add_vline(
            x=x,
            line={"dash": "dot", "color": "#999", "width": 1},
            annotation_text=label,
            annotation_position=where,
            annotation_font={"color": "#666", "size": 10},
        )
    _style(
        fig,
        title or f"Accuracy against fluency ({frontier.n_scenarios} scenarios; bands: 95% intervals)",
        "perplexity of the reply, x unsteered (lower is more fluent)",
        "judged level = target level",
        height=460 + 22 * ((len(frontier.curves) + 1) // 2),
    )
    fig.update_yaxes(range=[0, 1])
    _clip_frontier(fig, frontier, x_max)
    # under the plot, off the data, two names a row: a legend beside the axes would squeeze them, one inside
    # the plot covered the curves
    fig.update_layout(
        legend={"orientation": "h", "x": 0, "y": -0.18, "xanchor": "left", "yanchor": "top", "entrywidth": 0.5,
                "entrywidthmode": "fraction"},
        margin={"b": 40 + 22 * ((len(frontier.curves) + 1) // 2)},
    )  # fmt: skip
    return fig


# ---------------------------------------------------------------------------------------------
# standalone report
# ---------------------------------------------------------------------------------------------


def report_html(figures: Sequence[go.Figure], title: str, intro_html: str = "") -> str:
    """A self-contained HTML page (plotly.js inlined once, works offline) with a heading, intro and figures."""
    parts = []
    for i, fig in enumerate(figures):
        if not isinstance(fig, go.Figure):
            raise ValueError(f"figures[{i}] is {type(fig).__name__}, not a plotly Figure")
        parts.append(
            '<section class="chart">'
            + fig.to_html(
                full_html=False,
                include_plotlyjs="inline" if i == 0 else False,
                config={"displaylogo": False, "responsive": True},
            )
            + "</section>"
        )
    head = html.escape(title)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{head}</title>\n"
        "<style>body{font-family:system-ui,sans-serif;max-width:1000px;margin:1.5em auto;padding:0 1em;color:#222}"
        ".chart{margin:1.2em 0}</style>\n</head>\n<body>\n"
        f'<h1>{head}</h1>\n<div class="intro">{intro_html}</div>\n' + "\n".join(parts) + "\n</body>\n</html>\n"
    )
