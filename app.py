"""Bloom steering demo: the web UI. Widgets, events and layout only; the work is in steer_core.

    python app.py        # http://127.0.0.1:7860 (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT)

Environment: STEER_MODEL (default: the embedded SmolLM2-135M-Instruct with its feedback
adapter), STEER_DEVICE (auto | cpu | cuda), STEER_CONCURRENCY (requests served at once, default 4).
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import os
import tempfile

try:  # ZeroGPU on Hugging Face Spaces: `spaces` must be imported before CUDA is touched
    import spaces

    gpu = spaces.GPU(duration=120)
    gpu_long = spaces.GPU(duration=300)  # 5 minutes: the most one call may ask for,
    # per a ZeroGPU maintainer's answer in huggingface.co/spaces/zero-gpu-explorers/README/discussions/7
except ImportError:  # anywhere else generation simply runs on the device steer_core picked

    def gpu(fn):
        return fn

    gpu_long = gpu


import gradio as gr

from steer_core import charts, methods
from steer_core.bloom import DESCRIPTIONS, LEVELS, load_dataset, scenarios
from steer_core.errors import UserError
from steer_core.generation import MAX_INPUT_CHARS, MAX_NEW_TOKENS, REPLY_TOKENS
from steer_core.inspect.attention import steering_attention
from steer_core.inspect.latents import inspect_steering, separability_scores
from steer_core.layer_spec import layers_label, parse_layers
from steer_core.model.loading import load_model
from steer_core.paths import DEFAULT_MODEL
from steer_core.sae.module import SAETrainConfig
from steer_core.steering import targets
from steer_core.steering.config import MAX_STEPS, POSITIONS, RESIDUAL_LAYERS, SteerConfig
from steer_core.steering.offset_files import load_offsets
from steer_core.views.compare import MAX_STRENGTH, OPTIONAL_FLAGS, CompareRequest, compare_stream
from steer_core.views.evidence import SPLITS, evidence
from steer_core.views.ladder import DEFAULT_STRENGTHS, LADDER_BASELINES, MAX_SWEEP, ladder_stream, sweep_stream
from steer_core.views.question_sets import METHODS as SET_METHODS
from steer_core.views.question_sets import evaluate_set, read_question_set, scenario_limit

log = logging.getLogger("bloom-steer")
MODEL = os.environ.get("STEER_MODEL", DEFAULT_MODEL)
DEVICE = os.environ.get("STEER_DEVICE", "auto")
DEFAULTS = SteerConfig()
SAE_DEFAULTS = SAETrainConfig()
DEFAULT_BAND = layers_label(DEFAULTS.layers)
METHOD_ORDER = methods.COMPARE + methods.COMPARE_OPTIONAL
HEADLINES = {m: methods.headline(m) for m in METHOD_ORDER}
LEVEL_CHOICES = [(f"{lv.capitalize()}: {DESCRIPTIONS[lv]}", lv) for lv in LEVELS]
USER_ERRORS = (UserError,)  # bad input the user can fix; anything else is logged as an internal error


def _named(cls):
    """A component factory whose validation errors name the setting, so an API caller knows which
    value is wrong ("Max new tokens: Value 0 is less than minimum value 1."). Wraps the instance's
    preprocess: a subclass would make Gradio write an app.pyi stub next to this file."""

    def make(*args, **kwargs):
        component = cls(*args, **kwargs)
        inner = component.preprocess

        def preprocess(payload):
            try:
                return inner(payload)
            except gr.Error as exc:
                raise gr.Error(f"{component.label}: {exc.message}", title="Please check the input") from None

        component.preprocess = preprocess
        return component

    return make


Slider, Number, Radio, CheckboxGroup, Dropdown = map(
    _named, (gr.Slider, gr.Number, gr.Radio, gr.CheckboxGroup, gr.Dropdown)
)


def lm():
    return load_model(MODEL, device=DEVICE)


def layer_choices(n_layers: int) -> list[tuple[str, str]]:
    every = f"0-{n_layers - 1}"
    bands = [(f"{DEFAULT_BAND}: the validated default (recommended)", DEFAULT_BAND)]
    if every != DEFAULT_BAND:
        bands.append((f"{every}: every layer", every))
    return bands + [(f"{i}", str(i)) for i in range(n_layers)]


def example_rows(n: int = 8) -> list[list[str]]:
    """Ready examples from the test split (never seen by the SAEs, prototypes or judge)."""
    picks = scenarios(load_dataset(split="test"))[::2][:n]
    return [[s.question, s.student_answer, LEVELS[i % len(LEVELS)]] for i, s in enumerate(picks)]


def _probs_label(verdict: dict | None) -> dict | None:
    return None if verdict is None else dict(verdict["probs"])


def _user_error(exc: Exception) -> gr.Error:
    return gr.Error(str(exc), title="Please check the input")


def guarded(name: str):
    """Run a streaming handler so that bad input is reported as such and anything else as an internal
    error (logged), and the app keeps serving either way."""

    def wrap(fn):
        @functools.wraps(fn)
        def handler(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except USER_ERRORS as exc:
                raise _user_error(exc) from None
            except gr.Error:
                raise
            except Exception as exc:
                log.exception("%s failed", name)
                raise gr.Error(
                    f"Internal error ({type(exc).__name__}); the app is still running, please try again."
                ) from None

        return handler

    return wrap


@gpu
@guarded("compare")
def compare(
    question,
    student_answer,
    level,
    layers=DEFAULT_BAND,
    heads=None,
    strength=1.0,
    steps=DEFAULTS.steps,
    lr=DEFAULTS.lr,
    mu=DEFAULTS.mu,
    target=DEFAULTS.target,
    positions=DEFAULTS.positions,
    max_new_tokens=REPLY_TOKENS,
    seed=0,
    k_shots=3,
    instruction=False,
    residual_vector=False,
):
    """Unsteered, SAE-steered, query-steered and few-shot feedback (and on request the instruction
    prompt's and the residual-stream vector's) for one question and answer, streamed; then judge
    verdicts, charts and a JSON report.
    This signature is the /compare API (names, order, defaults); the UI's inputs follow it."""
    req = CompareRequest.from_ui(**{name: value for name, value in locals().items() if name in COMPARE_API})
    model = lm()
    last = None
    for last in compare_stream(model, req):
        if not last.judgements:
            yield (
                *_final_texts(last),
                *[gr.skip()] * len(METHOD_ORDER),  # the verdicts
                *[gr.skip()] * 5,  # the charts
                gr.skip(),
                f"Generating... {max(o.new_tokens for o in last.outputs.values())} tokens",
                gr.skip(),
                gr.skip(),
            )
    view = inspect_steering(
        model, req.question, req.student_answer, req.level, req.steer("sae"), last.outputs["sae"].token_ids
    )
    attention = steering_attention(
        model,
        req.question,
        req.student_answer,
        req.level,
        req.steer("sae"),
        last.outputs["sae"].token_ids,
        layer=view.layer,
    )
    yield (
        *_final_texts(last),
        *_labels(last),
        *_figures(model, req, last, view),
        _report(model, last),
        _status(last, view),
        *_attention_outputs(attention, req.level, model.n_heads),
    )


