"""Print the per-method summary (mean over levels) of results CSVs as a Markdown table.

    python scripts/summarize_results.py results/issue3/val_delta_sweep.csv
    python scripts/summarize_results.py runs/test_main/results.csv --per-level sae
    python scripts/summarize_results.py results/issue3/test_prompt_only.csv --rejudge

The CSVs hold each generation with the judge's verdict at the time; --rejudge re-scores the
texts with the shipped judge instead. --similarity adds the MiniLM cosine to the unsteered text
(as `eval` writes in summary.csv). Several CSVs are pooled (e.g. one per model or prompt style).
"""

import argparse
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from steer_core.evaluation import add_judgements, read_csv, summarize, unsteered_similarity  # noqa: E402


def fmt(v, spec):
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("csv", nargs="+")
    ap.add_argument("--rejudge", action="store_true", help="re-score with the shipped judge")
    ap.add_argument("--similarity", action="store_true", help="add the MiniLM similarity to unsteered")
    ap.add_argument("--per-level", metavar="METHOD", help="per-level accuracy rows of this method instead")
    args = ap.parse_args()
    rows = [r for path in args.csv for r in read_csv(Path(path)) if r.get("probs")]
    if args.rejudge:
        add_judgements(rows)
    summary = summarize(rows, similarity=unsteered_similarity(rows) if args.similarity else None)
    if args.per_level:
        print("| model | style | layers / setting | level | accuracy | mean judged level |")
        print("|---|---|---|---|---|---|")
        for s in summary:
            if s["method"] == args.per_level and s["level"] != "ALL":
                print(f"| {s['model']} | {s['style']} | {s['layers']} | {s['level']} | {s['accuracy']:.3f} "
                      f"| {s['mean_level_index']:.2f} |")
        return
    print("| model | style | method | layers / setting | accuracy | judged level follows target (r) "
          "| mean judged level | perplexity (x unsteered) | similarity | words |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    overall = [s for s in summary if s["level"] == "ALL"]
    for s in sorted(overall, key=lambda s: (s["model"], s["style"], s["method"], -s["accuracy"])):
        print(f"| {s['model']} | {s['style']} | {s['method']} | {s['layers']} | {s['accuracy']:.3f} "
              f"| {fmt(s['level_corr'], '.2f')} | {s['mean_level_index']:.2f} "
              f"| {s['ppl']:.2f} ({fmt(s['ppl_ratio'], '.2f')}x) | {fmt(s['similarity'], '.2f')} | {s['words']:.1f} |")


if __name__ == "__main__":
    main()
