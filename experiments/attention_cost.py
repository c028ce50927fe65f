"""What the attention of a decoding step costs on its own: SDPA as the lean step calls it (the query heads that share
a key head packed as its positions, under a float mask), 30 layers, for the cache shapes of bench's batches, and the
same rows each over its own positions only (no padding, no unwritten positions: what an attention that reads each
row's own positions would do through SDPA). Random tensors of the default model's shapes (3 key heads of 64, 9 query
heads); the middle of a 64-token reply (32 positions written).

    python -m experiments.attention_cost

Prints one JSON object per batch: {"batch", "rows", "cache_len", "padded_ms", "own_positions_ms"}, ms a step (30
layers), the median of 21 runs.
"""

from __future__ import annotations

import json
import statistics
import time

import torch
from torch.nn import functional as F

from steer_core.model.attention_kernel import attention_kernel

LAYERS, KV_HEADS, GROUPS, DIM, REPLY = 30, 3, 3, 64, 64
# (batch, each row's prompt length): bench's question under the plain prompt is about 150 tokens, under the
# few-shot prompt about 590 (its three worked examples)
BATCHES = {"none": [150], "compare4": [150, 150, 150, 590], "ladder": [150] * 7}


def ms_a_step(fn) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(21):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def batch_ms(prompts: list[int], g: torch.Generator, kernel) -> dict:
    """ms a step (SDPA padded, SDPA on each row's own positions, the attention kernel) for rows of these prompt
    lengths, and the kernel's largest difference from SDPA."""
    rows, width = len(prompts), max(prompts)
    cache_len = width + REPLY
    q = torch.randn(rows, KV_HEADS, GROUPS, DIM, generator=g)
    shape = (rows, KV_HEADS, cache_len, DIM)
    kv = [(torch.randn(shape, generator=g), torch.randn(shape, generator=g)) for _ in range(LAYERS)]
    written = width + REPLY // 2
    mask = torch.full((rows, 1, 1, cache_len), float("-inf"))
    for r, n in enumerate(prompts):
        mask[r, ..., width - n : written] = 0.0  # left padding before, unwritten positions after

    def padded():
        for k, v in kv:
            F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=DIM**-0.5)

    def own_positions():
        for k, v in kv:
            for r, n in enumerate(prompts):
                own = slice(width - n, written)
                F.scaled_dot_product_attention(
                    q[r : r + 1], k[r : r + 1, :, own], v[r : r + 1, :, own], scale=DIM**-0.5
                )

    def kernel_step():
        for k, v in kv:
            kernel(q, k, v, mask, DIM**-0.5)

    k, v = kv[0]
    out = kernel(q, k, v, mask, DIM**-0.5)
    diff = float((out - F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=DIM**-0.5)).abs().max())
    return {
        "cache_len": cache_len,
        "padded_ms": round(ms_a_step(padded), 2),
        "own_positions_ms": round(ms_a_step(own_positions), 2),
        "own_kernel_ms": round(ms_a_step(kernel_step), 2),
        "own_kernel_max_diff": diff,
    }


def main() -> None:
    g, kernel = torch.Generator().manual_seed(0), attention_kernel()
    if kernel is None:
        raise SystemExit("the attention kernel is off here (no C compiler, or STEER_KERNEL=off)")
    for name, prompts in BATCHES.items():
        print(json.dumps({"batch": name, "rows": len(prompts)} | batch_ms(prompts, g, kernel)), flush=True)


if __name__ == "__main__":
    main()
