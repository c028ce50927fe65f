"""`python -m steer_core <command>`: the stable command-line contract (reference: docs/cli.md).

Errors the user can fix (a missing file, a malformed line, a bad option) print one line on stderr
and exit with status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields
from fractions import Fraction
from pathlib import Path

from .. import methods
from ..bloom import DEFAULT_DATASET, LEVELS, by_writers, load_dataset, normalize_level, read_jsonl
from ..errors import UserError
from ..fit.adapter import EPOCHS as ADAPTER_EPOCHS
from ..fit.instructed import TeacherConfig
from ..fit.offsets import FIT_POSITIONS, OBJECTIVES, SITES, OffsetFitConfig
from ..fit.reps import FACTORS, RepsConfig
from ..generation import EVAL_TOKENS, REPLY_TOKENS
from ..layer_spec import layers_label, parse_heads
from ..paths import DEFAULT_MODEL, ROOT
from ..prompts import PROMPT_STYLES
from ..sae.module import ARCHITECTURES, SAETrainConfig
from ..steering import targets
from ..steering.config import DEFAULT_LAYERS, METHOD_ALPHA, POSITIONS, SteerConfig

BAND = layers_label(DEFAULT_LAYERS)
VALIDATION_WRITERS = ("D", "E", "F")  # the train scenarios every strength was chosen on
DEFAULT_SWEEP = (0.5, 1.0, 1.5, 2.0)  # strengths a sweep runs unless told (1: each method's validated setting)


class UsageError(UserError):
    """A problem with the command line itself (a flag's value, a missing file)."""


def _read_jsonl(path: str) -> list[tuple[int, dict]]:
    return read_jsonl(path, UsageError)


def cmd_judge(args) -> int:
    from ..judge.classifier import default_judge, scores

    items = _read_jsonl(args.file)
    if args.split:
        items = [(n, o) for n, o in items if o.get("split") == args.split]
        if not items:
            raise UsageError(f"{args.file}: no lines with split == {args.split!r}")
    texts, ids, levels = [], [], []
    for lineno, obj in items:
        fb = obj.get("feedback")
        if not isinstance(fb, str) or not fb.strip():
            raise UsageError(f"{args.file} line {lineno}: needs a non-empty string field 'feedback'")
        texts.append(fb)
        ids.append(obj.get("id", lineno))
        if "level" in obj:
            try:
                levels.append(normalize_level(str(obj["level"])))
            except ValueError as exc:
                raise UsageError(f"{args.file} line {lineno}: {exc}") from None
        else:
            levels.append(None)
    verdicts = default_judge().judge(texts)
    if args.summary:
        scored = [(t, v["pred"]) for t, v in zip(levels, verdicts) if t is not None]
        if not scored:
            raise UsageError(f"{args.file}: --summary needs a 'level' field on the lines to score against")
        s = scores([t for t, _ in scored], [p for _, p in scored])
        print(json.dumps(s))
    else:
        for i, v in zip(ids, verdicts):
            print(json.dumps({"id": i, "pred": v["pred"], "probs": v["probs"]}))
    return 0


def cmd_fit_judge(args) -> int:
    from ..judge.classifier import JUDGE_DIR
    from ..judge.fitting import compare_and_fit

    rows = load_dataset(args.data)
    train = [r for r in rows if r.split == "train"]
    test = [r for r in rows if r.split == "test"]
    judge, report = compare_and_fit(train, test)
    out = Path(args.out or JUDGE_DIR)
    judge.save(out, metrics={k: v for k, v in report.items() if k != "candidates"})
    print(json.dumps({k: v for k, v in report.items() if k != "candidates"}, indent=1))
    print(f"saved the {report['chosen']} judge to {out}", file=sys.stderr)
    return 0


def _load(args):
    """The model the command runs on: --model, with the shipped feedback adapter, another (--adapter)
    or none (--no-adapter)."""
    from ..model.loading import load_model

    if getattr(args, "adapter", None) and args.no_adapter:
        raise UsageError("--adapter and --no-adapter exclude each other")
    if getattr(args, "adapter", None) and not (Path(args.adapter) / "adapter_config.json").is_file():
        raise UsageError(f"--adapter {args.adapter}: no LoRA adapter there (adapter_config.json)")
    return load_model(
        args.model,
        device=args.device,
        adapter=None if args.no_adapter or _no_adapter(args) else (getattr(args, "adapter", None) or "default"),
    )


def _no_adapter(args) -> bool:
    return str(getattr(args, "adapter", None) or "").strip().lower() == "none"


def cmd_prepare(args) -> int:
    from ..fit.prepare import PrepareConfig, plan, prepare

    lm = _load(args)
    # the default steers every layer: for another model that is every layer of that model
    every = args.layers is None or args.layers.strip().lower() == "all"
    layers = tuple(range(lm.n_layers)) if every else _layers(args.layers)
    writers = tuple(args.writers) if args.writers else None
    layers = tuple(lm.check_layer(layer) for layer in layers)
    fit = OffsetFitConfig(layers=layers, style=args.style, epochs=args.offset_epochs)
    cfg = PrepareConfig(layers=layers, style=args.style, writers=writers, offsets=fit)
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
    print(
        f"ready: python -m steer_core generate{model}{steer} --level create --question ... --answer ...",
        file=sys.stderr,
    )
    print(json.dumps({k: manifest[k] for k in ("manifest", "saes", "offsets", "built", "reused_layers", "timings")}))
    return 0


def cmd_generate(args) -> int:
    import time

    from ..generation import Request, generate_batch
    from ..judge.classifier import default_judge

    layers = _layers(args.layers)
    steer = _steer_config(args, layers)
    if args.scenarios:
        items = [(o.get("id", n), o.get("question"), o.get("student_answer")) for n, o in _read_jsonl(args.scenarios)]
    else:
        if args.question is None or args.answer is None:
            raise UsageError("give --question and --answer, or --scenarios FILE.jsonl")
        items = [(None, args.question, args.answer)]
    lm = _load(args)
    judge = default_judge()
    for sid, q, a in items:
        if not isinstance(q, str) or not isinstance(a, str):
            raise UsageError(f"scenario {sid}: needs string fields 'question' and 'student_answer'")
        req = Request(q, a, args.method, args.level, steer=steer, k_shots=args.k, style=args.style)
        t0 = time.time()
        out = generate_batch(
            lm, [req], max_new_tokens=args.max_new_tokens, seed=args.seed, temperature=args.temperature
        )[0]
        verdict = judge.judge([out.text])[0]
        rec = {
            "text": out.text,
            "method": args.method,
            "level": req.level,
            "seconds": round(time.time() - t0, 3),
            "new_tokens": out.new_tokens,
            "judge": verdict,
        }
        if args.scenarios:
            rec = {"id": sid, **rec}
        print(
            json.dumps(rec)
            if args.json
            else f"[{args.method} -> {req.level}] {out.text}\n"
            f"judge: {verdict['pred']} ({verdict['probs'][verdict['pred']]:.2f})",
            flush=True,
        )
    return 0


def _eval_scenarios(path: str | None, split: str, limit: int | None, writers=None):
    """Scenarios from the dataset (default: its test split) or any JSONL of question/student_answer/id."""
    from ..bloom import Scenario, scenarios

    if path is None:
        items = scenarios(load_dataset(split=None if split == "all" else split))
    else:
        items, seen = [], set()
        for lineno, o in _read_jsonl(path):
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


def _fraction(text: str) -> float:
    """A number, or a fraction such as 10/3 (a strength that gives a round alpha)."""
    try:
        return float(Fraction(text.strip()))
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"expected a number such as 1, 0.5 or 10/3, got {text!r}") from None