COMPARE_API = tuple(inspect.signature(compare).parameters)  # the endpoint's parameters, in order


def _attention_outputs(view, level, n_heads):
    names, unsteered, steered = view.part_shares()
    heads = "all heads" if len(view.heads) == n_heads else "heads " + ", ".join(map(str, view.heads))
    where = f"layer {view.layer}, {heads}"
    fig = charts.attention_parts(
        names, unsteered, steered, title=f"Where the SAE-steered reply looks, steered toward '{level}' or not ({where})"
    )
    return fig, charts.attention_text(view.tokens, view.change.tolist())


def _final_texts(result):
    return [result.outputs[m].text if m in result.outputs else "" for m in METHOD_ORDER]


def _labels(result):
    return [_probs_label(result.judgements.get(m)) for m in METHOD_ORDER]


def _figures(model, req, result, view):
    before, after = view.mean_codes()
    fb = slice(view.prompt_len, None)
    title_where = f"layer {view.layer}, head {view.head}"
    bars = charts.latent_bars(
        before,
        after,
        view.prototype,
        level=req.level,
        title=f"Top latents ({title_where}): before vs after steering vs '{req.level}' prototype",
    )
    heat = charts.token_latent_heatmap(
        view.tokens[fb] or view.tokens,
        view.after[fb] if view.after[fb].size else view.after,
        title=f"Sparse code per token of the SAE-steered feedback ({title_where})",
    )
    trace = charts.descent_trace(
        view.trace, req.level, probs=view.level_probs, objective=view.objective, objective_name=view.objective_name
    )
    probs = charts.judge_probs({m: [v["probs"][lv] for lv in LEVELS] for m, v in result.judgements.items()}, req.level)
    layers, scores = separability_scores(model)
    shown = list(range(model.n_heads)) if req.heads is None else list(req.heads)
    sep = charts.separability_map(scores, layers, highlight=(view.layer, shown))
    return bars, heat, trace, probs, sep


def _report(model, result) -> str:
    record = result.record(model.name + (" + feedback adapter" if model.adapter else ""))
    fd, path = tempfile.mkstemp(prefix="bloom-steer-run-", suffix=".json")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(record, fh, indent=1)
    return path


def _status(result, view) -> str:
    req = result.request
    hits = [m for m, v in result.judgements.items() if v["pred"] == req.level]
    hit_text = ", ".join(methods.LABELS[m] for m in hits) or "none of the methods"
    return (
        f"Done in {result.seconds:.1f} s. The judge reads **{hit_text}** as '{req.level}'. "
        f"Steered layers {layers_label(req.layers)}, strength {req.strength:g} "
        f"(alpha {req.steer('sae').alpha:g}, target {req.target}); "
        f"charts show layer {view.layer}, head {view.head}."
    )


def _save(record: dict, csv_text: str, kind: str) -> tuple[str, str]:
    return _temp_file(kind, ".json", json.dumps(record, indent=1)), _temp_file(kind, ".csv", csv_text)


def _view_request(question, student_answer, level, strength, max_new_tokens, layers, target, seed):
    return CompareRequest.from_ui(
        question,
        student_answer,
        level,
        layers=layers,
        strength=strength,
        target=target,
        max_new_tokens=max_new_tokens,
        seed=seed,
    )


N_LADDER = 1 + len(LEVELS)


