"""Attention over each row's own positions (generation.VIEWS' own_positions) against SDPA over the whole padded cache,
in one process, the two ways taking turns round by round: bench's unsteered reply, Compare batch and ladder, 64
tokens each (stop tokens ignored), the prompt prefix cached both ways. Also says whether each batch's replies are
the same tokens both ways.

    python -m experiments.own_positions_ab

Prints one JSON object per batch: {"batch", "padded_s", "own_positions_s", "same_tokens"} (the median over rounds of a
whole generation, prefill included).
"""

from __future__ import annotations

import json
import statistics
import time

from steer_core import bench
from steer_core.generation import generate_batch
from steer_core.model.loading import load_model
from steer_core.steering.config import SteerConfig
from steer_core.views.compare import CompareRequest

ROUNDS = 5
TOKENS = 64


def main() -> None:
    lm = load_model()
    compare = CompareRequest(question=bench.Q, student_answer=bench.A, level="analyze", max_new_tokens=TOKENS)
    batches = bench.bench_batches(compare, SteerConfig(), SteerConfig(layers=(lm.middle_layer,)))
    for name in ("none", "compare4", "ladder"):
        reqs, times, tokens = batches[name], {False: [], True: []}, {}
        for round_ in range(ROUNDS + 1):  # the first round warms up
            for own in (False, True):
                t0 = time.perf_counter()
                outs = generate_batch(
                    lm, reqs, max_new_tokens=TOKENS, ignore_stop=True, prefix_cache=True, own_positions=own
                )
                if round_:
                    times[own].append(time.perf_counter() - t0)
                tokens[own] = [o.token_ids for o in outs]
        out = {"batch": name, "padded_s": round(statistics.median(times[False]), 3)}
        out["own_positions_s"] = round(statistics.median(times[True]), 3)
        out["same_tokens"] = tokens[False] == tokens[True]
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
