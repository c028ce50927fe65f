"""What the attention kernel changes in the views' replies: the Compare of the first test scenarios at every level, 64
greedy tokens, generated as the views generate (generation.VIEWS: each row's attention over its own positions) and
with SDPA over the padded cache instead (the prompt prefix cached both ways), then compared token for token.

    python -m experiments.views_check [SCENARIOS]      # default 4: 4 x 6 levels x 4 rows

Prints one JSON object per Compare whose replies differ ({"scenario", "level", "method", "first_difference"}, the
index of the first token that differs), then a summary: {"compares", "rows", "rows_differing"}.
"""

from __future__ import annotations

import json
import sys

from steer_core.bloom import LEVELS, load_dataset, scenarios
from steer_core.generation import generate_batch
from steer_core.model.loading import load_model
from steer_core.views.compare import CompareRequest


def first_difference(a: list[int], b: list[int]) -> int | None:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 4
    lm = load_model()
    compares = rows = differing = 0
    for s in scenarios(load_dataset(split="test"))[:count]:
        for level in LEVELS:
            reqs = CompareRequest(question=s.question, student_answer=s.student_answer, level=level).requests()
            ways = [
                generate_batch(lm, reqs, max_new_tokens=64, prefix_cache=True, own_positions=own)
                for own in (False, True)
            ]
            compares += 1
            for req, padded, own in zip(reqs, *ways):
                rows += 1
                at = first_difference(padded.token_ids, own.token_ids)
                if at is not None:
                    differing += 1
                    out = {"scenario": s.scenario_id, "level": level, "method": req.method, "first_difference": at}
                    print(json.dumps(out), flush=True)
    print(json.dumps({"compares": compares, "rows": rows, "rows_differing": differing}), flush=True)


if __name__ == "__main__":
    main()
