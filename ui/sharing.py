"""Keep and share a run, on the page: links that open a tab with a run's values and run it, reports and this
browser's history entries that restore one without generating, and after every run its link and history entry
(the ladder's handout too). What a link or a report holds is steer_core.views.links / reports / history."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from steer_core.views.handout import handout_html
from steer_core.views.history import HISTORY_SIZE, add_to_history, history_entry, history_rows
from steer_core.views.links import link_query, read_link
from steer_core.views.reports import read_report, restore
from steer_core.views.requests import knobs_of

from .errors import USER_ERRORS, endpoint, guarded
from .limits import ONE_SLOW
from .runtime import lm
from .widgets import mapped, temp_file

# The history is the user's own runs, kept in their own browser; a fixed key keeps it readable across restarts
# of the server (a random one, Gradio's default, would lose it at every restart).
HISTORY_SECRET = os.environ.get("STEER_HISTORY_SECRET", "bloom-steer-history-v1")
ABSOLUTE_LINK = "(q) => (q && q.startsWith('?')) ? window.location.origin + window.location.pathname + q : q"
PRIVATE = {"api_visibility": "private"}


@dataclass
class RunTab:
    """What the page's sharing (links, reports, history) needs of a tab that runs one question: its widgets by
    link parameter, its run button, how a result fills its outputs, and its report and link boxes."""

    view: str
    inputs: dict
    go: gr.Button
    ran: object  # the run button's event, for what follows a run
    show: Callable  # (result, report path or None) -> {component: value}
    shown: list  # every component show() may fill
    record_file: gr.File
    link: gr.Textbox
    handout: gr.File | None = None  # the ladder's printable page, written after each run


def click_run(only_ready: bool) -> str:
    """JS that presses the run button of the view a link or report opened (only_ready: only when all its values
    read); a tab's widgets appear only once the tab is shown, so it waits for the button."""
    ready = "o.runs" if only_ready else "true"
    return (
        f"(o) => {{ if (!(o && o.view && {ready})) return []; let n = 0; const press = () => {{"
        " const b = document.querySelector('#run-' + o.view);"
        " if (b) b.click(); else if (n++ < 100) setTimeout(press, 100); }; setTimeout(press, 200); return []; }"
    )


@dataclass
class SharingPanel:
    history: gr.BrowserState
    past: gr.Dataframe
    upload: gr.File
    note: gr.Markdown
    again: gr.Button
    pending: gr.JSON  # what a link or a report asks to run: {"view": ..., "runs": ...}
    tabs: gr.Tabs | None = None


def sharing_panel() -> SharingPanel:
    """Above the tabs: open a saved report, or one of this browser's last runs; what a link or report opened."""
    history = gr.BrowserState([], storage_key="bloom-steer-history", secret=HISTORY_SECRET)
    with gr.Accordion(
        f"Your runs: open a saved report, or one of this browser's last {HISTORY_SIZE}", open=False
    ) as runs:
        with gr.Row():
            upload = gr.File(label="Open a run's report (JSON)", file_types=[".json"], elem_id="open-report")
            past = gr.Dataframe(
                headers=["time", "tab", "level", "question"], label="This browser's runs (click one to restore it)",
                interactive=False, wrap=True, elem_id="history",
            )  # fmt: skip
    note = gr.Markdown(elem_id="open-note")
    again = gr.Button("Run again", visible=False, elem_id="run-again")
    runs.expand(history_rows, history, past, **PRIVATE)  # as the browser has it now
    return SharingPanel(history, past, upload, note, again, gr.JSON(visible=False))


