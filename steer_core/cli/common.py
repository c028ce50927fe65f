"""What every command shares: reading the model, scenario and steering options (declared once here), the
helpers that turn flags into configs, and the one error type a user can fix."""

from __future__ import annotations

import argparse
from dataclasses import fields
from fractions import Fraction

from ..bloom import by_writers, load_dataset, read_jsonl
from ..errors import UserError
from ..generation import EVAL_TOKENS, MAX_BATCH
from ..layer_spec import layers_label, parse_heads, parse_latents, read_layers
from ..paths import DEFAULT_MODEL
from ..prompts import DEFAULT_STYLE, PROMPT_STYLES
from ..steering import targets
from ..steering.config import DEFAULT_LAYERS, KNOBS, METHOD_ALPHA, PROMPT_ALPHA, SteerConfig
from ..steering.files import SteerFiles

BAND = layers_label(DEFAULT_LAYERS)
VALIDATION_WRITERS = ("D", "E", "F")  # the train scenarios every strength was chosen on


class UsageError(UserError):
    """A problem with the command line itself (a flag's value, a missing file)."""


def add_style(p) -> None:
    p.add_argument("--style", default=DEFAULT_STYLE, choices=PROMPT_STYLES, help="the prompt format")


def add_writers(p, help: str = "only these writers' train scenarios (scenario id letters, e.g. A B C)") -> None:
    p.add_argument("--writers", nargs="+", default=None, help=help)


def add_scenario_options(p, split: str = "test") -> None:
    """Which scenarios a run covers, and at what length (eval and sweep)."""
    p.add_argument("--scenarios", default=None, help="JSONL with question, student_answer, id (default: the dataset)")
    p.add_argument(
        "--split", default=split, choices=("test", "train", "all"),
        help=f"keep lines of this split when the file has a 'split' field (default {split})",
    )  # fmt: skip
    p.add_argument("--limit", type=int, default=None, help="only the first N scenarios")
    p.add_argument("--levels", nargs="+", default=None, help="target levels (default: all six)")
    add_style(p)
    p.add_argument("--max-new-tokens", type=int, default=EVAL_TOKENS)
    p.add_argument("--max-batch", type=int, default=MAX_BATCH, help="rows per generation batch")
    p.add_argument("--out", required=True, help="output directory (rerun with the same one to resume)")


def read_jsonl_file(path: str) -> list[tuple[int, dict]]:
    return read_jsonl(path, UsageError)


def load(args):
    """The model the command runs on: --model, with the shipped feedback adapter, another (--adapter DIR)
    or none (--no-adapter, or --adapter none)."""
    from ..errors import UserError
    from ..model.loading import adapter_choice, load_model

    given = getattr(args, "adapter", None)
    if given and args.no_adapter:
        raise UsageError("--adapter and --no-adapter exclude each other")
    try:
        adapter = None if args.no_adapter else adapter_choice(given)
    except UserError as e:
        raise UsageError(f"--adapter {e}") from None
    return load_model(args.model, device=args.device, adapter=adapter)


def eval_scenarios(path: str | None, split: str, limit: int | None, writers=None):
    """Scenarios from the dataset (default: its test split) or any JSONL of question/student_answer/id."""
    from ..bloom import Scenario, scenarios

    if path is None:
        items = scenarios(load_dataset(split=None if split == "all" else split))
    else:
        items, seen = [], set()
        for lineno, o in read_jsonl_file(path):
            if split != "all" and "split" in o and o["split"] != split:
                continue
            sid = str(o.get("scenario_id", o.get("id", f"line{lineno}")))
            if sid in seen:
                continue
            q, a = o.get("question"), o.get("student_answer")
            if not isinstance(q, str) or not q.strip() or not isinstance(a, str) or not a.strip():
                raise UsageError(f"{path} line {lineno}: needs non-empty string fields 'question' and 'student_answer'")
            seen.add(sid)
            items.append(Scenario(sid, q, a, str(o.get("subject", ""))))
        if not items:
            raise UsageError(f"{path}: no scenarios (split {split!r})")
    items = by_writers(items, writers, "scenarios")
    if limit is not None:
        if limit < 1:
            raise UsageError("--limit must be >= 1")
        items = items[:limit]
    return items


def fraction(text: str) -> float:
    """A number, or a fraction such as 10/3 (a strength that gives a round alpha)."""
    try:
        return float(Fraction(text.strip()))
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"expected a number such as 1, 0.5 or 10/3, got {text!r}") from None


def parse_variant(spec: str) -> tuple[str, float]:
    target, _, strength = spec.partition(":")
    try:
        value = fraction(strength)
    except argparse.ArgumentTypeError:
        value = float("nan")
    if target not in targets.REGISTRY or not value >= 0:
        raise UsageError(
            "--variants items look like learned:1 or delta:0.5 (target:strength; target: "
            f"{', '.join(targets.REGISTRY)}); got {spec!r}"
        )
    return target, value


def layer_spec(spec: str) -> tuple[int, ...]:
    try:
        return read_layers(spec)
    except UserError as exc:
        raise UsageError(f"--{exc}") from None


