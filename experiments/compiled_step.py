"""Whether a compiled decoding step would pay for itself: transformers' own decoding step over a static cache, eager
and under `torch.compile` (inductor, no graph breaks, static shapes: the usual static-cache recipe), its Linear
modules as transformers has them (MKL's products: the few-row kernel is a C call, which the compiler cannot trace),
against the step the views run (`stream_batch` with `VIEWS`: the few-row kernel and the C++ layers), one unsteered
row of bench's question. Says what compiling costs (the first compiled call, which is in every cold start of a
Space without a persistent compile cache) and what a step costs each way.

    python -m experiments.compiled_step

Prints one JSON object: {"compile_s", "compiled_step_ms", "eager_step_ms", "views_step_ms", "same_tokens"} (the
medians of 32 steps; same_tokens: whether the compiled step's greedy tokens equal the eager one's over those steps).
"""

from __future__ import annotations

import contextlib
import json
import statistics
import time

import torch

from steer_core import bench
from steer_core.generation import VIEWS, Request, stream_batch
from steer_core.model.loading import load_model
from steer_core.prompts import render

STEPS = 32


def decode(step, model, prompt: list[int]) -> tuple[list[float], list[int], float]:
    """Greedy decoding of STEPS tokens with `step(ids, position, cache)` over a fresh static cache: (each step's
    seconds, the tokens, the first step's seconds)."""
    from transformers import StaticCache

    cache = StaticCache(config=model.config, max_cache_len=len(prompt) + STEPS + 1)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt]), past_key_values=cache, use_cache=True).logits[:, -1]
    token, times, tokens = logits.argmax(-1, keepdim=True), [], []
    for n in range(STEPS):
        position = torch.tensor([len(prompt) + n])
        t0 = time.perf_counter()
        with torch.no_grad():
            logits = step(token, position, cache)
        times.append(time.perf_counter() - t0)
        token = logits[:, -1].argmax(-1, keepdim=True)
        tokens.append(int(token))
    return times, tokens, times[0]


@contextlib.contextmanager
def plain_linears(model):
    """The model's Linear modules with their class's forward, not the few-row kernel's routing (small_batch)."""
    routed = {
        m: m.__dict__.pop("forward")
        for m in model.modules()
        if isinstance(m, torch.nn.Linear) and "forward" in m.__dict__
    }
    try:
        yield
    finally:
        for m, forward in routed.items():
            m.forward = forward


def main() -> None:
    lm = load_model()
    model = lm.model
    req = Request(bench.Q, bench.A, "none")
    prompt, _ = render(lm.tokenizer, req.messages())

    def eager(ids, position, cache):
        return model(input_ids=ids, cache_position=position, past_key_values=cache, use_cache=True).logits

    compiled_forward = torch.compile(model.forward, fullgraph=True, dynamic=False)

    def compiled(ids, position, cache):
        return compiled_forward(input_ids=ids, cache_position=position, past_key_values=cache, use_cache=True).logits

    with plain_linears(model):
        eager_times, eager_tokens, _ = decode(eager, model, prompt)
        compiled_times, compiled_tokens, first = decode(compiled, model, prompt)
        compiled_times, compiled_tokens, _ = decode(compiled, model, prompt)  # warm: the graph is built
    stamps = [time.perf_counter() for _ in stream_batch(lm, [req], max_new_tokens=STEPS, ignore_stop=True, **VIEWS)]
    views = [b - a for a, b in zip(stamps[1:], stamps[2:])]
    out = {
        "compile_s": round(first, 1),
        "compiled_step_ms": round(statistics.median(compiled_times[1:]) * 1e3, 2),
        "eager_step_ms": round(statistics.median(eager_times[1:]) * 1e3, 2),
        "views_step_ms": round(statistics.median(views) * 1e3, 2),
        "same_tokens": compiled_tokens == eager_tokens,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