@gpu
@guarded("ladder")
def ladder(
    question,
    student_answer,
    baseline="none",
    strength=1.0,
    max_new_tokens=REPLY_TOKENS,
    layers=DEFAULT_BAND,
    target=DEFAULTS.target,
    seed=0,
):
    """The same question answered at every Bloom level: unsteered, then SAE-steered toward remember ..
    create (and the same for a baseline on request), one batch; then verdicts, the chart and downloads."""
    req = _view_request(question, student_answer, "analyze", strength, max_new_tokens, layers, target, seed)
    model = lm()
    last = None

    def texts(result):  # the seven ladder replies, then the six baseline ones ("" without a baseline)
        out = [o.text for o in result.outputs]
        return out[:N_LADDER], out[N_LADDER:] + [""] * (N_LADDER + len(LEVELS) - len(out))

    for last in ladder_stream(model, req, baseline):
        if not last.done:
            ladder_texts, base_texts = texts(last)
            n = max(o.new_tokens for o in last.outputs)
            yield (*ladder_texts, *[gr.skip()] * N_LADDER, *base_texts, *[gr.skip()] * 3, f"Generating... {n} tokens")
    ladder_texts, base_texts = texts(last)
    labels = [dict(v["probs"]) for v in last.verdicts]
    steered = [i for i, r in enumerate(last.rows) if r.method != "none"]
    fig = charts.ladder_chart(
        [last.rows[i].level for i in steered],
        [last.verdicts[i]["pred"] for i in steered],
        [last.target_probability(i) for i in steered],
        [last.rows[i].method for i in steered],
    )
    hits = sum(last.verdicts[i]["pred"] == last.rows[i].level for i in range(1, N_LADDER))
    json_path, csv_path = _save(last.record(model.label), last.csv_text(), "ladder")
    status = (
        f"Done in {last.seconds:.1f} s. The judge reads {hits} of the 6 SAE-steered replies at the level asked for "
        f"(chance: 1). Strength {req.strength:g} (alpha {req.steer('sae').alpha:g}, target {req.target}), "
        f"layers {layers_label(req.layers)}."
    )
    yield (*ladder_texts, *labels[:N_LADDER], *base_texts, fig, json_path, csv_path, status)


@gpu
@guarded("sweep")
def sweep(
    question,
    student_answer,
    level,
    strengths="0, 0.5, 1, 2, 3",
    max_new_tokens=REPLY_TOKENS,
    layers=DEFAULT_BAND,
    target=DEFAULTS.target,
    seed=0,
):
    """One level at several steering strengths in one batch: how far can it be pushed before the
    text stops making sense? Then verdicts, the probability/perplexity chart and a download."""
    req = _view_request(question, student_answer, level, 1.0, max_new_tokens, layers, target, seed)
    model = lm()
    last = None
    for last in sweep_stream(model, req, strengths):
        if not last.done:  # the boxes get their strength as a label (and unused ones hide) while streaming
            k = len(last.rows)
            boxes = [gr.update(value=o.text, label=r.name, visible=True) for r, o in zip(last.rows, last.outputs)]
            boxes += [gr.update(value="", visible=False)] * (MAX_SWEEP - k)
            labels = [gr.update(value=None, visible=i < k) for i in range(MAX_SWEEP)]
            n = max(o.new_tokens for o in last.outputs)
            yield (*boxes, *labels, *[gr.skip()] * 3, f"Generating... {n} tokens")
    k = len(last.rows)
    texts = [o.text for o in last.outputs] + [""] * (MAX_SWEEP - k)
    labels = [dict(v["probs"]) for v in last.verdicts] + [None] * (MAX_SWEEP - k)
    probs = [last.target_probability(i) for i in range(k)]
    base = next((p for r, p in zip(last.rows, last.perplexities) if r.strength == 0), None)
    fig = charts.sweep_chart([r.strength for r in last.rows], probs, last.perplexities, req.level, base)
    json_path, csv_path = _save(last.record(model.label), last.csv_text(), "sweep")
    best = max(range(k), key=lambda i: probs[i])
    status = (
        f"Done in {last.seconds:.1f} s. The judge gives '{req.level}' its highest probability "
        f"({probs[best]:.2f}) at strength {last.rows[best].strength:g}."
    )
    yield (*texts, *labels, fig, json_path, csv_path, status)


def _set_outputs(run, final: bool):
    """The tab's outputs for a run so far: status, table, two charts, replies (files at the end)."""
    summary = run.summary()
    headers, rows = run.table(summary)
    per_level = [s for s in summary if s["level"] != "ALL"]
    left = run.eta_seconds()
    if final:
        failed = "".join(f"\n- scenario `{sid}`: {why}" for sid, why in run.failed)
        status = (
            f"Done in {run.seconds:.0f} s: {run.done} scenario{'s' if run.done != 1 else ''}, {len(run.rows)} replies "
            f"judged. Accuracy is the share of replies the judge reads at the level asked for (chance 1/6); r is "
            "the correlation of judged with target level; intervals are 95% bootstrap intervals over your "
            "scenarios." + (f"\n\n{len(run.failed)} scenario(s) failed and are not counted:{failed}" if failed else "")
        )
    else:
        eta = "" if left is None else f", about {left / 60:.1f} min left"
        status = f"Running: {run.done} of {run.total} scenarios done{eta}. The table grows as they finish."
    replies = [
        [r["scenario_id"], methods.LABELS[r["method"]], r["level"], r["pred"], float(r["target_prob"] or 0), r["text"]]
        for r in run.rows
    ]
    return (
        status,
        {"headers": headers, "data": rows},
        charts.judged_vs_target(per_level, title="Judged level against the level asked for (mean over your scenarios)"),
        charts.judged_shares(summary),
        {"headers": REPLY_HEADERS, "data": replies},
    )


