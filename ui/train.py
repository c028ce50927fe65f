"""The Train your own tab: SAEs and prototypes for one layer of the loaded model (`train_layer`), and Prepare,
everything the default steering needs for a band of layers (`prepare_layers`). The fitting code loads only when
one of them runs.

What they may do is the server's owner's choice (STEER_TRAINING, ui/runtime.py): "on" installs what is built in
the model's cache, for every visitor; "private" trains a visitor's SAEs into a folder of their own, handed to
them as a download and served to no one, and leaves Prepare (which builds what everyone is served) to the owner;
"off" refuses both. Every mode hands the trained layer back as a zip.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import gradio as gr

from steer_core.errors import UserError
from steer_core.layer_spec import layers_label, read_layers
from steer_core.sae.module import SAETrainConfig
from steer_core.steering.offset_files import load_offsets

from .errors import USER_ERRORS, guarded
from .limits import ONE_SLOW
from .runtime import TRAINING, gpu_long, lm
from .widgets import Dropdown, Number, Radio, Slider

SAE_DEFAULTS = SAETrainConfig()
OFF = (
    "Training and preparing are off on this shared server: they would change the SAEs every visitor is served. "
    "Its owner can turn them on with the variable STEER_TRAINING (`private`: each visitor's SAEs are theirs, as "
    "a download; `on`: what anyone trains replaces the served SAEs); on your own machine `python app.py` "
    "trains as it always did."
)
PREPARE_OWNER = (
    "Prepare builds what every visitor of this shared server is served, so it is its owner's to run "
    "(`python -m steer_core prepare`, or STEER_TRAINING=on). Train above gives you a layer's SAEs of your own."
)
NOTES = {
    "on": "The result is cached and replaces that layer's shipped SAEs immediately, for every user of this app.",
    "private": (
        "What you train is yours: it comes back as a download (SAELens layout) and replaces nothing this server "
        "serves, to you or anyone. Unzip it and steer with it on your own machine (`--saes DIR` in the CLI)."
    ),
    "off": OFF,
}
KEEP_S = 3600  # a visitor's training folder and zip outlive their download by this much


def _fresh_dir(prefix: str) -> Path:
    """A fresh folder for one training's files, beside the others of the last hour (older ones are removed)."""
    base = Path(tempfile.gettempdir()) / "bloom-steer-training"
    base.mkdir(exist_ok=True)
    for old in base.iterdir():
        if old.is_dir() and time.time() - old.stat().st_mtime > KEEP_S:
            shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=base))


def _zipped(layer_dir: Path) -> str:
    """The trained layer's folder as a zip (layer_<l>/ with its heads' SAEs, prototypes and manifest)."""
    out = _fresh_dir("zip-") / layer_dir.name
    return shutil.make_archive(str(out), "zip", root_dir=layer_dir.parent, base_dir=layer_dir.name)


def _offset_layers(model) -> str:
    try:
        return "layers " + layers_label(load_offsets(model).layers)
    except USER_ERRORS:
        return "no layers of this model"


@gpu_long
@guarded("train")
def train_layer(layer, architecture, k, l1, expansion, epochs, progress=gr.Progress(track_tqdm=True)):  # noqa: B008
    """Train SAEs + prototypes for all heads of one layer of the loaded model: into the user cache, where they
    replace the shipped ones for that layer at once (train_layers drops the loaded copy), or (private) into a
    folder of the visitor's own. Returns the report and the layer as a zip."""
    from steer_core.fit.sae_training import train_layers
    from steer_core.sae.store import user_root

    if TRAINING == "off":
        raise UserError(OFF)
    model = lm()
    try:
        layer = model.check_layer(int(layer))
        cfg = SAETrainConfig(
            architecture=architecture, expansion=int(expansion), k=int(k), l1_coeff=float(l1), epochs=int(epochs)
        )
    except (TypeError, OverflowError) as exc:
        raise UserError(f"Please give whole numbers for layer, k, expansion and epochs ({exc}).") from None
    root = _fresh_dir("private-") if TRAINING == "private" else user_root(model)
    progress(0, desc="capturing queries of the train split")
    m = train_layers(model, [layer], root, cfg)[layer]
    quality = (
        f"Trained layer {layer} in {m['seconds']:.0f} s: explained variance {m['explained_variance']:.3f}, "
        f"L0 {m['l0']:.1f}, dead latents {m['dead_fraction']:.1%}."
    )
    download = _zipped(root / f"layer_{layer}")
    if TRAINING == "private":
        return f"{quality} {NOTES['private']}", download
    return (
        f"{quality} Saved under `{root}`; the descent targets (softmax, delta or the paper's prototype) use it "
        f"now. The default (learned offsets, fitted for {_offset_layers(model)}) keeps the SAEs its offsets "
        "were fitted for; Prepare below refits them for the new SAEs."
    ), download


