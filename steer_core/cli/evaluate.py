"""The experiments' commands: `eval` (methods x levels x layer sets over scenarios), `sweep` (each method over
strengths), `summarize` (the tables, matched-perplexity ones included) and `reproduce` (do the shipped files
give the recorded rows back?)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .. import methods
from ..bloom import LEVELS, normalize_level
from ..paths import ROOT
from ..steering.config import SteerConfig, prompt_choices
from ..steering.model_defaults import residual_layers
from .common import (
    VALIDATION_WRITERS,
    UsageError,
    add_scenario_options,
    add_writers,
    eval_scenarios,
    fraction,
    layer_spec,
    load,
    model_layers,
    model_options,
    parse_variant,
    steer_config,
    steer_files,
    steering_options,
)

DEFAULT_SWEEP = (0.5, 1.0, 1.5, 2.0)  # strengths a sweep runs unless told (1: each method's validated setting)


def _run_settings(args) -> dict:
    """The grid's reply length, prompt style and batch size, from the flags."""
    return {
        "max_new_tokens": args.max_new_tokens, "style": args.style, "max_batch": args.max_batch,
        "files": steer_files(args),
    }  # fmt: skip


def cmd_eval(args) -> int:
    from ..evaluation import Grid, run_eval

    levels = [normalize_level(lv) for lv in args.levels or LEVELS]
    items = eval_scenarios(args.scenarios, args.split, args.limit, args.writers)
    lm = load(args)
    layer_sets = [layer_spec(spec) for spec in args.layers] if args.layers else [model_layers(None, lm)]
    steer = steer_config(args, layer_sets[0])
    if steer.layer_heads is not None:  # layer.head pairs: their layers are the one layer set
        layer_sets = [steer.layers]
    if args.variants:
        from dataclasses import replace

        steer = [replace(steer, target=t, strength=a) for t, a in (parse_variant(v) for v in args.variants)]
    for layers in layer_sets:
        for layer in layers:
            lm.check_layer(layer)
    grid = Grid(methods=args.methods, levels=levels, layer_sets=layer_sets, steer=steer, **_run_settings(args))
    report = run_eval(lm, items, grid, Path(args.out))
    print(json.dumps(report))
    return 0


def cmd_sweep(args) -> int:
    """Each method over a list of strengths (prompt baselines once), resumable; then the matched table."""
    from dataclasses import replace

    from ..evaluation import Grid, run_eval
    from ..evaluation.frontier import MATCHED_RATIOS, build_frontier
    from ..evaluation.results import read_results
    from ..evaluation.tables import matched_table
    from ..steering.offset_files import load_offsets

    if any(not (s >= 0) for s in args.strengths):
        raise UsageError("--strengths must be numbers >= 0")
    levels = [normalize_level(lv) for lv in args.levels or LEVELS]
    writers = args.writers
    if writers is None and args.split == "train" and args.scenarios is None:
        writers = list(VALIDATION_WRITERS)
    items = eval_scenarios(args.scenarios, args.split, args.limit, writers)
    given = None if args.layers is None else layer_spec(args.layers)
    lm = load(args)
    base = steer_config(args, given or model_layers(None, lm))
    out = Path(args.out)
    fixed = ["none"] + [m for m in args.methods if m in methods.prompted()]
    if base.prompt != methods.PLAIN and base.prompt not in fixed:  # the prompt's own replies: its curves' strength 0
        fixed.append(base.prompt)
    run = _run_settings(args)
    run_eval(lm, items, Grid(methods=fixed, levels=levels, steer=base, **run), out)
    for method in (m for m in args.methods if m in methods.steered()):
        files = run["files"]
        cfg = base.for_method(method, residual_layers(lm), files)
        layers = given or cfg.layers
        if given is None and method in methods.at_residual() and files.residual is not None:
            layers = load_offsets(lm, files.residual, args.style, site="residual").layers  # where they were fitted
        for layer in layers:
            lm.check_layer(layer)
        steer = [replace(cfg, layers=tuple(layers), strength=float(s)) for s in sorted(set(args.strengths))]
        run_eval(lm, items, Grid(methods=[method], levels=levels, layer_sets=[tuple(layers)], steer=steer, **run), out)
    frontier = build_frontier(read_results(out / "results.csv"))
    print(matched_table(frontier, MATCHED_RATIOS))
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
    from ..evaluation.results import read_results, row_prompt

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
        if args.prompt is not None:
            rows = [r for r in rows if row_prompt(r) == args.prompt]
        if args.scenarios:
            rows = [r for r in rows if r["scenario_id"] in set(args.scenarios)]
        if args.limit is not None:
            rows = rows[: args.limit]
        if not rows:
            raise UsageError(f"{args.csv}: no rows match")
        groups = [(args.csv, rows, None)]
    lm = load(args)
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


