"""The lean decoding step against transformers' own forward, in one process, turn by turn: bench's batches (the
unsteered reply, the Compare, the ladder, steering of one layer and of every layer), each decoded both ways.

    python -m experiments.lean_ab [--rounds 3]

Prints one JSON object per batch: {"batch", "rows", "transformers_ms", "lean_ms", "lean_python_ms", "same_logits"}:
the median milliseconds a decoding step over the rounds ((33 tokens - 1 token) / 32, prompts from the prefix
cache) through transformers' forward, the lean step (its layers in C++ where they built) and the lean step with its
layers in Python (a machine without a C++ compiler), and whether every step's logits were equal bit for bit
between transformers' forward and the lean step (24 steps, compared as they were made).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from steer_core import bench, generation
from steer_core.model import lean_step
from steer_core.model.hooks import query_edits
from steer_core.model.loading import load_model
from steer_core.steering.config import SteerConfig
from steer_core.views.compare import CompareRequest

LEAN = generation._decode_step


@torch.no_grad()
def transformers_step(lm, edits, inp, mask, position_ids, cache, cache_position):
    """generation._decode_step as it was before the lean step: the model's own forward."""
    with query_edits(lm, edits):
        out = lm.model(
            input_ids=inp, attention_mask=mask, position_ids=position_ids, past_key_values=cache, use_cache=True,
            logits_to_keep=1, cache_position=position_ids.new_tensor([cache_position]),
        )  # fmt: skip
    return out.logits[:, -1, :].float()


@torch.no_grad()
def python_layers_step(lm, edits, inp, mask, position_ids, cache, cache_position):
    """The lean step with its layers in Python."""
    with query_edits(lm, edits):
        return lean_step.decode_logits(lm.model, inp, mask, position_ids, cache, native_layers=None).float()


def step_ms(lm, reqs, step) -> float:
    generation._decode_step = step

    def run(n: int) -> float:
        t0 = time.perf_counter()
        generation.generate_batch(lm, reqs, max_new_tokens=n, ignore_stop=True, prefix_cache=True)
        return time.perf_counter() - t0

    run(5)
    return (run(33) - run(1)) / 32 * 1e3


def same_logits(lm, reqs) -> bool:
    made: dict[str, list[torch.Tensor]] = {}
    for name, step in (("transformers", transformers_step), ("lean", LEAN)):

        def recording(*args, step=step, name=name):
            out = step(*args)
            made.setdefault(name, []).append(out)
            return out

        generation._decode_step = recording
        generation.generate_batch(lm, reqs, max_new_tokens=25, ignore_stop=True, prefix_cache=True)
    return all(torch.equal(a, b) for a, b in zip(made["transformers"], made["lean"], strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    lm = load_model()
    compare = CompareRequest(question=bench.Q, student_answer=bench.A, level="analyze", max_new_tokens=33)
    batches = bench.bench_batches(compare, SteerConfig(), SteerConfig(layers=(lm.middle_layer,)))
    try:
        for name, reqs in batches.items():
            steps = {"transformers": transformers_step, "lean": LEAN, "lean_python": python_layers_step}
            times: dict[str, list[float]] = {way: [] for way in steps}
            for _ in range(args.rounds):
                for way, step in steps.items():
                    times[way].append(step_ms(lm, reqs, step))
            out = {"batch": name, "rows": len(reqs)}
            out |= {f"{k}_ms": round(statistics.median(v), 2) for k, v in times.items()}
            out["same_logits"] = same_logits(lm, reqs)
            print(json.dumps(out), flush=True)
    finally:
        generation._decode_step = LEAN


if __name__ == "__main__":
    main()