REPLY_HEADERS = ["id", "method", "target level", "judged level", "P(target)", "reply"]


def _bad_rows_text(questions, limit: int) -> str:
    text = questions.describe(limit) + "."
    if questions.bad:
        shown = "".join(f"\n- {b}" for b in questions.bad[:50])
        more = f"\n- ... and {len(questions.bad) - 50} more" if len(questions.bad) > 50 else ""
        text += f" Left out (the rest run):{shown}{more}"
    return text


@gpu_long
@guarded("evaluate")
def evaluate(file, levels=LEVELS, methods=methods.COMPARE, progress=gr.Progress()):  # noqa: B008
    """Your questions: every method toward every chosen level on each uploaded scenario, judged, with
    accuracy and r per method (95% intervals over the scenarios), growing as scenarios finish."""
    model = lm()
    limit = scenario_limit(model.device)
    questions = read_question_set(file, limit)
    bad = _bad_rows_text(questions, limit)
    run = None
    for run in evaluate_set(model, questions, levels, methods):
        progress((run.done, run.total), desc="scenarios", unit="scenario")
        if not run.finished:
            yield (*_set_outputs(run, final=False), gr.skip(), gr.skip(), bad)
    results = _temp_file("evaluate-results", ".csv", run.results_csv())
    summary = _temp_file("evaluate-summary", ".csv", run.summary_csv())
    yield (*_set_outputs(run, final=True), results, summary, bad)


def preview_set(file) -> str:
    """What an upload holds, before anything runs: usable rows, the limit, the rows left out."""
    if file is None:
        return ""
    try:
        limit = scenario_limit(lm().device)
        return _bad_rows_text(read_question_set(file, limit), limit)
    except USER_ERRORS as exc:
        return f"**Cannot run this file:** {exc}"


def _temp_file(kind: str, suffix: str, text: str) -> str:
    fd, path = tempfile.mkstemp(prefix=f"bloom-steer-{kind}-", suffix=suffix)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    return path


@gpu
def initial_map():
    try:
        model = lm()
        layers, scores = separability_scores(model)
        return charts.separability_map(scores, layers, highlight=(model.middle_layer, list(range(model.n_heads))))
    except Exception:  # the map is a hint; the page must load without it
        log.exception("separability map failed")
        return None


@gpu_long
def train_layer(layer, architecture, k, l1, expansion, epochs, progress=gr.Progress(track_tqdm=True)):
    """Train SAEs + prototypes for all heads of one layer of the loaded model into the user cache;
    they replace the shipped ones for that layer at once."""
    from steer_core.fit.sae_training import train_layers
    from steer_core.sae.store import STORE, user_root

    try:
        model = lm()
        layer = model.check_layer(int(layer))
        cfg = SAETrainConfig(
            architecture=architecture, expansion=int(expansion), k=int(k), l1_coeff=float(l1), epochs=int(epochs)
        )
        root = user_root(model)
        progress(0, desc="capturing queries of the train split")
        results = train_layers(model, [layer], root, cfg)
        STORE.forget(model, layer)
    except (TypeError, OverflowError) as exc:
        raise gr.Error(f"Please give whole numbers for layer, k, expansion and epochs ({exc}).") from None
    except USER_ERRORS as exc:
        raise _user_error(exc) from None
    m = results[layer]
    return (
        f"Trained layer {layer} in {m['seconds']:.0f} s: explained variance {m['explained_variance']:.3f}, "
        f"L0 {m['l0']:.1f}, dead latents {m['dead_fraction']:.1%}. Saved under `{root}`; "
        "the descent targets (softmax, delta or the paper's prototype) use it now. The default (learned "
        f"offsets, fitted for {_offset_layers(model)}) keeps the SAEs its offsets were fitted for; "
        "Prepare below refits them for the new SAEs."
    )


@gpu_long
def prepare_layers(layers, progress=gr.Progress(track_tqdm=True)):  # noqa: B008
    """Build what the default steering needs for these layers of the loaded model (SAEs, prototypes,
    learned offsets) into the user cache, skipping what is already built and verifies."""
    from steer_core.fit.prepare import PrepareConfig, plan, prepare

    try:
        model = lm()
        try:
            chosen = parse_layers(str(layers).split("(")[0].strip())
        except ValueError:
            raise UserError(f"layers must look like 15, 8-21 or 3,9,15; got {layers!r}") from None
        cfg = PrepareConfig(layers=tuple(model.check_layer(layer) for layer in chosen))
        todo = plan(model, cfg)
        if todo.nothing_to_do:
            return f"Nothing to build: layers {layers_label(cfg.layers)} have their SAEs, prototypes and offsets."
        progress(0, desc=f"building {todo.describe()}")
        manifest = prepare(model, cfg)
    except USER_ERRORS as exc:
        raise _user_error(exc) from None
    return (
        f"Built {manifest['built']} in {manifest['timings']['total_seconds']:.0f} s; the other tabs steer with it "
        f"now. Manifest: `{manifest['manifest']}`."
    )


