"""`judge` (the level of each feedback line) and `fit-judge` (choose and refit the judge by cross-writer CV)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..bloom import DEFAULT_DATASET, load_dataset, normalize_level
from .common import UsageError, read_jsonl_file


def cmd_judge(args) -> int:
    from ..judge.classifier import default_judge, scores

    items = read_jsonl_file(args.file)
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


def register(sub) -> None:
    judge = sub.add_parser("judge", help="classify feedback lines of a JSONL file into Bloom levels")
    judge.add_argument("file", help="JSONL with 'feedback' (and optionally 'id', 'level') on each line")
    judge.add_argument("--summary", action="store_true", help="print accuracy, macro_f1 and n against 'level'")
    judge.add_argument("--split", choices=("train", "test"), help="only lines whose 'split' field is this")
    judge.set_defaults(func=cmd_judge)

    fit = sub.add_parser("fit-judge", help="compare judge approaches by cross-writer CV and refit the best")
    fit.add_argument("--data", default=str(DEFAULT_DATASET))
    fit.add_argument("--out", default=None, help="directory for the judge weights (default assets/judge)")
    fit.set_defaults(func=cmd_fit_judge)
