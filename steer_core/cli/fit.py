"""The fitting commands: `train` (SAEs + prototypes), `prototypes` (a fold's prototypes), `fit-offsets`
(learned offsets: BiPO, RePS, KL), `fit-reps` (RePS as its authors fit it), `heads` (which heads read the
levels), `residual-units` (a residual vector's strengths in calibrated units), `instructed-replies` (the
model's replies when told the level), `train-adapter` and `prepare`."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

from ..bloom import LEVELS, by_writers, load_dataset
from ..fit.adapter import EPOCHS as ADAPTER_EPOCHS
from ..fit.instructed import InstructedConfig
from ..fit.offsets import FIT_POSITIONS, OBJECTIVES, PRECISIONS, SITES, OffsetFitConfig
from ..fit.prepare import FIT_PRECISION, FIT_STEPS
from ..fit.reps import FACTORS, RepsConfig
from ..layer_spec import layers_label
from ..paths import DEFAULT_MODEL
from ..prompts import FEEDBACK_TOKENS
from ..sae.module import ARCHITECTURES, SAETrainConfig
from .common import (
    BAND,
    UsageError,
    add_style,
    add_writers,
    fraction,
    from_args,
    layer_spec,
    load,
    model_options,
    read_jsonl_file,
    writer_rows,
)


def cmd_train(args) -> int:
    from ..fit.sae_training import train_layers
    from ..sae.module import SAETrainConfig
    from ..sae.store import user_root

    lm = load(args)
    layers = layer_spec(args.layers) if args.layers != "all" else tuple(range(lm.n_layers))
    cfg = from_args(SAETrainConfig, args, l1_coeff=args.l1)
    out = Path(args.out) if args.out else user_root(lm, args.style)
    results = train_layers(lm, list(layers), out, cfg, style=args.style)
    print(json.dumps({"out": str(out), "layers": results}))
    return 0


def cmd_prototypes(args) -> int:
    from ..fit.sae_training import ensure_trained, refit_prototypes

    layers = layer_spec(args.layers)
    lm = load(args)
    for layer in layers:
        lm.check_layer(layer)
    if args.first_tokens is not None and args.first_tokens < 1:
        raise UsageError("--first-tokens must be at least 1")
    banks = ensure_trained(lm, layers, style=args.style)
    out = refit_prototypes(
        lm, banks, writer_rows(args.writers), Path(args.out), style=args.style, first_tokens=args.first_tokens
    )
    print(
        json.dumps(
            {"out": str(out), "layers": list(layers), "writers": args.writers, "first_tokens": args.first_tokens}
        )
    )
    return 0


def cmd_fit_offsets(args) -> int:
    from ..fit.offsets import fit_fold, fit_offsets, offsets_roots

    layers = layer_spec(args.layers)
    cfg = from_args(OffsetFitConfig, args, layers=layers, factors=tuple(args.factors))
    lm = load(args)
    for layer in layers:
        lm.check_layer(layer)
    rows = writer_rows(args.writers)
    fit_rows = rows if args.data is None else by_writers(load_dataset(args.data, split="train"), args.writers)
    out = Path(args.out) if args.out else offsets_roots(lm, args.style, args.site)[0]
    if args.writers and args.site == "sae":  # a cross-writer fold: these writers' prototypes beside the offsets
        offsets, out = fit_fold(lm, rows, fit_rows, cfg, out)
    else:
        offsets = fit_offsets(lm, fit_rows, cfg)
    if args.data is not None:
        offsets.meta["data"] = str(args.data)
    return _save_and_report(offsets, out)


def cmd_fit_reps(args) -> int:
    """RePS as its authors fit it: instructed (concept) replies against the model's own, the null intervention."""
    from ..fit.reps import RepsConfig, encode_pairs, fit_reps

    layers = layer_spec(args.layers)
    cfg = from_args(RepsConfig, args, layers=layers, factors=tuple(args.factors) if args.factors else None)
    instructed = [o for _, o in read_jsonl_file(args.instructed)]
    if args.writers:
        instructed = [r for r in instructed if r.get("scenario_id", "")[:1] in set(args.writers)]
    if not instructed:
        raise UsageError(f"{args.instructed}: no instructed replies (of writers {args.writers})")
    lm = load(args)
    for layer in layers:
        lm.check_layer(layer)
    out = Path(args.out)
    own_path = Path(args.own) if args.own else out / "own_replies.jsonl"
    own = _own_replies(lm, instructed, own_path)
    groups = encode_pairs(lm.tokenizer, instructed, own, cfg.style, cfg.max_feedback_tokens)
    banks = None
    if cfg.site == "sae":
        from ..fit.sae_training import ensure_trained

        banks = ensure_trained(lm, layers, style=cfg.style)
    vectors = fit_reps(lm, groups, cfg, banks=banks, pad_id=lm.tokenizer.pad_token_id or 0)
    vectors.meta.update({"instructed": str(args.instructed), "own": str(own_path), "writers": args.writers})
    vectors.meta["scenario_ids"] = sorted({t["scenario_id"] for t in instructed})
    return _save_and_report(vectors, out)