def _parse_variant(spec: str) -> tuple[str, float]:
    target, _, strength = spec.partition(":")
    try:
        value = _fraction(strength)
    except argparse.ArgumentTypeError:
        value = float("nan")
    if target not in targets.REGISTRY or not value >= 0:
        raise UsageError(
            "--variants items look like learned:1 or delta:0.5 (target:strength; target: "
            f"{', '.join(targets.REGISTRY)}); got {spec!r}"
        )
    return target, value


def cmd_eval(args) -> int:
    from ..evaluation import run_eval

    layer_sets = [_layers(spec) for spec in args.layers]
    levels = [normalize_level(lv) for lv in args.levels]
    items = _eval_scenarios(args.scenarios, args.split, args.limit, args.writers)
    steer = _steer_config(args, layer_sets[0])
    if steer.layer_heads is not None:  # layer.head pairs: their layers are the one layer set
        layer_sets = [steer.layers]
    if args.variants:
        from dataclasses import replace

        steer = [replace(steer, target=t, strength=a) for t, a in (_parse_variant(v) for v in args.variants)]
    lm = _load(args)
    for layers in layer_sets:
        for layer in layers:
            lm.check_layer(layer)
    report = run_eval(
        lm,
        items,
        args.methods,
        levels,
        layer_sets,
        steer,
        Path(args.out),
        max_new_tokens=args.max_new_tokens,
        style=args.style,
        max_batch=args.max_batch,
    )
    print(json.dumps(report))
    return 0


def cmd_sweep(args) -> int:
    """Each method over a list of strengths (prompt baselines once), resumable; then the matched table."""
    from dataclasses import replace

    from ..evaluation import run_eval
    from ..evaluation.frontier import MATCHED_RATIOS, build_frontier
    from ..evaluation.results import read_results
    from ..evaluation.tables import matched_table
    from ..steering.offset_files import load_offsets

    if any(not (s >= 0) for s in args.strengths):
        raise UsageError("--strengths must be numbers >= 0")
    levels = [normalize_level(lv) for lv in args.levels]
    writers = args.writers
    if writers is None and args.split == "train" and args.scenarios is None:
        writers = list(VALIDATION_WRITERS)
    items = _eval_scenarios(args.scenarios, args.split, args.limit, writers)
    given = None if args.layers is None else _layers(args.layers)
    base = _steer_config(args, given or DEFAULT_LAYERS)
    lm = _load(args)
    out = Path(args.out)
    fixed = ["none"] + [m for m in args.methods if m in methods.PROMPTED]
    run = dict(max_new_tokens=args.max_new_tokens, style=args.style, max_batch=args.max_batch)
    run_eval(lm, items, fixed, levels, [()], base, out, **run)
    for method in (m for m in args.methods if m in methods.STEERED):
        cfg = base.for_method(method)
        layers = given or cfg.layers
        if given is None and method in methods.AT_RESIDUAL and cfg.residual_dir is not None:
            layers = load_offsets(lm, cfg.residual_dir, args.style, site="residual").layers  # where they were fitted
        for layer in layers:
            lm.check_layer(layer)
        steer = [replace(cfg, layers=tuple(layers), strength=float(s)) for s in sorted(set(args.strengths))]
        run_eval(lm, items, [method], levels, [tuple(layers)], steer, out, **run)
    frontier = build_frontier(read_results(out / "results.csv"))
    print(matched_table(frontier, MATCHED_RATIOS))
    return 0