def _offset_layers(model) -> str:
    try:
        return "layers " + layers_label(load_offsets(model).layers)
    except USER_ERRORS:
        return "no layers of this model"


DEFAULT_QUESTION = "Why do we see phases of the Moon?"
DEFAULT_ANSWER = "Because the Earth's shadow covers part of the Moon."


def does_it_steer(split="test"):
    """The frontier of the shipped result rows of a split: the chart, and every method at matched perplexity."""
    from steer_core.evaluation.frontier import MATCHED_RATIOS
    from steer_core.evaluation.tables import matched_table

    try:
        ev = evidence(split)
    except USER_ERRORS as exc:
        raise _user_error(exc) from None
    caption = (
        f"**{SPLITS[split].capitalize()}.** Rows: {', '.join(f'`{f}`' for f in ev.files)}; 95% intervals from "
        f"{ev.frontier.draws} resamplings of whole scenarios.\n\n" + matched_table(ev.frontier, MATCHED_RATIOS)
    )
    return charts.frontier_chart(ev.frontier), caption


def question_inputs() -> tuple[gr.Textbox, gr.Textbox]:
    """The question and student's-answer boxes every tab starts with."""
    question = gr.Textbox(label="Question", lines=2, max_length=MAX_INPUT_CHARS, value=DEFAULT_QUESTION)
    answer = gr.Textbox(label="Student's answer", lines=2, max_length=MAX_INPUT_CHARS, value=DEFAULT_ANSWER)
    return question, answer


def reply_column(title: str, text_id: str, label_id: str) -> tuple[gr.Textbox, gr.Label]:
    """One reply of the ladder or the sweep with the judge's verdict under it."""
    with gr.Column(min_width=160):
        text = gr.Textbox(label=title, lines=7, interactive=False, elem_id=text_id)
        label = gr.Label(label="Judged level", num_top_classes=2, elem_id=label_id)
    return text, label


def captioned_plot(caption: str, label: str, elem_id: str) -> gr.Plot:
    """A chart in its own column under its one-line "how to read this"."""
    with gr.Column():
        gr.Markdown(caption)
        return gr.Plot(label=label, elem_id=elem_id)


def downloads(title: str, kind: str) -> tuple[gr.File, gr.File]:
    with gr.Row():
        return (
            gr.File(label=f"{title} (JSON)", elem_id=f"{kind}-json"),
            gr.File(label=f"{title} (CSV)", elem_id=f"{kind}-csv"),
        )


