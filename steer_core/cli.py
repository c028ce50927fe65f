"""`python -m steer_core <command>`: the stable command-line contract of DESIGN.md.

Errors the user can fix (a missing file, a malformed line, a bad option) print one line on stderr
and exit with status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .bloom import DEFAULT_DATASET, LEVELS, DatasetError, load_dataset, normalize_level


class UsageError(Exception):
    """A problem with the user's input, reported as one line and exit status 2."""


def _read_jsonl(path: str) -> list[tuple[int, dict]]:
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"no such file: {path}")
    out = []
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not UTF-8 text") from None
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{path} line {lineno}: invalid JSON ({exc.msg})") from None
        if not isinstance(obj, dict):
            raise UsageError(f"{path} line {lineno}: expected a JSON object")
        out.append((lineno, obj))
    if not out:
        raise UsageError(f"{path}: no JSON lines")
    return out


def cmd_judge(args) -> int:
    from .judge import default_judge, scores

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
    from .judge import JUDGE_DIR
    from .judge_fitting import compare_and_fit

    rows = load_dataset(args.data)
    train = [r for r in rows if r.split == "train"]
    test = [r for r in rows if r.split == "test"]
    judge, report = compare_and_fit(train, test)
    out = Path(args.out or JUDGE_DIR)
    judge.save(out, metrics={k: v for k, v in report.items() if k != "candidates"})
    print(json.dumps({k: v for k, v in report.items() if k != "candidates"}, indent=1))
    print(f"saved the {report['chosen']} judge to {out}", file=sys.stderr)
    return 0


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
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (UsageError, DatasetError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
