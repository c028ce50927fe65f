"""Print the per-method summary (mean over levels) of a results CSV as a Markdown table.

    python scripts/summarize_results.py results/issue3/val_delta_sweep.csv
    python scripts/summarize_results.py results/issue3/test_prompt_only.csv --rejudge

The CSVs hold each generation with the judge's verdict at the time; --rejudge re-scores the
texts with the shipped judge instead.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from steer_core.evaluation import add_judgements, read_csv, summarize  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("csv")
    ap.add_argument("--rejudge", action="store_true", help="re-score with the shipped judge")
    args = ap.parse_args()
    rows = read_csv(Path(args.csv))
    if args.rejudge:
        add_judgements(rows)
    print("| method | layers / setting | accuracy | mean judged level | perplexity | words |")
    print("|---|---|---|---|---|---|")
    overall = [s for s in summarize(rows) if s["level"] == "ALL"]
    for s in sorted(overall, key=lambda s: (s["method"], -s["accuracy"])):
        print(f"| {s['method']} | {s['layers']} | {s['accuracy']:.3f} | {s['mean_level_index']:.2f} "
              f"| {s['ppl']:.2f} | {s['words']:.1f} |")


if __name__ == "__main__":
    main()
