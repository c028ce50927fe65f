"""Where a decoding step's milliseconds go, for bench's unsteered reply, Compare batch and ladder: cProfile over a
64-token greedy run minus a 1-token run (the prefill cancels), divided by the 63 steps between, split into the
Linear products (`small_batch._linear`, every Linear of a CPU model), attention (transformers' SDPA call) and
everything else (norms, rotary, the KV cache, hooks, Python). cProfile adds its own cost to the Python-heavy
part, so read the split, not the total, against bench's `decode_step_ms`.

    python -m experiments.decode_profile

Prints one JSON object per batch: {"batch", "step_ms", "linear_ms", "attention_ms", "other_ms"}. Runs on whatever
checkout it is started from (an older one without the prompt-prefix cache reads its prompts whole).
"""

from __future__ import annotations

import cProfile
import inspect
import json
import pstats
import time

from steer_core import bench
from steer_core.generation import generate_batch, stream_batch
from steer_core.model.loading import load_model
from steer_core.steering.config import SteerConfig
from steer_core.views.compare import CompareRequest

STEPS = 64


def _cumulative(stats: dict, function: str, file_part: str) -> float:
    return sum(v[3] for k, v in stats.items() if k[2] == function and file_part in k[0])


def profile(lm, reqs, kw: dict) -> dict:
    def run(n: int) -> dict:
        pr = cProfile.Profile()
        pr.enable()
        t0 = time.perf_counter()
        generate_batch(lm, reqs, max_new_tokens=n, ignore_stop=True, **kw)
        wall = time.perf_counter() - t0
        pr.disable()
        st = pstats.Stats(pr).stats
        return {
            "step_ms": wall,
            "linear_ms": _cumulative(st, "_linear", "small_batch"),
            "attention_ms": _cumulative(st, "sdpa_attention_forward", "sdpa_attention"),
        }

    run(STEPS)  # warm: caches, the prompt prefixes
    one, full = run(1), run(STEPS)
    per = {k: (full[k] - one[k]) / (STEPS - 1) * 1e3 for k in full}
    per["other_ms"] = per["step_ms"] - per["linear_ms"] - per["attention_ms"]
    return {k: round(v, 1) for k, v in per.items()}


def main() -> None:
    lm = load_model()
    compare = CompareRequest(question=bench.Q, student_answer=bench.A, level="analyze", max_new_tokens=STEPS)
    batches = bench.bench_batches(compare, SteerConfig(), SteerConfig(layers=(lm.middle_layer,)))
    kw = {"prefix_cache": True} if "prefix_cache" in inspect.signature(stream_batch).parameters else {}
    for name in ("none", "compare4", "ladder"):
        print(json.dumps({"batch": name, **profile(lm, batches[name], kw)}), flush=True)


if __name__ == "__main__":
    main()