def _own_replies(lm, instructed: list[dict], path: Path) -> list[dict]:
    """The model's own replies to the plain prompt on the instructed replies' scenarios, sampled like them: read from
    `path`, or sampled and kept there for a rerun."""
    from ..fit.instructed import InstructedConfig, sample_own
    from ..io_utils import atomic_write_text

    if path.is_file():
        return [o for _, o in read_jsonl_file(str(path))]
    rows = [r for r in writer_rows(None) if r.scenario_id in {t["scenario_id"] for t in instructed}]
    per = 1 + max(int(t.get("sample", 0)) for t in instructed)
    own = sample_own(lm, rows, InstructedConfig(per_level=per))
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, "".join(json.dumps(o) + "\n" for o in own))
    return own


def _save_and_report(fitted, out: Path) -> int:
    """Save fitted offsets or vectors and print their record (what a script reads)."""
    fitted.save(out)
    record = {k: v for k, v in fitted.meta.items() if k not in ("sae_manifests", "scenario_ids")}
    print(json.dumps({"out": str(out), **record}))
    return 0


def cmd_heads(args) -> int:
    from ..inspect.head_ranking import rank_heads

    layers = layer_spec(args.layers)
    if args.top < 1:
        raise UsageError(f"--top must be at least 1, got {args.top}")
    if args.max_feedback_tokens < 1:
        raise UsageError(f"--max-feedback-tokens must be at least 1, got {args.max_feedback_tokens}")
    rows = writer_rows(args.writers)
    lm = load(args)
    got = rank_heads(lm, rows, layers, args.top, args.max_feedback_tokens)
    if args.json:
        print(json.dumps({k: got[k] for k in ("heads", "ranked", "mean_lift", "n_feedbacks")}))
    else:
        print(f"mean lift over {got['n_heads']} heads: {got['mean_lift']:+.0%} ({got['n_feedbacks']} feedbacks)")
        for r in got["ranked"]:
            print(f"  layer {r['layer']:>2} head {r['head']}: {r['lift']:+.0%}")
        print(f"--heads {got['heads']}")
    return 0


def cmd_instructed(args) -> int:
    from ..fit.instructed import InstructedConfig, hit_rate, judged_at_level, sample_instructed
    from ..io_utils import atomic_write_text
    from ..judge.classifier import default_judge

    cfg = from_args(InstructedConfig, args)
    out = Path(args.out)
    if out.suffix != ".jsonl":
        raise UsageError(f"--out must name a .jsonl file, got {args.out!r}")
    lm = load(args)
    rows = sample_instructed(lm, writer_rows(args.writers), cfg, judge=default_judge())
    kept = judged_at_level(rows)
    kept_path = out.with_suffix(".judged.jsonl")
    for path, part in ((out, rows), (kept_path, kept)):
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in part))
    print(
        json.dumps(
            {
                "out": str(out),
                "n": len(rows),
                "hit_rate": round(hit_rate(rows), 4),
                "judged_only": str(kept_path),
                "n_judged_only": len(kept),
                "scenarios": len({r["scenario_id"] for r in rows}),
                "scenarios_judged_only": len({r["scenario_id"] for r in kept}),
            }
        )
    )
    return 0