def _compare_tab(demo: gr.Blocks, model) -> None:
    """The Compare tab: one question, the methods side by side, the judge, the charts."""
    with gr.Tab("Compare"):
        with gr.Row():
            with gr.Column(scale=3):
                question, answer = question_inputs()
            with gr.Column(scale=2):
                level = Radio(LEVEL_CHOICES, value="analyze", label="Bloom level to steer toward")
        gr.Examples(example_rows(), inputs=[question, answer, level], label="Examples from the test split (click one)")
        with gr.Row():
            layers = Dropdown(
                layer_choices(model.n_layers),
                value=DEFAULT_BAND,
                allow_custom_value=True,
                label="Layers to steer",
                info="a band, one layer, or type e.g. 3,9,15",
            )
            heads = CheckboxGroup(
                [(f"head {h}", h) for h in range(model.n_heads)],
                value=list(range(model.n_heads)),
                label="Heads (all ticked = every head)",
            )
            strength = Slider(
                0,
                MAX_STRENGTH,
                value=1.0,
                step=0.25,
                label="Steering strength",
                info="0 = off, 1 = the tested default, higher = stronger but less fluent",
            )
        with gr.Accordion("Advanced (the paper's knobs)", open=False):
            with gr.Row():
                steps = Slider(0, MAX_STEPS, value=DEFAULTS.steps, step=1, label="Descent steps T")
                lr = Slider(0.0, 0.5, value=DEFAULTS.lr, step=0.01, label="Step size")
                mu = Slider(0.0, 5.0, value=DEFAULTS.mu, step=0.1, label="mu (stay close to the original code)")
            with gr.Row():
                target = Radio(
                    [
                        (spec.title + (" (default)" if t == DEFAULTS.target else ""), t)
                        for t, spec in targets.REGISTRY.items()
                    ],
                    value=DEFAULTS.target,
                    label="Steering target",
                )
                positions = Radio(list(POSITIONS), value=DEFAULTS.positions, label="Steered positions")
            with gr.Row():
                max_new = Slider(1, MAX_NEW_TOKENS, value=REPLY_TOKENS, step=1, label="Max new tokens")
                seed = Number(value=0, precision=0, minimum=0, label="Seed (generation is greedy)")
                k_shots = Slider(1, 8, value=3, step=1, label="Few-shot examples")
                instruction = gr.Checkbox(value=False, label="Also show the instruction baseline")
                residual_vector = gr.Checkbox(
                    value=False,
                    label="Also show the residual-stream vector",
                    info="the field's usual steering site (one vector per level added at layer "
                    f"{layers_label(RESIDUAL_LAYERS)}), against the paper's query site",
                )
        go = gr.Button("Compare", variant="primary")
        status = gr.Markdown("")
        texts, labels, optional = [], [], {}
        with gr.Row(equal_height=True):
            for m in METHOD_ORDER:
                with gr.Column(min_width=200, visible=m in methods.COMPARE) as col:
                    texts.append(
                        gr.Textbox(label=HEADLINES[m], lines=6, interactive=False, elem_id=f"out-{m}", buttons=["copy"])
                    )
                    labels.append(gr.Label(label="Judged level", num_top_classes=3, elem_id=f"judge-{m}"))
                optional[m] = col
        with gr.Row():
            plot_probs = captioned_plot(
                "**Judge probabilities.** How likely the judge thinks each reply asks for each level; the "
                "shaded column is the level you chose.",
                "Judge probabilities",
                "plot-probs",
            )
            plot_attn = captioned_plot(
                "**What steering changed.** Steering only changes which words of the prompt the model "
                "reads while it writes: bars are the share of its attention on each part, without and "
                "with steering (same reply).",
                "Attention by part of the prompt",
                "plot-attn",
            )
        gr.Markdown("The prompt, shaded by how much more (orange) or less (blue) the steered model reads each word:")
        attn_text = gr.HTML(elem_id="attn-text")
        report = gr.File(label="Report of this run (JSON)", elem_id="report")
        with gr.Accordion("For researchers: inside the sparse autoencoder", open=False):
            with gr.Row():
                plot_trace = captioned_plot(
                    "**Steering trace.** Each line is how likely that level looks under the prototypes, "
                    "before steering and after (after every descent step for the descent targets): it rises "
                    "for your level when steering works, stays flat when not.",
                    "Steering trace",
                    "plot-trace",
                )
                plot_bars = captioned_plot(
                    "**Top latents.** The sparse features most active before and after steering, next to "
                    "the target level's prototype (the typical code of feedback at that level).",
                    "Top latents",
                    "plot-bars",
                )
            with gr.Row():
                plot_heat = captioned_plot(
                    "**Tokens x latents.** Which features are active at each word of the reply.",
                    "Tokens x latents",
                    "plot-heat",
                )
                plot_sep = captioned_plot(
                    "**Where to steer.** Brighter cells: layers and heads where the six levels look most "
                    "different to the SAE; outlined: the ones you steered.",
                    "Where to steer",
                    "plot-sep",
                )

        widgets = {
            "question": question,
            "student_answer": answer,
            "level": level,
            "layers": layers,
            "heads": heads,
            "strength": strength,
            "steps": steps,
            "lr": lr,
            "mu": mu,
            "target": target,
            "positions": positions,
            "max_new_tokens": max_new,
            "seed": seed,
            "k_shots": k_shots,
            "instruction": instruction,
            "residual_vector": residual_vector,
        }
        inputs = [widgets[name] for name in COMPARE_API]  # the API's order, whatever the layout's
        outputs = [
            *texts,
            *labels,
            plot_bars,
            plot_heat,
            plot_trace,
            plot_probs,
            plot_sep,
            report,
            status,
            plot_attn,
            attn_text,
        ]
        go.click(compare, inputs, outputs, api_name="compare")
        for m, flag in OPTIONAL_FLAGS.items():  # a column shows when its box is ticked
            widgets[flag].change(lambda on: gr.update(visible=on), widgets[flag], optional[m], api_visibility="private")
        demo.load(initial_map, None, plot_sep, api_visibility="private")


def _ladder_tab(demo: gr.Blocks, model) -> None:
    """The Level ladder tab: one question answered at every level in one batch."""
    with gr.Tab("Level ladder"):
        gr.Markdown(
            "The same question answered at **every** Bloom level: the unsteered reply, then the reply steered "
            "toward each level, side by side in one run. The chart puts the level the judge reads against "
            "the level asked for: if steering worked, the dots would sit on the diagonal."
        )
        with gr.Row():
            l_question, l_answer = question_inputs()
        with gr.Row():
            l_baseline = Radio(
                [("none", "none")] + [(methods.LABELS[b], b) for b in LADDER_BASELINES],
                value="none",
                label="Also show a baseline method at every level",
            )
            l_strength = Slider(0, MAX_STRENGTH, value=1.0, step=0.25, label="Steering strength")
            l_max_new = Slider(1, MAX_NEW_TOKENS, value=REPLY_TOKENS, step=1, label="Max new tokens")
        l_go = gr.Button("Run the ladder", variant="primary")
        l_status = gr.Markdown("")
        l_texts, l_labels, l_base = [], [], []
        with gr.Row(equal_height=True):
            for i, name in enumerate(["unsteered", *LEVELS]):
                text, label = reply_column(
                    name if i == 0 else f"toward {name}", f"ladder-{name}", f"ladder-judge-{name}"
                )
                l_texts.append(text)
                l_labels.append(label)
        with gr.Row(equal_height=True, visible=False) as l_base_row:  # shown when a baseline is chosen
            gr.Column(min_width=160)
            for lv in LEVELS:
                with gr.Column(min_width=160):
                    l_base.append(
                        gr.Textbox(label=f"baseline: {lv}", lines=5, interactive=False, elem_id=f"ladder-base-{lv}")
                    )
        gr.Markdown(
            "**How to read it.** Dots on the dashed diagonal = the reply asks for the level it was steered "
            "toward; bars = how sure the judge is of that level (1/6 is chance)."
        )
        l_plot = gr.Plot(label="Judged level against target level", elem_id="ladder-plot")
        l_json, l_csv = downloads("Ladder", "ladder")
        l_baseline.change(lambda b: gr.update(visible=b != "none"), l_baseline, l_base_row, api_visibility="private")
        l_go.click(
            ladder,
            [l_question, l_answer, l_baseline, l_strength, l_max_new],
            [*l_texts, *l_labels, *l_base, l_plot, l_json, l_csv, l_status],
            api_name="ladder",
        )


