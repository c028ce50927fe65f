"""What making a descent to a point ready once per generation (steering.edits.PointDescent) saves in a decoding step:
one SAE-steered reply with the paper's prototype target and with delta, each with PointDescent and without it (every
call through steer_rows, as before; the shortcut that returns one group's queries whole stays in both), and an
unsteered reply, taking turns round by round so that the machine's pace hits all of them alike. The tokens of the
two ways must be the same.

    python -m experiments.descent_ab OUT.jsonl [ROUNDS]

Writes one JSON object per (batch, way): {"batch", "way", "step_ms", "rounds", "same_tokens"}: step_ms the median
over rounds of the median gap between streamed tokens (bench's question, 32 tokens, stop tokens ignored, the views'
decoding).
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

from steer_core import bench
from steer_core.generation import VIEWS, Request, stream_batch
from steer_core.model.loading import load_model
from steer_core.steering import edits
from steer_core.steering.config import SteerConfig

TOKENS = 32
MADE_ONCE = edits.PointDescent.of


def timed(lm, reqs) -> tuple[float, list]:
    stamps, outs = [], []
    for outs in stream_batch(lm, reqs, max_new_tokens=TOKENS, ignore_stop=True, **VIEWS):  # noqa: B007 - the last is kept
        stamps.append(time.perf_counter())
    return statistics.median(b - a for a, b in zip(stamps[1:], stamps[2:])) * 1e3, [o.token_ids for o in outs]


def main() -> None:
    if len(sys.argv) not in (2, 3):
        raise SystemExit(__doc__)
    out, rounds = Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) == 3 else 7
    lm = load_model()
    batches = {
        t: [Request(bench.Q, bench.A, "sae", "analyze", steer=SteerConfig(target=t))] for t in ("prototype", "delta")
    }
    batches["none"] = [Request(bench.Q, bench.A, "none")]
    ways = {"made once": MADE_ONCE, "steer_rows": lambda group: None}
    steps, tokens = {}, {}
    for round_ in range(rounds + 1):  # the first round warms up
        for way, of in ways.items():
            edits.PointDescent.of = of
            for name, reqs in batches.items():
                ms, ids = timed(lm, reqs)
                tokens.setdefault((name, way), ids)
                if round_:
                    steps.setdefault((name, way), []).append(ms)
    edits.PointDescent.of = MADE_ONCE
    with out.open("w") as f:
        for (name, way), times in steps.items():
            same = tokens[(name, way)] == tokens[(name, "steer_rows")]
            row = {"batch": name, "way": way, "step_ms": round(statistics.median(times), 2), "rounds": rounds}
            print(json.dumps(row | {"same_tokens": same}), file=f, flush=True)
    print(out.read_text(), end="")


if __name__ == "__main__":
    main()