def cmd_train_adapter(args) -> int:
    from ..fit.adapter import train_adapter
    from ..model.loading import load_model

    lm = load_model(args.model, device=args.device, adapter=None)
    info = train_adapter(
        lm,
        Path(args.out),
        epochs=args.epochs,
        rank=args.rank,
        lr=args.lr,
        style=args.style,
        prompts=tuple(args.prompts),
        instruction_writers=args.instruction_writers,
    )
    print(json.dumps({"out": args.out, **info}))
    return 0


def every_layer_or(spec: str | None, lm) -> tuple[int, ...]:
    """--layers as given, or (None, "all") every layer of the loaded model; each checked against it."""
    every = spec is None or spec.strip().lower() == "all"
    return tuple(lm.check_layer(layer) for layer in (range(lm.n_layers) if every else layer_spec(spec)))


def cmd_prepare(args) -> int:
    from ..fit.prepare import PrepareConfig, plan, prepare

    lm = load(args)
    # the default steers every layer: for another model that is every layer of that model
    layers = every_layer_or(args.layers, lm)
    writers = tuple(args.writers) if args.writers else None
    sae = replace(SAETrainConfig(), epochs=args.sae_epochs)
    cfg = PrepareConfig(layers=layers, style=args.style, writers=writers, sae=sae, cards=not args.no_cards)
    cfg = replace(cfg, offsets=cfg.default_fit(cfg.fit_rows(cfg.rows()), args.offset_epochs, args.offset_precision))
    todo = plan(lm, cfg, args.out)
    print(f"{lm.label}: to build: {todo.describe()}", file=sys.stderr)
    if args.check:
        print(
            json.dumps(
                {"layers_done": todo.layers_done, "layers_todo": todo.layers_todo, "offsets_done": todo.offsets_done}
            )
        )
        return 0
    manifest = prepare(lm, cfg, args.out)
    steer = "" if args.out is None else f" --saes {todo.saes_dir} --offsets {todo.offsets_dir}"
    model = "" if args.model == DEFAULT_MODEL else f" --model {args.model}"
    model += f" --adapter {lm.adapter}" if lm.adapter and args.adapter else ""
    print(
        f"ready: python -m steer_core generate{model}{steer} --level create --question ... --answer ...",
        file=sys.stderr,
    )
    print(json.dumps({k: manifest[k] for k in ("manifest", "saes", "offsets", "built", "reused_layers", "timings")}))
    return 0


def register(sub) -> None:
    for add in (
        _train, _prototypes, _fit_offsets, _fit_reps, _heads, _units, _instructed, _train_adapter, _prepare, _cards
    ):  # fmt: skip
        add(sub)


def _train(sub) -> None:
    t = sub.add_parser("train", help="train per-head SAEs + level prototypes for layers", parents=[model_options()])
    t.add_argument("--layers", default="all", help="all, 15, 8-21 or 3,9,15")
    t.add_argument("--out", default=None, help="default: the user cache (~/.cache/bloom-steer/saes/...)")
    sd = SAETrainConfig()
    t.add_argument("--architecture", default=sd.architecture, choices=ARCHITECTURES)
    t.add_argument("--expansion", type=int, default=sd.expansion, help="latents per head = expansion x head dim")
    t.add_argument("--k", type=int, default=sd.k, help="active latents (TopK)")
    t.add_argument("--l1", type=float, default=sd.l1_coeff, help="L1 weight (standard)")
    t.add_argument("--epochs", type=int, default=sd.epochs)
    add_style(t)
    t.set_defaults(func=cmd_train)


def _prototypes(sub) -> None:
    r = sub.add_parser(
        "prototypes",
        help="copy the trained SAEs of layers with level prototypes recomputed from some writers only (a "
        "cross-writer fold) or from each feedback's first tokens; steer with the folder through --saes",
        parents=[model_options()],
    )
    r.add_argument("--layers", default=BAND)
    add_writers(r, help="writing batches (scenario id letters), e.g. A B C (default: all train scenarios)")
    r.add_argument(
        "--first-tokens",
        type=int,
        default=None,
        metavar="K",
        help="prototypes from each feedback's first K tokens only (its opening names the task)",
    )
    r.add_argument("--out", required=True)
    add_style(r)
    r.set_defaults(func=cmd_prototypes)