def _sweep_tab(demo: gr.Blocks, model) -> None:
    """The Strength sweep tab: one level at several strengths in one batch."""
    with gr.Tab("Strength sweep"):
        gr.Markdown(
            "One level at several steering strengths, side by side in one run: how far can you push before "
            "the feedback stops making sense?"
        )
        with gr.Row():
            s_question, s_answer = question_inputs()
        with gr.Row():
            s_level = Radio(LEVEL_CHOICES, value="create", label="Bloom level to steer toward")
            s_strengths = gr.Textbox(
                value=", ".join(f"{s:g}" for s in DEFAULT_STRENGTHS),
                label=f"Strengths (up to {MAX_SWEEP}, from 0 to {MAX_STRENGTH:g}; 1 = the default)",
            )
            s_max_new = Slider(1, MAX_NEW_TOKENS, value=REPLY_TOKENS, step=1, label="Max new tokens")
        s_go = gr.Button("Run the sweep", variant="primary")
        s_status = gr.Markdown("")
        s_texts, s_labels = [], []
        with gr.Row(equal_height=True):
            for i in range(MAX_SWEEP):
                text, label = reply_column(f"strength {i}", f"sweep-{i}", f"sweep-judge-{i}")
                s_texts.append(text)
                s_labels.append(label)
        gr.Markdown(
            "**How to read it.** The coloured line is how sure the judge is that the reply asks for your "
            "level; the dotted line is perplexity (how surprised the unsteered model is by the text: higher "
            "= less fluent). Good steering raises the first without the second crossing the red dashes."
        )
        s_plot = gr.Plot(label="Probability and perplexity against strength", elem_id="sweep-plot")
        s_json, s_csv = downloads("Sweep", "sweep")
        s_go.click(
            sweep,
            [s_question, s_answer, s_level, s_strengths, s_max_new],
            [*s_texts, *s_labels, s_plot, s_json, s_csv, s_status],
            api_name="sweep",
        )


def _questions_tab(demo: gr.Blocks, model) -> None:
    """The Your questions tab: evaluate the methods on a set of questions the user uploads."""
    limit = scenario_limit(model.device)
    with gr.Tab("Your questions"):
        gr.Markdown(
            "Does steering work on **your** questions? Upload a `.csv` or `.jsonl` file with the columns "
            "`question` and `student_answer` (and optionally `id`), one student answer a row. Every method "
            "writes feedback toward every level you tick, the judge reads each reply, and you get the accuracy "
            "and *r* of each method with 95% intervals over your scenarios, as in the README's tables. "
            f"**Up to {limit} scenarios a run on this server** ({model.device.type.upper()}; about 20 s a "
            "scenario on a 2-core CPU with the default methods and levels). The unsteered reply always runs: "
            "every figure is read against it."
        )
        with gr.Row():
            e_file = gr.File(label="Questions (.csv or .jsonl)", file_types=[".csv", ".jsonl"], elem_id="eval-file")
            with gr.Column():
                e_levels = CheckboxGroup(list(LEVELS), value=list(LEVELS), label="Target levels")
                e_methods = CheckboxGroup(
                    [(methods.LABELS[m], m) for m in SET_METHODS if m != "none"],
                    value=[m for m in methods.COMPARE if m != "none"],
                    label="Methods (besides unsteered)",
                )
        e_bad = gr.Markdown(elem_id="eval-rows")
        e_go = gr.Button("Evaluate", variant="primary")
        e_status = gr.Markdown(elem_id="eval-status")
        e_table = gr.Dataframe(label="Per method", interactive=False, wrap=True, elem_id="eval-table")
        with gr.Row():
            e_chart = captioned_plot(
                "**Judged against asked.** The level the judge reads, averaged over your scenarios, against the "
                "level asked for: steering that works climbs the dotted diagonal.",
                "Judged level against target level",
                "eval-plot",
            )
            e_shares = captioned_plot(
                "**Judged levels.** The share of each method's replies the judge reads at each level.",
                "Judged levels",
                "eval-shares",
            )
        e_replies = gr.Dataframe(label="The replies", interactive=False, wrap=True, elem_id="eval-replies")
        with gr.Row():
            e_results = gr.File(label="Results (CSV, one reply a row)", elem_id="eval-results")
            e_summary = gr.File(label="Summary (CSV)", elem_id="eval-summary")
        e_file.change(preview_set, e_file, e_bad, api_visibility="private")
        e_go.click(
            evaluate,
            [e_file, e_levels, e_methods],
            [e_status, e_table, e_chart, e_shares, e_replies, e_results, e_summary, e_bad],
            api_name="evaluate",
            concurrency_limit=1,
        )


