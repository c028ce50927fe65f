"""What the Compare batch and the ladder cost beside one reply, part by part: bench's batches and batches built to
differ from them by one thing each, their decoding step and their first token timed in turns, round by round, so
that the machine's pace hits all of them alike.

    python -m experiments.batch_costs

The batches (bench's question; every row's reply 24 tokens, stop tokens ignored; the views' settings):
  none            one unsteered reply (bench's baseline)
  none x4         four unsteered rows of its prompt: four rows of products
  compare - few   the Compare's unsteered, SAE and query rows: the steering of two rows
  compare again   the Compare's SAE and query rows (a Compare clicked again generates only those)
  none x3 + few   three unsteered rows and the Compare's few-shot row: its examples' keys and values
  compare4        the Compare's batch (bench's)
  none x7         seven unsteered rows: seven rows of products
  ladder          the ladder's batch (bench's): six rows steered toward each level

Prints one JSON object per batch: {"batch", "rows", "step_ms", "first_token_ms"}, each the median over rounds of the
median gap between streamed tokens (the prefill left out) and of the time to the first token.
"""

from __future__ import annotations

import json
import statistics
import time

from steer_core import bench
from steer_core.generation import VIEWS, stream_batch
from steer_core.model.loading import load_model
from steer_core.steering.config import SteerConfig
from steer_core.views.compare import CompareRequest

ROUNDS, TOKENS = 7, 24


def timed(lm, reqs) -> tuple[float, float]:
    """(median gap between streamed tokens after the first, time to the first token), in seconds."""
    t0 = time.perf_counter()
    stamps = [time.perf_counter() for _ in stream_batch(lm, reqs, max_new_tokens=TOKENS, ignore_stop=True, **VIEWS)]
    return statistics.median(b - a for a, b in zip(stamps[1:], stamps[2:])), stamps[0] - t0


def batches(lm) -> dict[str, list]:
    """The batches named above, by name (experiments.step_phases, compare_parts and sites_ab take theirs from here:
    a request does not hold its reply's length, so TOKENS here does not bound theirs)."""
    compare = CompareRequest(question=bench.Q, student_answer=bench.A, level="analyze", max_new_tokens=TOKENS)
    made = bench.bench_batches(compare, SteerConfig(), SteerConfig(layers=(lm.middle_layer,)))
    none, c4 = made["none"][0], made["compare4"]
    return {
        "none": [none],
        "none x4": [none] * 4,
        "compare - few": c4[:3],
        "compare again": c4[1:3],  # a Compare clicked again generates only its SAE and query rows
        "none x3 + few": [none] * 3 + c4[3:],
        "compare4": c4,
        "none x7": [none] * 7,
        "ladder": made["ladder"],
    }


def main() -> None:
    lm = load_model()
    runs = batches(lm)
    for reqs in runs.values():  # warm-up: the prefixes read, the kernels built
        timed(lm, reqs)
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
    for _ in range(ROUNDS):
        for name, reqs in runs.items():
            times[name].append(timed(lm, reqs))
    for name, t in times.items():
        step, first = (statistics.median(x[i] for x in t) for i in (0, 1))
        out = {"batch": name, "rows": len(runs[name]), "step_ms": round(step * 1e3, 2)}
        print(json.dumps(out | {"first_token_ms": round(first * 1e3, 1)}), flush=True)


if __name__ == "__main__":
    main()
