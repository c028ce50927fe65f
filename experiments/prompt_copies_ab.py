"""What reading a shared prompt from one row saves the views' decoding: bench's Compare and ladder batches, each step
timed with the attention kernel told which rows hold copies of one prompt (attention_kernel.PromptCopies, as
generation sets it) and not told (each row reads its own copy), the two ways taking turns round by round, in one
process. The replies are the same bits either way (tests/test_attention_kernel.py).

    python -m experiments.prompt_copies_ab

Prints one JSON object per batch: {"batch", "apart_ms", "shared_ms"}, the median over 12 rounds of a decoding step,
(33 tokens - 1 token) / 32.
"""

from __future__ import annotations

import json
import statistics
import time

from steer_core import bench
from steer_core.generation import VIEWS, generate_batch
from steer_core.model import attention_kernel as ak
from steer_core.model.loading import load_model
from steer_core.steering.config import SteerConfig
from steer_core.views.compare import CompareRequest

ROUNDS = 12


def main() -> None:
    if ak.attention_kernel() is None:  # built and checked before PromptCopies.of is switched below
        raise SystemExit("the attention kernel is off here (no C compiler, or STEER_KERNEL=off)")
    lm = load_model()
    compare = CompareRequest(question=bench.Q, student_answer=bench.A, level="analyze", max_new_tokens=33)
    batches = bench.bench_batches(compare, SteerConfig(), SteerConfig(layers=(lm.middle_layer,)))
    told = ak.PromptCopies.of

    def step_ms(reqs) -> float:
        def run(n: int) -> float:
            t0 = time.perf_counter()
            generate_batch(lm, reqs, max_new_tokens=n, ignore_stop=True, **VIEWS)
            return time.perf_counter() - t0

        return (run(33) - run(1)) / 32 * 1e3

    times: dict[tuple[str, str], list[float]] = {}
    try:
        for round_ in range(ROUNDS + 1):  # the first round warms up
            for way in ("shared", "apart") if round_ % 2 else ("apart", "shared"):
                ak.PromptCopies.of = told if way == "shared" else staticmethod(lambda sources, width: None)
                for name in ("compare4", "ladder"):
                    ms = step_ms(batches[name])
                    if round_:
                        times.setdefault((name, way), []).append(ms)
    finally:
        ak.PromptCopies.of = told
    for name in ("compare4", "ladder"):
        out = {"batch": name} | {f"{w}_ms": round(statistics.median(times[(name, w)]), 2) for w in ("apart", "shared")}
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