def _train_tab(demo: gr.Blocks, model) -> None:
    """The Train tab: SAEs and prototypes for one layer of the loaded model."""
    with gr.Tab("Train your own"):
        gr.Markdown(
            "Train sparse autoencoders (all heads of one layer at once) and the six level prototypes on the "
            "train split, for the loaded model. The result is cached and replaces that layer's shipped SAEs "
            "immediately. About a minute per layer on a laptop CPU (deeper layers take longer to capture). "
            "To train for another model, start the app with `STEER_MODEL=<HF id or local path> python app.py`."
        )
        with gr.Row():
            t_layer = Number(
                value=model.middle_layer, precision=0, minimum=0, maximum=model.n_layers - 1, label="Layer"
            )
            t_arch = Radio(
                [("TopK", "topk"), ("ReLU + L1", "standard")], value=SAE_DEFAULTS.architecture, label="SAE type"
            )
            t_k = Slider(1, 128, value=SAE_DEFAULTS.k, step=1, label="k (TopK)")
            t_l1 = Slider(0.0, 5.0, value=SAE_DEFAULTS.l1_coeff, step=0.05, label="L1 weight (ReLU + L1)")
            t_exp = Dropdown(
                [2, 4, 8, 16],
                value=SAE_DEFAULTS.expansion,
                label=f"Expansion (latents = expansion x {model.head_dim})",
            )
            t_epochs = Slider(1, 20, value=SAE_DEFAULTS.epochs, step=1, label="Epochs")
        t_go = gr.Button("Train", variant="primary")
        t_out = gr.Markdown()
        t_go.click(
            train_layer,
            [t_layer, t_arch, t_k, t_l1, t_exp, t_epochs],
            t_out,
            api_name="train",
            concurrency_limit=1,
            concurrency_id="training",
        )
        gr.Markdown(
            "### Prepare the default steering\n"
            "Everything the default steering needs for a band of layers of the loaded model, in one step: SAEs "
            "and prototypes for the layers that lack them, then the learned offsets, fitted together for the "
            "band (what `python -m steer_core prepare` does). Built pieces that verify are kept. For the "
            "embedded model everything ships, so there is nothing to do; for another model expect about a "
            "minute a layer for the SAEs and 10-25 minutes for the offsets on a 2-core CPU."
        )
        with gr.Row():
            p_layers = gr.Textbox(value=DEFAULT_BAND, label="Layers", info="a band, one layer, or e.g. 3,9,15")
            p_go = gr.Button("Prepare", variant="secondary")
        p_out = gr.Markdown()
        p_go.click(prepare_layers, p_layers, p_out, api_name="prepare", concurrency_limit=1, concurrency_id="training")


def _evidence_tab(demo: gr.Blocks, model) -> None:
    """Does it steer? Every method along its strength curve, from the shipped result files."""
    with gr.Tab("Does it steer?"):
        gr.Markdown(
            "Steering strength trades the level for fluency, so methods are compared **at the same perplexity**: "
            "each line is one method along its strengths (from the unsteered reply at 1x), each diamond a prompt "
            "baseline, which has no strength. Read methods against each other along a vertical line. Accuracy = "
            "the judge reads the level asked for (1/6 is chance); perplexity of the reply under the unsteered model, "
            "as a ratio to the unsteered reply's. The table reads each line at 1.2x, 1.3x and 1.4x. These are the "
            "measured rows that ship with the demo, not a live run."
        )
        e_split = Radio([("test split", "test"), ("validation", "validation")], value="test", label="Rows")
        e_plot = gr.Plot(label="Accuracy against fluency", elem_id="frontier-plot")
        e_table = gr.Markdown(elem_id="frontier-table")
        e_split.change(does_it_steer, e_split, [e_plot, e_table], api_name="frontier")
        demo.load(does_it_steer, e_split, [e_plot, e_table], api_visibility="private")


def _levels_tab(demo: gr.Blocks, model) -> None:
    """The six levels, as the prompts and the judge describe them."""
    with gr.Tab("About the levels"):
        gr.Markdown("\n".join(f"- **{lv.capitalize()}**: {DESCRIPTIONS[lv]}" for lv in LEVELS))


def build() -> gr.Blocks:
    model = lm()
    with gr.Blocks(title="Bloom steering demo") as demo:
        gr.Markdown(
            "# Steer the thinking level of feedback\n"
            "Type a question and a student's answer, pick the level of Bloom's taxonomy the feedback should ask "
            "for, and compare four ways of getting it from a small language model (SmolLM2-135M with a feedback "
            "adapter). **SAE-steered** follows *Steered Generation via Gradient Descent on Sparse Features*: it "
            "edits the model's attention queries in the sparse code of an autoencoder, toward the chosen level, "
            "without changing the prompt. By default it adds a per-level code offset fitted on the model's own "
            "feedback; the paper's descent to a level prototype is the *prototype* target under *Advanced*. "
            "A classifier (the *judge*) says which level each reply actually asks for. Honest note: on this "
            "small model steering every layer moves the level about as far as a three-example prompt, and "
            "less than naming the level in the prompt; see the README's figures."
        )
        _compare_tab(demo, model)
        _ladder_tab(demo, model)
        _sweep_tab(demo, model)
        _questions_tab(demo, model)
        _train_tab(demo, model)
        _evidence_tab(demo, model)
        _levels_tab(demo, model)
    return demo


def main() -> None:
    logging.basicConfig(level=logging.INFO)
    demo = build()
    demo.queue(default_concurrency_limit=int(os.environ.get("STEER_CONCURRENCY", "4")))
    demo.launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
        theme=gr.themes.Soft(),
    )


if __name__ == "__main__":
    main()