@gpu_long
@guarded("prepare")
def prepare_layers(layers, progress=gr.Progress(track_tqdm=True)):  # noqa: B008
    """Build what the default steering needs for these layers of the loaded model (SAEs, prototypes,
    learned offsets) into the user cache, skipping what is already built and verifies."""
    from steer_core.fit.prepare import PrepareConfig, plan, prepare

    if TRAINING != "on":
        raise UserError(OFF if TRAINING == "off" else PREPARE_OWNER)
    model = lm()
    chosen = read_layers(layers)
    cfg = PrepareConfig(layers=tuple(model.check_layer(layer) for layer in chosen))
    todo = plan(model, cfg)
    if todo.nothing_to_do:
        return f"Nothing to build: layers {layers_label(cfg.layers)} have their SAEs, prototypes and offsets."
    progress(0, desc=f"building {todo.describe()}")
    manifest = prepare(model, cfg)
    return (
        f"Built {manifest['built']} in {manifest['timings']['total_seconds']:.0f} s; the other tabs steer with it "
        f"now. Manifest: `{manifest['manifest']}`."
    )


def _sae_settings(model) -> list:
    with gr.Row():
        layer = Number(value=model.middle_layer, precision=0, minimum=0, maximum=model.n_layers - 1, label="Layer")
        arch = Radio([("TopK", "topk"), ("ReLU + L1", "standard")], value=SAE_DEFAULTS.architecture, label="SAE type")
        k = Slider(1, 128, value=SAE_DEFAULTS.k, step=1, label="k (TopK)")
        l1 = Slider(0.0, 5.0, value=SAE_DEFAULTS.l1_coeff, step=0.05, label="L1 weight (ReLU + L1)")
        expansion = Dropdown(
            [2, 4, 8, 16], value=SAE_DEFAULTS.expansion, label=f"Expansion (latents = expansion x {model.head_dim})"
        )
        epochs = Slider(1, 20, value=SAE_DEFAULTS.epochs, step=1, label="Epochs")
    return [layer, arch, k, l1, expansion, epochs]


def train_tab(demo: gr.Blocks, model) -> None:
    """The Train tab: SAEs and prototypes for one layer of the loaded model; Prepare for a band."""
    with gr.Tab("Train your own"):
        if TRAINING != "on":
            gr.Markdown(f"**{NOTES[TRAINING]}**", elem_id="train-mode")
        gr.Markdown(
            "Train sparse autoencoders (all heads of one layer at once) and the six level prototypes on the "
            f"train split, for the loaded model. {NOTES['on'] if TRAINING == 'on' else ''} About a minute per "
            "layer on a laptop CPU (deeper layers take longer to capture). The trained layer also comes back as "
            "a download. To train for another model, start the app with `STEER_MODEL=<HF id or local path> "
            "python app.py`."
        )
        inputs = _sae_settings(model)
        go = gr.Button("Train", variant="primary", interactive=TRAINING != "off")
        out = gr.Markdown()
        download = gr.File(label="The trained layer (zip, SAELens layout)", interactive=False)
        go.click(train_layer, inputs, [out, download], api_name="train", **ONE_SLOW)
        gr.Markdown(
            "### Prepare the default steering\n"
            "Everything the default steering needs for a band of layers of the loaded model, in one step: SAEs "
            "and prototypes for the layers that lack them, then the learned offsets, fitted together for the "
            "band (what `python -m steer_core prepare` does). Built pieces that verify are kept. For the "
            "embedded model everything ships, so there is nothing to do; for a model of its size, all of its 30 "
            "layers take about nine minutes on a 2-core CPU (half of it the offsets)."
        )
        with gr.Row():
            p_layers = gr.Textbox(
                value=f"0-{model.n_layers - 1}", label="Layers", info="a band, one layer, or e.g. 3,9,15"
            )
            p_go = gr.Button("Prepare", variant="secondary", interactive=TRAINING == "on")
        p_out = gr.Markdown(PREPARE_OWNER if TRAINING == "private" else "")
        p_go.click(prepare_layers, p_layers, p_out, api_name="prepare", **ONE_SLOW)