def _fit_offsets(sub) -> None:
    o = sub.add_parser(
        "fit-offsets", help="fit learned sparse code offsets per level (the steering bound)", parents=[model_options()]
    )
    o.add_argument("--layers", default=BAND)
    add_writers(
        o,
        help="fit on these writers' train scenarios only (a cross-writer fold); also writes the fold's prototypes "
        "to OUT/saes and the offsets to OUT/offsets",
    )
    d = OffsetFitConfig()
    for name, kind in (("epochs", int), ("lr", float), ("beta", float), ("l1", float), ("sft", float)):
        o.add_argument(f"--{name}", type=kind, default=getattr(d, name))
    o.add_argument("--max-feedback-tokens", type=int, default=d.max_feedback_tokens)
    o.add_argument("--seed", type=int, default=d.seed)
    faster = "bfloat16: matrix products in bfloat16 (1.5x faster on a CPU; less accurate offsets on validation)"
    o.add_argument("--precision", default=d.precision, choices=PRECISIONS, help=faster)
    add_style(o)
    o.add_argument(
        "--objective",
        default=d.objective,
        choices=OBJECTIVES,
        help="bipo: preference against the unsteered model, fitted at strength 1 and scaled afterwards; "
        "reps: reference-free preference steering with the strength sampled inside the fit; kl: distillation "
        "from the instructed replies (--data)",
    )
    o.add_argument(
        "--factors",
        type=float,
        nargs="+",
        default=list(d.factors),
        help="reps: strength factors sampled each step (strength 1 = the offsets as fitted)",
    )
    o.add_argument("--simpo-scaler", type=float, default=d.simpo_scaler, help="reps: up-weighting of unlikely replies")
    o.add_argument(
        "--site",
        default=d.site,
        choices=SITES,
        help="sae: offsets of the query SAEs' codes; residual: a vector per level added to each layer's "
        "output (the field's steering-vector baseline; steer with --method residual --residual DIR)",
    )
    o.add_argument(
        "--positions",
        default=d.positions,
        choices=FIT_POSITIONS,
        help="generated: steer only the replies while fitting; all: the prompt too (about 3x slower), "
        "for steering with --positions all",
    )
    _per_token_options(o)
    o.add_argument(
        "--data",
        default=None,
        help="JSONL of replies to fit on instead of the dataset (e.g. from `instructed-replies`): the dataset's "
        "fields, a reply of every level per scenario and sample",
    )
    o.add_argument("--out", default=None, help="default: the user cache (~/.cache/bloom-steer/offsets/...)")
    o.set_defaults(func=cmd_fit_offsets)


def _per_token_options(o) -> None:
    o.add_argument(
        "--per-token",
        action="store_true",
        help="each token's coefficient on its level's edit read from its own activation (a gate per level and "
        "layer, per head from its query at the SAE site, fitted with the offsets)",
    )
    o.add_argument("--init", default=None, metavar="DIR", help="start from this fit's offsets (the same site)")


def _fit_reps(sub) -> None:
    rs = sub.add_parser(
        "fit-reps",
        help="RePS as its authors fit it: per level, the model's instructed replies against its own plain-prompt "
        "replies; +factor toward the level, the null intervention away; AdamW, no L1",
        parents=[model_options()],
    )
    rd = RepsConfig()
    rs.add_argument(
        "--instructed", "--teacher", required=True, help="instructed replies (JSONL from `instructed-replies`)"
    )
    rs.add_argument(
        "--own", default=None, help="the model's own replies (default: sampled, kept in OUT/own_replies.jsonl)"
    )
    add_writers(rs)
    rs.add_argument("--site", default=rd.site, choices=SITES)
    rs.add_argument("--layers", default=layers_label(rd.layers))
    rs.add_argument("--positions", default=rd.positions, choices=("generated", "all"))
    rs.add_argument("--epochs", type=int, default=rd.epochs)
    rs.add_argument("--lr", type=float, default=rd.lr)
    rs.add_argument("--weight-decay", type=float, default=rd.weight_decay)
    rs.add_argument(
        "--factors",
        nargs="+",
        type=fraction,
        default=None,
        help="factors drawn per example (default: where the site's text changes: "
        + "; ".join(f"{k} {' '.join(f'{v:g}' for v in vs)}" for k, vs in FACTORS.items())
        + ")",
    )
    rs.add_argument("--simpo-scaler", type=float, default=rd.simpo_scaler)
    rs.add_argument("--max-feedback-tokens", type=int, default=rd.max_feedback_tokens)
    rs.add_argument("--seed", type=int, default=rd.seed)
    add_style(rs)
    rs.add_argument("--out", required=True, help="folder for the vectors (steer with --residual or --offsets)")
    rs.set_defaults(func=cmd_fit_reps)