class Sharing:
    """The page's handlers for links, reports and history, over the tabs that run one question."""

    def __init__(self, run_tabs: list[RunTab], panel: SharingPanel):
        self.by_view = {t.view: t for t in run_tabs}
        self.panel = panel
        filled = [w for t in run_tabs for w in t.inputs.values()]
        shown = list(dict.fromkeys(c for t in run_tabs for c in [*t.shown, t.record_file]))
        self.everything = [panel.tabs, panel.note, panel.again, panel.pending, *filled, *shown]

    def fill(self, opened) -> dict:
        t = self.by_view[opened.view]
        return {t.inputs[n]: v for n, v in opened.values.items()} | {self.panel.tabs: gr.Tabs(selected=opened.view)}

    def open_link(self, request: gr.Request) -> dict:
        opened = read_link(dict(request.query_params), lm())
        out = {self.panel.note: opened.message(), self.panel.pending: {"view": opened.view, "runs": opened.runs}}
        return out | (self.fill(opened) if opened.view else {})

    def open_saved(self, source) -> dict:
        panel = self.panel
        try:
            saved = read_report(source, lm())
        except USER_ERRORS as exc:
            return {panel.note: f"**Cannot open this report:** {exc}", panel.again: gr.update(visible=False)}
        out = {
            panel.note: saved.message(),
            panel.again: gr.update(visible=not saved.restorable),
            panel.pending: {"view": saved.view, "runs": False},
        } | self.fill(saved.opened)
        if saved.restorable:
            path = temp_file(f"{saved.view}-run", ".json", json.dumps(saved.record, indent=1))
            out |= self.by_view[saved.view].show(restore(saved), path)
        return out

    def pick(self, history, evt: gr.SelectData) -> dict:
        rows = history or []
        i = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        return self.open_saved(rows[i]["report"]) if 0 <= i < len(rows) else {}

    def after_run(self, t: RunTab, path, history) -> dict:
        """The run's link and its history entry (and the ladder's handout), from the report it wrote."""
        if not path:
            return {}
        record = json.loads(Path(path).read_text(encoding="utf-8"))
        query = link_query(record, lm())
        history = add_to_history(history, history_entry(record, query))
        out = {t.link: query, self.panel.history: history, self.panel.past: history_rows(history)}
        if t.handout is not None:
            out[t.handout] = temp_file("ladder-handout", ".html", handout_html(record))
        return out

    def wire(self, demo: gr.Blocks) -> None:
        panel = self.panel
        open_link = guarded("open link")(self.open_link)
        demo.load(open_link, None, self.everything, **PRIVATE).then(
            None, panel.pending, None, js=click_run(only_ready=True)
        )
        demo.load(history_rows, panel.history, panel.past, **PRIVATE)
        panel.upload.upload(guarded("open report")(self.open_saved), panel.upload, self.everything, **PRIVATE)
        panel.past.select(guarded("open history")(self.pick), panel.history, self.everything, **PRIVATE)
        panel.again.click(None, panel.pending, None, js=click_run(only_ready=False))
        for t in self.by_view.values():
            extra = [t.handout] if t.handout is not None else []

            def after_run(path, history, t=t) -> dict:
                return self.after_run(t, path, history)

            outputs = [t.link, panel.history, panel.past, *extra]
            t.ran.success(guarded("after run")(after_run), [t.record_file, panel.history], outputs, **PRIVATE).then(
                None, t.link, t.link, js=ABSOLUTE_LINK
            )


def share_runs(demo: gr.Blocks, run_tabs: list[RunTab], panel: SharingPanel) -> None:
    """Links that run a tab, reports and history entries that restore one, and after every run its link and
    history entry."""
    Sharing(run_tabs, panel).wire(demo)


def view_tab(
    view: str, request, handlers: tuple, c: dict, inputs: dict, go, doc: str, slow: bool = False, **extra
) -> RunTab:
    """Wire a view's tab (the ladder, the sweep): its streaming endpoint, whose parameters are the declared
    request's fields in order and whose outputs are `c`'s components named by output_names, in that order
    (handlers: the tab's run, show and output_names; their outputs by name are mapped to `c`), the run button,
    and what the sharing reads of it. `doc` is the API's text; a `slow` view shares the one slot of the slow
    kinds of request (ui/limits.py)."""
    run, show, output_names = handlers
    params = tuple(knobs_of(request))

    def handler(*args):
        for out in run(dict(zip(params, args))):
            yield mapped(c, out)

    handler.__doc__ = doc
    outputs = [c[n] for n in output_names()]
    limit = ONE_SLOW if slow else {}
    ran = go.click(
        endpoint(view, request.api_signature())(handler), [inputs[n] for n in params], outputs, api_name=view, **limit
    )
    shown = lambda result, path=None: mapped(c, show(result, report_path=path))  # noqa: E731
    return RunTab(view, inputs, go, ran, shown, outputs, c[f"{view}-json"], c["link"], **extra)
