"""Print the datasheet's counts: rows per level and split, school levels, feedback length, and the
share of each level's rows without its textbook verb.

    python -m experiments.dataset_stats
"""

import collections
import re

from steer_core.bloom import LEVELS, TEXTBOOK_VERBS, load_dataset, scenarios

rows = load_dataset()
counts = collections.Counter((r.level, r.split) for r in rows)
print(f"{len(rows)} rows, {len(scenarios(rows))} scenarios, {len({r.subject for r in rows})} subjects")
print("| level | train | test | all |\n|---|---|---|---|")
for lv in LEVELS:
    print(f"| {lv} | {counts[lv, 'train']} | {counts[lv, 'test']} | {counts[lv, 'train'] + counts[lv, 'test']} |")
print("rows by school level:", dict(collections.Counter(r.school_level for r in rows)))
words = [len(r.feedback.split()) for r in rows]
print(f"feedback words: {min(words)} to {max(words)}, mean {sum(words) / len(words):.0f}")
for lv, pattern in TEXTBOOK_VERBS.items():
    level_rows = [r for r in rows if r.level == lv]
    free = sum(not re.search(pattern, r.feedback, re.I) for r in level_rows)
    print(f"{lv}: {free}/{len(level_rows)} ({free / len(level_rows):.0%}) without the textbook verb")