def _heads(sub) -> None:
    h = sub.add_parser(
        "heads",
        help="rank heads by how much more feedback of each level reads that level's line of the rubric prompt "
        "(heads that steering can move)",
        parents=[model_options()],
    )
    h.add_argument("--layers", default=BAND)
    add_writers(h, help="only these writers' train feedbacks (e.g. A B C)")
    h.add_argument("--top", type=int, default=12)
    h.add_argument("--max-feedback-tokens", type=int, default=FEEDBACK_TOKENS)
    h.add_argument("--json", action="store_true")
    h.set_defaults(func=cmd_heads)


def cmd_units(args) -> int:
    """A residual vector's alphas in units of the distance between the level centroids at its layer."""
    from ..inspect.centroids import calibrated_strengths, level_centroids
    from ..steering.offset_files import load_offsets

    if any(not (a >= 0) for a in args.alphas):
        raise UsageError("--alphas must be numbers >= 0")
    lm = load(args)
    vectors = load_offsets(lm, args.residual, args.style, site="residual")
    rows = writer_rows(args.writers)
    out = []
    for layer in vectors.layers:
        cent = level_centroids(lm, layer, rows, args.style)
        out.append(
            {
                "layer": layer,
                "centroid_distance": {lv: round(float(d), 4) for lv, d in zip(LEVELS, cent.distances())},
                "vector_norm": {lv: round(float(n), 4) for lv, n in zip(LEVELS, vectors.for_layer(layer).norm(dim=-1))},
                "feedback_tokens": dict(zip(LEVELS, cent.tokens)),
                "strengths": calibrated_strengths(vectors.for_layer(layer), args.alphas, cent),
            }
        )
    if args.json:
        print(json.dumps(out))
        return 0
    for o in out:
        dist = ", ".join(f"{k} {v:.2f}" for k, v in o["centroid_distance"].items())
        print(f"layer {o['layer']}: centroid distance {dist}")
        for s in o["strengths"]:
            print(f"  alpha {s['alpha']:g}: {s['units']:.3f} centroid distances (mean over levels)")
    return 0


def _units(sub) -> None:
    u = sub.add_parser(
        "residual-units",
        help="a residual vector's strengths in calibrated units: alpha x the vector's norm over the distance between "
        "the level centroids at its layer (each level's mean stream on its feedback against the others')",
        parents=[model_options()],
    )
    u.add_argument("--residual", default=None, help="folder of residual vectors (default: the model's own)")
    u.add_argument("--alphas", nargs="+", type=fraction, default=[1.0, 2.0, 3.0, 4.0, 5.0])
    add_writers(u, help="the train feedbacks the centroids are read on (default: every writer's)")
    add_style(u)
    u.add_argument("--json", action="store_true")
    u.set_defaults(func=cmd_units)


def _instructed(sub) -> None:
    tc = sub.add_parser(
        "instructed-replies",
        aliases=["teacher"],
        help="sample the model's own replies under the instruction prompt (the level named), every level of every "
        "train scenario, as data for fit-offsets --data and fit-reps",
        parents=[model_options()],
    )
    td = InstructedConfig()
    add_writers(tc)
    tc.add_argument("--per-level", type=int, default=td.per_level, help="sampled replies per scenario and level")
    tc.add_argument("--temperature", type=float, default=td.temperature)
    tc.add_argument("--max-new-tokens", type=int, default=td.max_new_tokens)
    tc.add_argument("--seed", type=int, default=td.seed)
    tc.add_argument(
        "--out",
        required=True,
        help="FILE.jsonl for every reply (judged); FILE.judged.jsonl gets the ones the judge reads at their level",
    )
    tc.set_defaults(func=cmd_instructed)


