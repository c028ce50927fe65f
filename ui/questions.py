"""The Your questions tab: evaluate the methods on a set of questions the user uploads. `preview` and `run` are
its handlers (the widget values in, outputs by name out; `run` streams as scenarios finish)."""

from __future__ import annotations

import gradio as gr

from steer_core import charts, methods
from steer_core.bloom import LEVELS
from steer_core.views.question_sets import evaluate_set, read_question_set, scenario_limit

from .errors import USER_ERRORS, endpoint, guarded
from .limits import ONE_SLOW
from .runtime import lm
from .widgets import CheckboxGroup, captioned_plot, mapped, temp_file

REPLY_HEADERS = ["id", "method", "level", "judged level", "P(level)", "reply"]
OUTPUTS = ("eval-status", "eval-table", "eval-plot", "eval-shares", "eval-replies", "eval-results", "eval-summary")
OUTPUTS += ("eval-rows",)  # /evaluate's outputs by name, in order
DEFAULT_METHODS = methods.compare_columns()  # Compare's columns, when the layout is built


def bad_rows_text(questions, limit: int) -> str:
    text = questions.describe(limit) + "."
    if questions.bad:
        shown = "".join(f"\n- {b}" for b in questions.bad[:50])
        more = f"\n- ... and {len(questions.bad) - 50} more" if len(questions.bad) > 50 else ""
        text += f" Left out (the rest run):{shown}{more}"
    return text


@guarded("preview")
def preview(file, model=None) -> str:
    """What an upload holds, before anything runs: usable rows, the limit, the rows left out."""
    if file is None:
        return ""
    try:
        limit = scenario_limit((model or lm()).device)
        return bad_rows_text(read_question_set(file, limit), limit)
    except USER_ERRORS as exc:  # a note under the upload, not an error: nothing was asked to run yet
        return f"**Cannot run this file:** {exc}"


@guarded("evaluate")
def run(file, levels=LEVELS, chosen=DEFAULT_METHODS, progress=None, model=None):
    """Your questions: every method toward every chosen level on each uploaded scenario, judged, with accuracy
    and r per method (95% intervals over the scenarios), growing as scenarios finish."""
    model = model or lm()
    limit = scenario_limit(model.device)
    questions = read_question_set(file, limit)
    out = {"eval-rows": bad_rows_text(questions, limit)}
    for ran in evaluate_set(model, questions, levels, chosen):
        if progress is not None:
            progress((ran.done, ran.total), desc="scenarios", unit="scenario")
        summary = ran.summary()
        headers, rows = ran.table(summary)
        per_level = [s for s in summary if s["level"] != "ALL"]
        out |= {
            "eval-status": ran.status(),
            "eval-table": {"headers": headers, "data": rows},
            "eval-plot": charts.judged_vs_target(
                per_level, title="Judged level against the level asked for (mean over your scenarios)"
            ),
            "eval-shares": charts.judged_shares(summary),
            "eval-replies": {"headers": REPLY_HEADERS, "data": ran.reply_rows()},
        }
        if ran.finished:
            out["eval-results"] = temp_file("evaluate-results", ".csv", ran.results_csv())
            out["eval-summary"] = temp_file("evaluate-summary", ".csv", ran.summary_csv())
        yield out


INTRO = (
    "Does steering work on **your** questions? Upload a `.csv` or `.jsonl` file with the columns "
    "`question` and `student_answer` (and optionally `id`), one student answer a row. Every method "
    "writes feedback toward every level you tick, the judge reads each reply, and you get the accuracy "
    "and *r* of each method with 95% intervals over your scenarios, as in the README's tables. "
    "**Up to {limit} scenarios a run on this server** ({device}; about 20 s a "
    "scenario on a 2-core CPU with the default methods and levels). The unsteered reply always runs: "
    "every figure is read against it."
)


def _outputs(c: dict) -> dict:
    c["eval-rows"] = gr.Markdown(elem_id="eval-rows")
    c["go"] = gr.Button("Evaluate", variant="primary")
    c["eval-status"] = gr.Markdown(elem_id="eval-status")
    c["eval-table"] = gr.Dataframe(label="Per method", interactive=False, wrap=True, elem_id="eval-table")
    with gr.Row():
        c["eval-plot"] = captioned_plot(
            "**Judged against asked.** The level the judge reads, averaged over your scenarios, against the "
            "level asked for: steering that works climbs the dotted diagonal.",
            "Judged level against target level",
            "eval-plot",
        )
        c["eval-shares"] = captioned_plot(
            "**Judged levels.** The share of each method's replies the judge reads at each level.",
            "Judged levels",
            "eval-shares",
        )
    c["eval-replies"] = gr.Dataframe(label="The replies", interactive=False, wrap=True, elem_id="eval-replies")
    with gr.Row():
        c["eval-results"] = gr.File(label="Results (CSV, one reply a row)", elem_id="eval-results")
        c["eval-summary"] = gr.File(label="Summary (CSV)", elem_id="eval-summary")
    return c


def questions_tab(demo: gr.Blocks, model) -> None:
    """The Your questions tab: evaluate the methods on a set of questions the user uploads."""
    with gr.Tab("Your questions"):
        gr.Markdown(INTRO.format(limit=scenario_limit(model.device), device=model.device.type.upper()))
        with gr.Row():
            file = gr.File(label="Questions (.csv or .jsonl)", file_types=[".csv", ".jsonl"], elem_id="eval-file")
            with gr.Column():
                levels = CheckboxGroup(list(LEVELS), value=list(LEVELS), label="Target levels")
                chosen = CheckboxGroup(
                    [(methods.label(m), m) for m in methods.on_sets() if m != "none"],
                    value=[m for m in DEFAULT_METHODS if m != "none"],
                    label="Methods (besides unsteered)",
                )
        c = _outputs({})

        @endpoint("evaluate", long=True)
        def evaluate(file, levels=LEVELS, methods=DEFAULT_METHODS, progress=gr.Progress()):  # noqa: B008
            """Your questions: every method toward every chosen level on each uploaded scenario, judged, with
            accuracy and r per method (95% intervals over the scenarios), growing as scenarios finish."""
            for out in run(file, levels, methods, progress):
                yield mapped(c, out)

        file.change(lambda f: preview(f), file, c["eval-rows"], api_visibility="private")
        outputs = [c[n] for n in OUTPUTS]
        c["go"].click(evaluate, [file, levels, chosen], outputs, api_name="evaluate", **ONE_SLOW)