def writer_rows(writers, split: str = "train"):
    return by_writers(load_dataset(split=split), writers, f"{split}-split rows")


def from_args(cls, args, **given):
    """A config dataclass from the parsed flags of the same names (the flags take its defaults)."""
    names = {f.name for f in fields(cls)}
    return cls(**{**{k: v for k, v in vars(args).items() if k in names}, **given})


def model_options() -> argparse.ArgumentParser:
    """Which model a command runs on; `load` turns these into a loaded model."""
    p = argparse.ArgumentParser(add_help=False)
    m = p.add_argument_group("model")
    m.add_argument(
        "--model", default=DEFAULT_MODEL, help=f"HF id or local path (default: the embedded {DEFAULT_MODEL})"
    )
    m.add_argument("--no-adapter", action="store_true", help="the bare model, without the feedback LoRA")
    m.add_argument(
        "--adapter", default=None, help="a LoRA adapter folder to use instead of the shipped one (none: the bare model)"
    )
    m.add_argument("--device", default="auto")
    return p


STEERING_FLAGS = {  # the steering knobs the CLI reads, each a --flag of the field's name (the folders follow)
    name: k for name, k in KNOBS.items() if name not in ("layers", "heads")
}


def steering_options(multi_layers: bool) -> argparse.ArgumentParser:
    """The steering options, each read from its SteerConfig knob (help, choices, default: the validated setting)."""
    d = SteerConfig()
    default = f"the layers the model's learned offsets cover: {layers_label(d.layers)} for the embedded model"
    p = argparse.ArgumentParser(add_help=False)
    s = p.add_argument_group("steering (defaults: the setting chosen on validation data)")
    layers_help = "one or more layer sets: 15 8-21 0-29" if multi_layers else "15, 8-21 or 3,9,15"
    s.add_argument("--layers", nargs="+" if multi_layers else None, default=None, help=f"{layers_help} ({default})")
    s.add_argument(
        "--heads",
        default="all",
        help="'all', heads of every steered layer (0,3,5) or layer.head pairs (18.6,18.7,8.0; these "
        "replace --layers; the `heads` command ranks them)",
    )
    for name, k in STEERING_FLAGS.items():
        s.add_argument(
            "--" + name.replace("_", "-"), default=getattr(d, name), help=_flag_help(name, k, d), **_typed(k)
        )
    s.add_argument("--saes", default=None, help="folder of layer_<l>/ SAEs to steer with (default: the model's own)")
    s.add_argument("--offsets", default=None, help="folder of learned offsets (target learned; default: the model's)")
    s.add_argument(
        "--residual", default=None, help="folder of residual-stream vectors (method residual; default: the model's)"
    )
    return p


def _typed(k) -> dict:
    """argparse's type, choices and metavar for a knob's kind."""
    if k.kind == "choice":
        return {"choices": list(k.values)}
    if k.kind == "integer" or k.whole:
        return {"type": int, "metavar": "N"}
    if k.kind == "latents":
        return {"type": _latents_arg, "metavar": "L.H:LATENT:S,..."}
    return {"type": fraction}  # a number, or a fraction such as 10/3 (a strength that gives a round alpha)


def _latents_arg(text: str):
    try:
        return parse_latents(text)
    except UserError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _flag_help(name: str, k, d: SteerConfig) -> str:
    """The knob's help, with its default; strength also says what 1 means for each target and method."""
    text = k.help or k.label
    if name == "strength":
        text += "; strength 1 is alpha " + ", ".join(f"{t} {spec.unit_alpha:g}" for t, spec in targets.REGISTRY.items())
        text += "; for " + ", ".join(f"{m} ({t}) {a:g}" for (m, t), a in METHOD_ALPHA.items())
        text += "; on top of a prompt: " + ", ".join(f"{m} ({t}, {p}) {a:g}" for (m, t, p), a in PROMPT_ALPHA.items())
    if name == "target":
        text = "; ".join(f"{t}: {spec.help}" for t, spec in targets.REGISTRY.items())
    default = getattr(d, name)
    return (
        text
        if default is None
        else f"{text} (default {default:g})"
        if k.kind == "slider"
        else f"{text} (default {default})"
    )


def model_layers(spec: str | None, lm) -> tuple[int, ...]:
    """--layers as given, else the loaded model's default (the layers its learned offsets cover)."""
    from ..steering.model_defaults import require_default_layers

    layers = layer_spec(spec) if spec else require_default_layers(lm)
    for layer in layers:
        lm.check_layer(layer)
    return layers


def steer_config(args, layers) -> SteerConfig:
    heads, layer_heads = parse_heads(args.heads)
    if layer_heads is not None:  # layer.head pairs name their own layers
        layers = tuple(sorted({layer for layer, _ in layer_heads}))
    # --method names the generation method (fewshot too); each request sets the config's own method
    return from_args(SteerConfig, args, method=SteerConfig.method, layers=layers, heads=heads, layer_heads=layer_heads)


def steer_files(args) -> SteerFiles:
    """The folders --saes, --offsets and --residual name (the model's own where not given)."""
    return SteerFiles(saes=args.saes, offsets=args.offsets, residual=args.residual)