def _train_adapter(sub) -> None:
    a = sub.add_parser(
        "train-adapter",
        help="fit the feedback LoRA on the train split (the level is never shown unless --prompts includes "
        "instruction)",
    )
    a.add_argument("--out", required=True, help="folder for the adapter (peft format, safetensors)")
    a.add_argument(
        "--prompts",
        nargs="+",
        default=["plain"],
        choices=("plain", "instruction"),
        help="prompt formats of the training examples: plain (level never shown), instruction "
        "(the level named and described); both = every feedback twice",
    )
    a.add_argument(
        "--instruction-writers",
        nargs="+",
        default=None,
        metavar="W",
        help="take the instruction examples from these writers' scenarios only (e.g. A B C), so the other "
        "writers' level labels stay unseen for a cross-writer validation; plain examples use the whole train split",
    )
    a.add_argument("--epochs", type=int, default=ADAPTER_EPOCHS)
    a.add_argument("--rank", type=int, default=8)
    a.add_argument("--lr", type=float, default=1e-3)
    add_style(a)
    a.add_argument("--model", default=DEFAULT_MODEL)
    a.add_argument("--device", default="auto")
    a.set_defaults(func=cmd_train_adapter)


def _prepare(sub) -> None:
    pr = sub.add_parser(
        "prepare",
        help="build everything the default steering needs for a model: SAEs + prototypes for the layers, "
        "then the learned offsets (resumable; what exists and verifies is kept)",
        parents=[model_options()],
    )
    pr.add_argument(
        "--layers", default=None, help=f"all, 15, 8-21 or 3,9,15 (default: all, {BAND} on the default model)"
    )
    pr.add_argument(
        "--out", default=None, help="one folder (OUT/saes, OUT/offsets); default: the user cache, where the app looks"
    )
    add_style(pr)
    pr.add_argument("--check", action="store_true", help="only say what is built and what is missing")
    pr.add_argument(
        "--offset-epochs",
        type=int,
        default=None,
        help=f"passes of the offsets fit over its scenarios (default: as many as make about {FIT_STEPS} steps, as "
        "the shipped fit: 4 over writers A-C's)",
    )
    pr.add_argument(
        "--offset-precision",
        default=FIT_PRECISION,
        choices=PRECISIONS,
        help="the model's matrix products while fitting the offsets (bfloat16: about 1.5x faster on a CPU, "
        "less accurate on validation)",
    )
    pr.add_argument(
        "--sae-epochs", type=int, default=SAETrainConfig().epochs, help="passes of each layer's SAE training"
    )
    add_writers(pr, help="only these writers' train scenarios (default: the whole train split)")
    pr.add_argument("--no-cards", action="store_true", help="skip the latent cards (the `cards` command builds them)")
    pr.set_defaults(func=cmd_prepare)


def cmd_cards(args) -> int:
    import time

    from ..fit.cards import build_cards
    from ..inspect.cards import cards_root

    lm = load(args)
    layers = list(every_layer_or(args.layers, lm))
    t0 = time.time()
    out = build_cards(lm, layers, args.out or cards_root(lm, args.style), args.style, effects=args.effects)
    files = sorted(out.glob("*.safetensors")) + [out / "cards.json"]
    size = sum(f.stat().st_size for f in files)
    print(json.dumps({"out": str(out), "layers": len(layers), "seconds": round(time.time() - t0, 1), "bytes": size}))
    return 0


def _cards(sub) -> None:
    c = sub.add_parser(
        "cards",
        help="build the latent cards (what each SAE latent fires on, by level, and what pushing it does) from the "
        "model's SAEs and the train split; resumable",
        parents=[model_options()],
    )
    c.add_argument("--layers", default="all", help="all, 15, 8-21 or 3,9,15")
    c.add_argument("--out", default=None, help="folder (default: the user cache, where the app looks)")
    c.add_argument(
        "--effects", type=int, default=4, help="judge replies steered by each level offset's top N latents (0: none)"
    )
    add_style(c)
    c.set_defaults(func=cmd_cards)