def _layers(spec: str) -> tuple[int, ...]:
    from ..layer_spec import parse_layers

    try:
        return parse_layers(spec)
    except ValueError:
        raise UsageError(f"--layers must look like 15, 8-21 or 3,9,15; got {spec!r}") from None


def _writer_rows(writers, split: str = "train"):
    return by_writers(load_dataset(split=split), writers, f"{split}-split rows")


def cmd_heads(args) -> int:
    from ..inspect.attention import rank_heads

    layers = _layers(args.layers)
    if args.top < 1:
        raise UsageError("--top must be at least 1")
    lm = _load(args)
    for layer in layers:
        lm.check_layer(layer)
    got = rank_heads(lm, _writer_rows(args.writers), layers, args.top, args.max_feedback_tokens)
    if args.json:
        print(json.dumps({k: got[k] for k in ("heads", "ranked", "mean_lift", "n_feedbacks")}))
    else:
        print(f"mean lift over {got['n_heads']} heads: {got['mean_lift']:+.0%} ({got['n_feedbacks']} feedbacks)")
        for r in got["ranked"]:
            print(f"  layer {r['layer']:>2} head {r['head']}: {r['lift']:+.0%}")
        print(f"--heads {got['heads']}")
    return 0


def cmd_prototypes(args) -> int:
    from ..fit.sae_training import ensure_trained, refit_prototypes

    layers = _layers(args.layers)
    lm = _load(args)
    for layer in layers:
        lm.check_layer(layer)
    if args.first_tokens is not None and args.first_tokens < 1:
        raise UsageError("--first-tokens must be at least 1")
    banks = ensure_trained(lm, layers, style=args.style)
    out = refit_prototypes(
        lm, banks, _writer_rows(args.writers), Path(args.out), style=args.style, first_tokens=args.first_tokens
    )
    print(
        json.dumps(
            {"out": str(out), "layers": list(layers), "writers": args.writers, "first_tokens": args.first_tokens}
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


def _from_args(cls, args, **given):
    """A config dataclass from the parsed flags of the same names (the flags take its defaults)."""
    names = {f.name for f in fields(cls)}
    return cls(**{**{k: v for k, v in vars(args).items() if k in names}, **given})


def cmd_fit_offsets(args) -> int:
    from ..fit.offsets import fit_fold, fit_offsets, offsets_roots

    layers = _layers(args.layers)
    cfg = _from_args(OffsetFitConfig, args, layers=layers, factors=tuple(args.factors))
    lm = _load(args)
    for layer in layers:
        lm.check_layer(layer)
    rows = _writer_rows(args.writers)
    fit_rows = rows if args.data is None else by_writers(load_dataset(args.data, split="train"), args.writers)
    out = Path(args.out) if args.out else offsets_roots(lm, args.style, args.site)[0]
    if args.writers and args.site == "sae":  # a cross-writer fold: these writers' prototypes beside the offsets
        offsets, out = fit_fold(lm, rows, fit_rows, cfg, out)
    else:
        offsets = fit_offsets(lm, fit_rows, cfg)
    if args.data is not None:
        offsets.meta["data"] = str(args.data)
    offsets.save(out)
    print(
        json.dumps(
            {"out": str(out), **{k: v for k, v in offsets.meta.items() if k not in ("sae_manifests", "scenario_ids")}}
        )
    )
    return 0


def cmd_fit_reps(args) -> int:
    """RePS as its authors fit it: teacher (concept) replies against the model's own, null intervention."""
    from ..fit.instructed import TeacherConfig, sample_own
    from ..fit.reps import RepsConfig, encode_pairs, fit_reps
    from ..io_utils import atomic_write_text

    layers = _layers(args.layers)
    cfg = _from_args(RepsConfig, args, layers=layers, factors=tuple(args.factors) if args.factors else None)
    teacher = [o for _, o in _read_jsonl(args.teacher)]
    if args.writers:
        teacher = [r for r in teacher if r.get("scenario_id", "")[:1] in set(args.writers)]
    if not teacher:
        raise UsageError(f"{args.teacher}: no teacher replies (of writers {args.writers})")
    lm = _load(args)
    for layer in layers:
        lm.check_layer(layer)
    out = Path(args.out)
    own_path = Path(args.own) if args.own else out / "own_replies.jsonl"
    if own_path.is_file():
        own = [o for _, o in _read_jsonl(str(own_path))]
    else:  # the model's own replies to the plain prompt, sampled like the teacher's (and kept for a rerun)
        rows = [r for r in _writer_rows(None) if r.scenario_id in {t["scenario_id"] for t in teacher}]
        per = 1 + max(int(t.get("sample", 0)) for t in teacher)
        own = sample_own(lm, rows, TeacherConfig(per_level=per))
        own_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(own_path, "".join(json.dumps(o) + "\n" for o in own))
    groups = encode_pairs(lm.tokenizer, teacher, own, cfg.style, cfg.max_feedback_tokens)
    banks = None
    if cfg.site == "sae":
        from ..fit.sae_training import ensure_trained

        banks = ensure_trained(lm, layers, style=cfg.style)
    vectors = fit_reps(lm, groups, cfg, banks=banks, pad_id=lm.tokenizer.pad_token_id or 0)
    vectors.meta.update({"teacher": str(args.teacher), "own": str(own_path), "writers": args.writers})
    vectors.meta["scenario_ids"] = sorted({t["scenario_id"] for t in teacher})
    vectors.save(out)
    print(
        json.dumps(
            {"out": str(out), **{k: v for k, v in vectors.meta.items() if k not in ("sae_manifests", "scenario_ids")}}
        )
    )
    return 0


def cmd_teacher(args) -> int:
    from ..fit.instructed import TeacherConfig, hit_rate, judged_at_level, sample_teacher
    from ..io_utils import atomic_write_text
    from ..judge.classifier import default_judge

    cfg = _from_args(TeacherConfig, args)
    out = Path(args.out)
    if out.suffix != ".jsonl":
        raise UsageError(f"--out must name a .jsonl file, got {args.out!r}")
    lm = _load(args)
    rows = sample_teacher(lm, _writer_rows(args.writers), cfg, judge=default_judge())
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


def cmd_summarize(args) -> int:
    from ..evaluation.tables import judged_rows, overall_table, paired_table, per_level_table, summary_rows

    for path in args.csv:
        if not Path(path).is_file():
            raise UsageError(f"no such file: {path}")
    rows = judged_rows(args.csv, rejudge=args.rejudge)
    summary = summary_rows(args.csv, similarity=args.similarity, rows=rows)
    print(per_level_table(summary, args.per_level) if args.per_level else overall_table(summary, args.gain_of))
    if args.paired:
        print("\nPaired over scenarios (the same bootstrap draw for both rows):\n")
        print(paired_table(rows, args.paired))
    if args.matched is not None or args.paired_matched:
        from ..evaluation.frontier import MATCHED_RATIOS, build_frontier
        from ..evaluation.tables import matched_table, paired_matched_table

        ratios = tuple(args.matched or MATCHED_RATIOS)
        if any(not r >= 1 for r in ratios):
            raise UsageError("--matched ratios are perplexity ratios to unsteered, >= 1 (e.g. 1.2 1.3 1.4)")
        frontier = build_frontier(rows)
        print(f"\nAt matched perplexity ({frontier.n_scenarios} scenarios, {frontier.draws} bootstrap draws):\n")
        print(matched_table(frontier, ratios))
        if args.paired_matched:
            print("\nPaired at the same perplexity (the same draws for both):\n")
            print(paired_matched_table(frontier, args.paired_matched, ratios))
        if args.frontier:
            from ..charts import frontier_chart, report_html
            from ..io_utils import atomic_write_text

            html = report_html(
                [frontier_chart(frontier)], "Accuracy against fluency", f"<p>From {', '.join(map(str, args.csv))}.</p>"
            )
            atomic_write_text(Path(args.frontier), html)
            print(f"wrote {args.frontier}", file=sys.stderr)
    elif args.frontier:
        raise UsageError("--frontier draws the matched-perplexity frontier: give --matched too")
    if args.figure:
        from ..charts import accuracy_by_method_level, judged_vs_target, report_html
        from ..evaluation.stats import variant_text
        from ..io_utils import atomic_write_text

        keep = [
            s
            for s in summary
            if args.only is None
            or any(k in f"{s['method']} {variant_text(s['layers'], s['setting'])}" for k in args.only)
        ]
        html = report_html(
            [judged_vs_target(keep, "Judged level against target level"), accuracy_by_method_level(keep)],
            "Does it steer?",
            f"<p>From {', '.join(map(str, args.csv))}.</p>",
        )
        atomic_write_text(Path(args.figure), html)
        print(f"wrote {args.figure}", file=sys.stderr)
    return 0


def cmd_reproduce(args) -> int:
    """Regenerate rows of a results file (or every shipped asset's golden rows) with what ships; exit 1
    if any differs."""
    from ..evaluation.reproduce import reproduce_rows
    from ..evaluation.results import read_results

    if args.shipped == bool(args.csv):
        raise UsageError("give a results.csv or --shipped (every shipped asset's recorded rows), not both")
    if args.shipped:
        from ..provenance import golden_entries

        groups = [
            (
                f"{g.asset}: {g.file.relative_to(ROOT)} {g.method} {g.setting or ''}".strip(),
                g.rows(),
                SteerConfig().for_method(g.method) if g.default else None,  # default rows: as the default ships
            )
            for g in golden_entries()
        ]
    else:
        if not Path(args.csv).is_file():
            raise UsageError(f"no such file: {args.csv}")
        rows = [r for r in read_results(Path(args.csv)) if args.method is None or r["method"] == args.method]
        if args.setting is not None:
            rows = [r for r in rows if args.setting in (r.get("setting") or "")]
        if args.scenarios:
            rows = [r for r in rows if r["scenario_id"] in set(args.scenarios)]
        if args.limit is not None:
            rows = rows[: args.limit]
        if not rows:
            raise UsageError(f"{args.csv}: no rows match")
        groups = [(args.csv, rows, None)]
    lm = _load(args)
    total = same = 0
    for name, rows, steer in groups:
        checked = reproduce_rows(lm, rows, max_new_tokens=args.max_new_tokens, steer=steer)
        n_same = sum(c["same"] for c in checked)
        total, same = total + len(checked), same + n_same
        for c in checked:
            if args.json:
                print(json.dumps({"group": name, **c}))
            elif not c["same"]:
                print(f"differs: {c['scenario_id']} {c['method']} {c['level']} {c['layers']} {c['setting']}")
                print(f"  recorded:    {c['recorded'][:200]!r}")
                print(f"  regenerated: {c['regenerated'][:200]!r}")
        print(f"{n_same} of {len(checked)} rows token for token: {name}", file=sys.stderr)
    return 0 if same == total else 1


def cmd_bench(args) -> int:
    from ..bench import run_bench

    if args.tokens < 1 or args.repeats < 1:
        raise UsageError("--tokens and --repeats must be >= 1")
    lm = _load(args)
    layer = lm.middle_layer if args.layer is None else lm.check_layer(args.layer)
    out = run_bench(
        lm,
        tokens=args.tokens,
        repeats=args.repeats,
        layer=layer,
        train=not args.no_train,
        cold_start=not args.no_cold_start,
    )
    print(json.dumps(out) if args.json else "\n".join(f"{k}: {v}" for k, v in out.items()))
    return 0


def cmd_train(args) -> int:
    from ..fit.sae_training import train_layers
    from ..sae.module import SAETrainConfig
    from ..sae.store import user_root

    lm = _load(args)
    layers = _layers(args.layers) if args.layers != "all" else tuple(range(lm.n_layers))
    cfg = _from_args(SAETrainConfig, args, l1_coeff=args.l1)
    out = Path(args.out) if args.out else user_root(lm, args.style)
    results = train_layers(lm, list(layers), out, cfg, style=args.style)
    print(json.dumps({"out": str(out), "layers": results}))
    return 0


def _model_parent() -> argparse.ArgumentParser:
    """Which model a command runs on; `_load` turns these into a loaded model."""
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


def _steer_parent(multi_layers: bool) -> argparse.ArgumentParser:
    """The steering options, their defaults read from SteerConfig (the validated setting)."""
    d = SteerConfig()
    layers = layers_label(d.layers)
    p = argparse.ArgumentParser(add_help=False)
    s = p.add_argument_group("steering (defaults: the setting chosen on validation data)")
    if multi_layers:
        s.add_argument(
            "--layers", nargs="+", default=[layers], help=f"one or more layer sets: 15 8-21 0-29 (default {layers})"
        )
    else:
        s.add_argument("--layers", default=layers, help=f"15, 8-21 or 3,9,15 (default {layers})")
    s.add_argument(
        "--heads",
        default="all",
        help="'all', heads of every steered layer (0,3,5) or layer.head pairs (18.6,18.7,8.0; these "
        "replace --layers; the `heads` command ranks them)",
    )
    s.add_argument(
        "--target",
        default=d.target,
        choices=list(targets.REGISTRY),
        help="; ".join(f"{t}: {spec.help}" for t, spec in targets.REGISTRY.items()) + f" (default {d.target})",
    )
    s.add_argument(
        "--strength",
        type=_fraction,
        default=d.strength,
        help="0 = off, 1 = the validated setting; strength 1 is alpha "
        + ", ".join(f"{t} {spec.unit_alpha:g}" for t, spec in targets.REGISTRY.items())
        + "; for "
        + ", ".join(f"{m} ({t}) {a:g}" for (m, t), a in METHOD_ALPHA.items())
        + " (default 1)",
    )
    s.add_argument("--steps", type=int, default=d.steps, help="descent steps T")
    s.add_argument("--lr", type=float, default=d.lr, help="descent step size")
    s.add_argument("--mu", type=float, default=d.mu, help="pull back toward the token's own code")
    s.add_argument("--positions", default=d.positions, choices=POSITIONS)
    s.add_argument(
        "--first-tokens",
        type=int,
        default=d.first_tokens,
        metavar="N",
        help="steer only the first N generated tokens, the reply's opening (default: all)",
    )
    s.add_argument(
        "--after-first",
        type=_fraction,
        default=d.after_first,
        metavar="SHARE",
        help="with --first-tokens: steer the tokens after the opening at this share of the strength (a schedule: "
        "strong on the opening, weaker after; default 0: not at all)",
    )
    s.add_argument("--saes", default=None, help="folder of layer_<l>/ SAEs to steer with (default: the model's own)")
    s.add_argument("--offsets", default=None, help="folder of learned offsets (target learned; default: the model's)")
    s.add_argument(
        "--residual", default=None, help="folder of residual-stream vectors (method residual; default: the model's)"
    )
    return p


def _steer_config(args, layers) -> SteerConfig:
    heads, layer_heads = parse_heads(args.heads)
    if layer_heads is not None:  # layer.head pairs name their own layers
        layers = tuple(sorted({layer for layer, _ in layer_heads}))
    # --method names the generation method (fewshot too); each request sets the config's own method
    folders = {"saes_dir": args.saes, "offsets_dir": args.offsets, "residual_dir": args.residual}
    return _from_args(
        SteerConfig, args, method=SteerConfig.method, layers=layers, heads=heads, layer_heads=layer_heads, **folders
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m steer_core", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    j = sub.add_parser("judge", help="classify feedback lines of a JSONL file into Bloom levels")
    j.add_argument("file", help="JSONL with 'feedback' (and optionally 'id', 'level') on each line")
    j.add_argument("--summary", action="store_true", help="print accuracy, macro_f1 and n against 'level'")
    j.add_argument("--split", choices=("train", "test"), help="only lines whose 'split' field is this")
    j.set_defaults(func=cmd_judge)

    f = sub.add_parser("fit-judge", help="compare judge approaches by cross-writer CV and refit the best")
    f.add_argument("--data", default=str(DEFAULT_DATASET))
    f.add_argument("--out", default=None, help="directory for the judge weights (default assets/judge)")
    f.set_defaults(func=cmd_fit_judge)

    g = sub.add_parser(
        "generate",
        help="generate feedback, steered or not, and judge its level",
        parents=[_steer_parent(multi_layers=False), _model_parent()],
    )
    g.add_argument("--question")
    g.add_argument("--answer")
    g.add_argument("--scenarios", help="JSONL with question, student_answer, id: one output line each")
    g.add_argument("--level", default="apply", choices=LEVELS)
    g.add_argument("--method", default="sae", choices=methods.ALL)
    g.add_argument("--k", type=int, default=3, help="few-shot examples")
    g.add_argument("--style", default="plain", choices=PROMPT_STYLES)
    g.add_argument("--max-new-tokens", type=int, default=REPLY_TOKENS)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    g.add_argument("--json", action="store_true")
    g.set_defaults(func=cmd_generate)

    e = sub.add_parser(
        "eval",
        help="methods x levels x layers over scenarios: results.csv, summary.csv, report.html",
        parents=[_steer_parent(multi_layers=True), _model_parent()],
    )
    e.add_argument(
        "--scenarios", default=None, help="JSONL with question, student_answer, id (default: the dataset's scenarios)"
    )
    e.add_argument(
        "--split",
        default="test",
        choices=("test", "train", "all"),
        help="keep lines of this split when the file has a 'split' field (default test)",
    )
    e.add_argument("--limit", type=int, default=None, help="only the first N scenarios")
    e.add_argument(
        "--writers",
        nargs="+",
        default=None,
        help="only scenarios of these writing batches (scenario id letters, e.g. D E F)",
    )
    e.add_argument(
        "--methods",
        nargs="+",
        default=list(methods.EVAL_DEFAULT),
        choices=methods.ALL,
    )
    e.add_argument("--levels", nargs="+", default=list(LEVELS))
    e.add_argument(
        "--variants",
        nargs="+",
        default=None,
        help="several steering targets with their strengths in one run, e.g. learned:1 learned:0.5 "
        "delta:1 softmax:10/3 (target:strength, 1 = the validated setting; replaces --target/--strength; "
        "query steering runs the delta/prototype ones)",
    )
    e.add_argument("--style", default="plain", choices=PROMPT_STYLES)
    e.add_argument("--max-new-tokens", type=int, default=EVAL_TOKENS)
    e.add_argument("--max-batch", type=int, default=96, help="rows per generation batch")
    e.add_argument("--out", required=True, help="output directory (rerun with the same one to resume)")
    e.set_defaults(func=cmd_eval)

    sw = sub.add_parser(
        "sweep",
        help="each method over a list of strengths on a split (prompt baselines once; resumable): the "
        "strength curves behind summarize --matched",
        parents=[_steer_parent(multi_layers=False), _model_parent()],
    )
    sw.add_argument(
        "--methods",
        nargs="+",
        default=["sae", "residual", "query", "fewshot", "instruction"],
        choices=[m for m in methods.ALL if m != "none"],
        help="steered methods run at every strength, prompt baselines once; the unsteered rows always run",
    )
    sw.add_argument(
        "--strengths",
        nargs="+",
        type=_fraction,
        default=list(DEFAULT_SWEEP),
        help="strengths (1 = each method's validated setting; default "
        + " ".join(f"{v:g}" for v in DEFAULT_SWEEP)
        + ")",
    )
    sw.add_argument("--scenarios", default=None, help="JSONL with question, student_answer, id (default: the dataset)")
    sw.add_argument("--split", default="train", choices=("test", "train", "all"), help="(default train: validation)")
    sw.add_argument(
        "--writers",
        nargs="+",
        default=None,
        help="only these writers' scenarios (default with --split train: D E F, the validation writers; else all)",
    )
    sw.add_argument("--limit", type=int, default=None, help="only the first N scenarios")
    sw.add_argument("--levels", nargs="+", default=list(LEVELS))
    sw.add_argument("--style", default="plain", choices=PROMPT_STYLES)
    sw.add_argument("--max-new-tokens", type=int, default=EVAL_TOKENS)
    sw.add_argument("--max-batch", type=int, default=96, help="rows per generation batch")
    sw.add_argument("--out", required=True, help="output directory (rerun with the same one to resume)")
    sw.set_defaults(func=cmd_sweep, layers=None)  # each method's own layers unless --layers is given

    m = sub.add_parser("summarize", help="Markdown table of results.csv files, with 95%% bootstrap intervals")
    m.add_argument("csv", nargs="+", help="results.csv files written by eval (pooled)")
    m.add_argument("--per-level", metavar="METHOD", help="per-level rows of this method, with judged-level shares")
    m.add_argument("--similarity", action="store_true", help="add the MiniLM similarity to the unsteered text")
    m.add_argument("--rejudge", action="store_true", help="re-score the texts with the shipped judge")
    m.add_argument(
        "--gain-of",
        metavar="ROW",
        help="add each row's share of ROW's accuracy gain over unsteered (ROW named as for --paired, e.g. instruction)",
    )
    m.add_argument(
        "--paired",
        nargs=2,
        action="append",
        metavar=("A", "B"),
        help="also the paired difference A - B of accuracy and r, with its 95%% interval over the scenarios "
        "both cover; A and B name rows by their 'method layers/setting' text or a part of it (repeatable)",
    )
    m.add_argument(
        "--matched",
        nargs="*",
        type=float,
        default=None,
        metavar="RATIO",
        help="also every method read along its strength curve at these perplexity ratios to unsteered (default "
        "1.2 1.3 1.4), with 95%% intervals over scenarios; prompt baselines at their own perplexity",
    )
    m.add_argument(
        "--paired-matched",
        nargs=2,
        action="append",
        metavar=("A", "B"),
        help="curve A minus B at the same perplexity (at each --matched ratio; at B's own perplexity when B is "
        "a prompt baseline), paired over scenarios (repeatable)",
    )
    m.add_argument("--frontier", metavar="HTML", help="with --matched: write the frontier chart (offline HTML)")
    m.add_argument(
        "--figure", metavar="HTML", help="also write the judged-vs-target and accuracy charts (offline HTML)"
    )
    m.add_argument(
        "--only",
        nargs="+",
        metavar="TEXT",
        help="in the figure, only variants whose 'method layers/setting' contains one of these",
    )
    m.set_defaults(func=cmd_summarize)

    rp = sub.add_parser(
        "reproduce",
        help="regenerate rows of a results.csv with the shipped files and say which come back token for token "
        "(exit 1 if any differs)",
        parents=[_model_parent()],
    )
    rp.add_argument("csv", nargs="?", default=None, help="a results.csv written by eval")
    rp.add_argument(
        "--shipped", action="store_true", help="instead: the rows every shipped asset records that it reproduces"
    )
    rp.add_argument("--method", default=None, choices=methods.ALL, help="only this method's rows")
    rp.add_argument("--setting", default=None, help="only rows whose setting label contains this text")
    rp.add_argument("--scenarios", nargs="+", default=None, help="only these scenario ids")
    rp.add_argument("--limit", type=int, default=None, help="only the first N matching rows")
    rp.add_argument("--max-new-tokens", type=int, default=EVAL_TOKENS, help="as the rows were generated (64)")
    rp.add_argument("--json", action="store_true", help="one JSON object per row")
    rp.set_defaults(func=cmd_reproduce)

    b = sub.add_parser(
        "bench",
        help="performance figures: tokens/s, steering overhead, cold start, SAE training",
        parents=[_model_parent()],
    )
    b.add_argument("--json", action="store_true", help="one JSON object")
    b.add_argument("--tokens", type=int, default=64, help="new tokens per timed generation")
    b.add_argument("--repeats", type=int, default=3, help="timed runs per figure (median)")
    b.add_argument(
        "--layer", type=int, default=None, help="the one steered layer, and the layer trained (default: the middle one)"
    )
    b.add_argument("--no-train", action="store_true", help="skip the SAE training figure (about a minute)")
    b.add_argument("--no-cold-start", action="store_true", help="skip the cold-start figure")
    b.set_defaults(func=cmd_bench)

    pr = sub.add_parser(
        "prepare",
        help="build everything the default steering needs for a model: SAEs + prototypes for the layers, "
        "then the learned offsets (resumable; what exists and verifies is kept)",
        parents=[_model_parent()],
    )
    pr.add_argument(
        "--layers", default=None, help=f"all, 15, 8-21 or 3,9,15 (default: all, {BAND} on the default model)"
    )
    pr.add_argument(
        "--out", default=None, help="one folder (OUT/saes, OUT/offsets); default: the user cache, where the app looks"
    )
    pr.add_argument("--style", default="plain", choices=PROMPT_STYLES)
    pr.add_argument("--check", action="store_true", help="only say what is built and what is missing")
    pr.add_argument(
        "--offset-epochs",
        type=int,
        default=OffsetFitConfig().epochs,
        help="passes of the offsets fit over the scenarios",
    )
    pr.add_argument(
        "--writers",
        nargs="+",
        default=None,
        help="only these writers' train scenarios (default: the whole train split)",
    )
    pr.set_defaults(func=cmd_prepare)

    o = sub.add_parser(
        "fit-offsets", help="fit learned sparse code offsets per level (the steering bound)", parents=[_model_parent()]
    )
    o.add_argument("--layers", default=BAND)
    o.add_argument(
        "--writers",
        nargs="+",
        default=None,
        help="fit on these writers' train scenarios only (a cross-writer fold); also writes the "
        "fold's prototypes to OUT/saes and the offsets to OUT/offsets",
    )
    d = OffsetFitConfig()
    o.add_argument("--epochs", type=int, default=d.epochs)
    o.add_argument("--lr", type=float, default=d.lr)
    o.add_argument("--beta", type=float, default=d.beta)
    o.add_argument("--l1", type=float, default=d.l1)
    o.add_argument("--sft", type=float, default=d.sft)
    o.add_argument("--max-feedback-tokens", type=int, default=d.max_feedback_tokens)
    o.add_argument("--seed", type=int, default=d.seed)
    o.add_argument("--style", default="plain", choices=PROMPT_STYLES)
    o.add_argument(
        "--objective",
        default=d.objective,
        choices=OBJECTIVES,
        help="bipo: preference against the unsteered model, fitted at strength 1 and scaled afterwards; "
        "reps: reference-free preference steering with the strength sampled inside the fit",
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
    o.add_argument(
        "--data",
        default=None,
        help="JSONL of replies to fit on instead of the dataset (e.g. from `teacher`): the dataset's fields, "
        "a reply of every level per scenario and sample",
    )
    o.add_argument("--out", default=None, help="default: the user cache (~/.cache/bloom-steer/offsets/...)")
    o.set_defaults(func=cmd_fit_offsets)

    rs = sub.add_parser(
        "fit-reps",
        help="RePS as its authors fit it: per level, the model's instruction-prompted (teacher) replies against "
        "its own plain-prompt replies; +factor toward the level, the null intervention away; AdamW, no L1",
        parents=[_model_parent()],
    )
    rd = RepsConfig()
    rs.add_argument("--teacher", required=True, help="teacher replies (JSONL from the teacher command)")
    rs.add_argument(
        "--own", default=None, help="the model's own replies (default: sampled, kept in OUT/own_replies.jsonl)"
    )
    rs.add_argument("--writers", nargs="+", default=None, help="only these writers' scenarios (e.g. A B C)")
    rs.add_argument("--site", default=rd.site, choices=SITES)
    rs.add_argument("--layers", default=layers_label(rd.layers))
    rs.add_argument("--positions", default=rd.positions, choices=("generated", "all"))
    rs.add_argument("--epochs", type=int, default=rd.epochs)
    rs.add_argument("--lr", type=float, default=rd.lr)
    rs.add_argument("--weight-decay", type=float, default=rd.weight_decay)
    rs.add_argument(
        "--factors",
        nargs="+",
        type=_fraction,
        default=None,
        help="factors drawn per example (default: where the site's text changes: "
        + "; ".join(f"{k} {' '.join(f'{v:g}' for v in vs)}" for k, vs in FACTORS.items())
        + ")",
    )
    rs.add_argument("--simpo-scaler", type=float, default=rd.simpo_scaler)
    rs.add_argument("--max-feedback-tokens", type=int, default=rd.max_feedback_tokens)
    rs.add_argument("--seed", type=int, default=rd.seed)
    rs.add_argument("--style", default="plain", choices=PROMPT_STYLES)
    rs.add_argument("--out", required=True, help="folder for the vectors (steer with --residual or --offsets)")
    rs.set_defaults(func=cmd_fit_reps)

    r = sub.add_parser(
        "prototypes",
        help="copy the trained SAEs of layers with level prototypes recomputed from some "
        "writers only (a cross-writer fold) or from each feedback's first tokens; "
        "steer with the folder through --saes",
        parents=[_model_parent()],
    )
    r.add_argument("--layers", default=BAND)
    r.add_argument(
        "--writers",
        nargs="+",
        default=None,
        help="writing batches (scenario id letters), e.g. A B C (default: all train scenarios)",
    )
    r.add_argument(
        "--first-tokens",
        type=int,
        default=None,
        metavar="K",
        help="prototypes from each feedback's first K tokens only (its opening names the task)",
    )
    r.add_argument("--out", required=True)
    r.add_argument("--style", default="plain", choices=PROMPT_STYLES)
    r.set_defaults(func=cmd_prototypes)

    h = sub.add_parser(
        "heads",
        help="rank heads by how much more feedback of each level reads that level's line "
        "of the rubric prompt (heads that steering can move)",
        parents=[_model_parent()],
    )
    h.add_argument("--layers", default=BAND)
    h.add_argument("--writers", nargs="+", default=None, help="only these writers' train feedbacks (e.g. A B C)")
    h.add_argument("--top", type=int, default=12)
    h.add_argument("--max-feedback-tokens", type=int, default=48)
    h.add_argument("--json", action="store_true")
    h.set_defaults(func=cmd_heads)

    a = sub.add_parser(
        "train-adapter",
        help="fit the feedback LoRA on the train split (the level is never shown "
        "unless --prompts includes instruction)",
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
        help="take the instruction examples from these writers' scenarios only (e.g. A B C), so the "
        "other writers' level labels stay unseen for a cross-writer validation; plain examples use "
        "the whole train split (they never show a level)",
    )
    a.add_argument("--epochs", type=int, default=ADAPTER_EPOCHS)
    a.add_argument("--rank", type=int, default=8)
    a.add_argument("--lr", type=float, default=1e-3)
    a.add_argument("--style", default="plain", choices=PROMPT_STYLES)
    a.add_argument("--model", default=DEFAULT_MODEL)
    a.add_argument("--device", default="auto")
    a.set_defaults(func=cmd_train_adapter)

    tc = sub.add_parser(
        "teacher",
        help="sample the model's own replies under the instruction prompt, every level of every train "
        "scenario, as data for fit-offsets --data",
        parents=[_model_parent()],
    )
    td = TeacherConfig()
    tc.add_argument("--writers", nargs="+", default=None, help="only these writers' train scenarios (e.g. A B C)")
    tc.add_argument("--per-level", type=int, default=td.per_level, help="sampled replies per scenario and level")
    tc.add_argument("--temperature", type=float, default=td.temperature)
    tc.add_argument("--max-new-tokens", type=int, default=td.max_new_tokens)
    tc.add_argument("--seed", type=int, default=td.seed)
    tc.add_argument(
        "--out",
        required=True,
        help="FILE.jsonl for every reply (judged); FILE.judged.jsonl gets the ones the judge reads at their level",
    )
    tc.set_defaults(func=cmd_teacher)

    t = sub.add_parser("train", help="train per-head SAEs + level prototypes for layers", parents=[_model_parent()])
    t.add_argument("--layers", default="all", help="all, 15, 8-21 or 3,9,15")
    t.add_argument("--out", default=None, help="default: the user cache (~/.cache/bloom-steer/saes/...)")
    sd = SAETrainConfig()
    t.add_argument("--architecture", default=sd.architecture, choices=ARCHITECTURES)
    t.add_argument("--expansion", type=int, default=sd.expansion, help="latents per head = expansion x head dim")
    t.add_argument("--k", type=int, default=sd.k, help="active latents (TopK)")
    t.add_argument("--l1", type=float, default=sd.l1_coeff, help="L1 weight (standard)")
    t.add_argument("--epochs", type=int, default=sd.epochs)
    t.add_argument("--style", default="plain", choices=PROMPT_STYLES)
    t.set_defaults(func=cmd_train)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (UserError, FileNotFoundError) as exc:  # the user can fix these: one line, status 2
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
