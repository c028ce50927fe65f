"""The Latents tab: a latent's card (what it fires on, which levels, what pushing it does), a search by level (the
level's page: the latents its offset uses most) or by word, and "steer with this latent", which fills the
Compare's hand-steered latents. A click on a bar of the Compare's top-latents chart opens that latent's card."""

from __future__ import annotations

import gradio as gr

from steer_core.bloom import LEVELS
from steer_core.views.latents import card_figure, card_html, open_card, parse_name, search

from .errors import endpoint, guarded
from .runtime import lm

INTRO = (
    "Every latent of the sparse autoencoders has a card: the words it fires on most (from the dataset's prompts "
    "and feedback), how strongly it fires on feedback of each Bloom level, its weight in each level's learned "
    "offset, and where its attention head looks when it is pushed. Search by level to read what a level means "
    "inside the model (the latents its offset uses most), or by a word. *Steer with this latent* puts it in the "
    "Compare's *Latents by hand* (under Advanced), in a column of its own."
)
# A click on a bar of a chart whose bars carry "layer.head:latent" (charts.latent_bars with `where`) writes it into
# the hidden box, which opens the card; the time makes a second click on the same bar a new value.
CLICK_JS = """
() => {
  const hook = () => document.querySelectorAll('#plot-bars .js-plotly-plot, #plot-heat .js-plotly-plot').forEach(p => {
    if (p.__latentClick || typeof p.on !== 'function') return;
    p.__latentClick = true;
    p.on('plotly_click', ev => {
      const pt = ev && ev.points && ev.points[0];
      const name = pt && pt.customdata;
      const box = document.querySelector('#latent-clicked textarea, #latent-clicked input');
      if (!name || !box) return;
      box.value = String(name) + '@' + Date.now();
      box.dispatchEvent(new Event('input', {bubbles: true}));
    });
  });
  new MutationObserver(hook).observe(document.body, {childList: true, subtree: true});
  hook();
}
"""


@guarded("latent card")
def show_card(layer, head, latent, model=None):
    """A latent's card: its HTML, its chart and the value "steer with this latent" fills in."""
    card = open_card(model or lm(), layer, head, latent)
    return card_html(card), card_figure(card), card.steer_with


@guarded("latent search")
def find(level, word, model=None):
    rows = search(model or lm(), level or None, word or None)
    if not rows:
        raise gr.Error("No latent matched; try another word or a level.", title="Nothing found")
    return [[r["latent"], r["why"], r["score"]] for r in rows]


@endpoint("latent")
def latent_card(layer, head, latent):
    """A latent's card: its text (HTML), its chart and the hand-steering value that pushes it."""
    return show_card(layer, head, latent)


@endpoint("latent_search")
def latent_search(level, word):
    """Latents by level (its offset's largest weights, then those that fire most on its feedback) or by a word
    they fire on: rows of (latent, why, score)."""
    return find(level, word)


def clicked_box() -> gr.Textbox:
    """Where a click on a chart's latent lands (CLICK_JS): after the tabs, so it is on the page whichever tab is
    open, and not the page's first text box."""
    return gr.Textbox(visible="hidden", elem_id="latent-clicked")


def latents_tab(demo: gr.Blocks, model, hand: gr.Textbox, tabs: gr.Tabs):
    """The Latents tab; `hand` is the Compare's latents-by-hand box, `tabs` the page's tabs (to go to Compare).
    Returns listen(clicked): opens a card when a chart's click writes the box clicked_box made (after the tabs)."""
    with gr.Tab("Latents", id="latents"):
        gr.Markdown(INTRO)
        with gr.Row():
            layer = gr.Number(value=model.middle_layer, label="Layer", precision=0, minimum=0, elem_id="latent-layer")
            head = gr.Number(value=0, label="Head", precision=0, minimum=0, elem_id="latent-head")
            latent = gr.Number(value=0, label="Latent", precision=0, minimum=0, elem_id="latent-id")
            open_ = gr.Button("Open card", elem_id="latent-open")
        with gr.Row():
            level = gr.Dropdown([("", "")] + [(lv, lv) for lv in LEVELS], value="", label="Level page / push toward",
                                elem_id="latent-level")  # fmt: skip
            word = gr.Textbox(label="Fires on a word", placeholder="e.g. design", elem_id="latent-word")
            go = gr.Button("Search", elem_id="latent-search")
        found = gr.Dataframe(
            headers=["latent", "why", "score"], interactive=False, label="Latents (click one to open its card)",
            elem_id="latent-results",
        )  # fmt: skip
        html = gr.HTML(elem_id="latent-card")
        plot = gr.Plot(label="The latent's card", elem_id="latent-card-plot")
        steer_value = gr.Textbox(visible=False)
        steer = gr.Button("Steer with this latent (in the Compare)", elem_id="steer-with-latent")

    card_out = [html, plot, steer_value]
    open_.click(latent_card, [layer, head, latent], card_out, api_name="latent")
    go.click(latent_search, [level, word], found, api_name="latent_search")

    def chosen(table, evt: gr.SelectData):
        row = evt.index[0]
        name = table.iloc[row, 0] if hasattr(table, "iloc") else table[row][0]
        a, h, k = parse_name(name)
        return (a, h, k, *show_card(a, h, k))

    found.select(guarded("latent search")(chosen), found, [layer, head, latent, *card_out], api_visibility="private")

    def from_chart(value):
        if not value:
            return (gr.update(),) * 7
        a, h, k = parse_name(value)
        return (gr.Tabs(selected="latents"), a, h, k, *show_card(a, h, k))

    steer.click(lambda v: (v, gr.Tabs(selected="compare")), steer_value, [hand, tabs], api_visibility="private")
    demo.load(None, None, None, js=CLICK_JS)

    def listen(clicked: gr.Textbox) -> None:
        clicked.change(guarded("latent card")(from_chart), clicked, [tabs, layer, head, latent, *card_out],
                      api_visibility="private")  # fmt: skip

    return listen