def register(sub) -> None:
    ev = sub.add_parser(
        "eval",
        help="methods x levels x layers over scenarios: results.csv, summary.csv, report.html",
        parents=[steering_options(multi_layers=True), model_options()],
    )
    add_writers(ev, help="only scenarios of these writing batches (scenario id letters, e.g. D E F)")
    ev.add_argument("--methods", nargs="+", default=list(methods.eval_default()), choices=methods.names())
    ev.add_argument(
        "--variants",
        nargs="+",
        default=None,
        help="several steering targets with their strengths in one run, e.g. learned:1 learned:0.5 "
        "delta:1 softmax:10/3 (target:strength, 1 = the validated setting; replaces --target/--strength; "
        "query steering runs the delta/prototype ones)",
    )
    add_scenario_options(ev, split="test")
    ev.set_defaults(func=cmd_eval)

    sw = sub.add_parser(
        "sweep",
        help="each method over a list of strengths on a split (prompt baselines once; resumable): the "
        "strength curves behind summarize --matched",
        parents=[steering_options(multi_layers=False), model_options()],
    )
    sw.add_argument(
        "--methods",
        nargs="+",
        default=["sae", "residual", "query", "fewshot", "instruction"],
        choices=[m for m in methods.names() if m != "none"],
        help="steered methods run at every strength, prompt baselines once; the unsteered rows always run",
    )
    sw.add_argument(
        "--strengths",
        nargs="+",
        type=fraction,
        default=list(DEFAULT_SWEEP),
        help="strengths (1 = each method's validated setting; default "
        + " ".join(f"{v:g}" for v in DEFAULT_SWEEP)
        + ")",
    )
    add_writers(sw, help="only these writers' scenarios (default with --split train: D E F, the validation writers)")
    add_scenario_options(sw, split="train")
    sw.set_defaults(func=cmd_sweep, layers=None)  # each method's own layers unless --layers is given

    _register_summarize(sub)
    _register_reproduce(sub)


def _register_summarize(sub) -> None:
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


def _register_reproduce(sub) -> None:
    from ..generation import EVAL_TOKENS

    rp = sub.add_parser(
        "reproduce",
        help="regenerate rows of a results.csv with the shipped files and say which come back token for token "
        "(exit 1 if any differs)",
        parents=[model_options()],
    )
    rp.add_argument("csv", nargs="?", default=None, help="a results.csv written by eval")
    rp.add_argument(
        "--shipped", action="store_true", help="instead: the rows every shipped asset records that it reproduces"
    )
    rp.add_argument("--method", default=None, choices=methods.names(), help="only this method's rows")
    rp.add_argument("--setting", default=None, help="only rows whose setting label contains this text")
    rp.add_argument(
        "--prompt", default=None, choices=[v for _, v in prompt_choices()],
        help="only rows that ran under this prompt (steered on top of it, or the prompt's own replies)",
    )  # fmt: skip
    rp.add_argument("--scenarios", nargs="+", default=None, help="only these scenario ids")
    rp.add_argument("--limit", type=int, default=None, help="only the first N matching rows")
    rp.add_argument("--max-new-tokens", type=int, default=EVAL_TOKENS, help="as the rows were generated (64)")
    rp.add_argument("--json", action="store_true", help="one JSON object per row")
    rp.set_defaults(func=cmd_reproduce)
