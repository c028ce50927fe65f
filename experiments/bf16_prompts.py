"""What reading the prompts with bfloat16 products would buy, and what it would change. This CPU has AMX, whose
bfloat16 products of a prompt's rows ran about 4x MKL's float32 ones on the MLP's weights. In the bf16 mode every
prompt forward (the prompts' and the prefix cache's reads) runs through a bfloat16 copy of the model, and its keys
and values are widened to float32 for decoding, which stays as shipped. Nothing of the app changes; this only
measures.

    python -m experiments.bf16_prompts OUT.jsonl [ROUNDS]

Writes one JSON object a line:
- "decode": bench's batches (one unsteered reply, the Compare, the ladder; 64 tokens, stop tokens ignored) through
  the app's decoding (generation.VIEWS), float32 and bfloat16 prompts taking turns round by round; each batch's
  ratio to one reply in the same round and mode, as bench computes it, and one reply's first token;
- "replies": the Compare of every test scenario (18), each toward one level in turn (three per level), in both
  modes, 64 tokens with stop tokens honoured: how many replies are the same token for token, how many first tokens
  agree on average, how often the judge reads the same level in both, and how many SAE-steered replies it reads at
  their target level in each mode.
"""

from __future__ import annotations

import contextlib
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from transformers import DynamicCache

from experiments.bf16_weights import TOKENS, compare_replies, decode_row
from steer_core.bench import A, Q, bench_batches
from steer_core.generation import VIEWS, generate_batch, stream_batch
from steer_core.model.loading import load_model
from steer_core.prefix_cache import PREFIXES
from steer_core.steering.config import SteerConfig
from steer_core.views.compare import CompareRequest


def _cast(cache, dtype) -> DynamicCache:
    """A DynamicCache holding `cache`'s keys and values in `dtype`."""
    out = DynamicCache()
    if cache is not None:
        for n, layer in enumerate(cache.layers):
            if getattr(layer, "keys", None) is not None and layer.keys.numel():
                out.update(layer.keys.to(dtype), layer.values.to(dtype), n)
    return out


@contextlib.contextmanager
def bf16_prompts(lm, half):
    """Within: lm.model's forwards (the prompts' reads: decoding takes the lean step, which does not call it) run
    through `half`, a bfloat16 copy, over a bfloat16 copy of the cache given; the cache returned in float32."""

    def forward(*args, past_key_values=None, **kw):
        out = half(*args, past_key_values=_cast(past_key_values, torch.bfloat16), **kw)
        out.past_key_values = _cast(out.past_key_values, torch.float32)
        out.logits = out.logits.float()
        return out

    PREFIXES.forget()  # the prefix cache read in this mode
    lm.model.forward = forward
    try:
        yield
    finally:
        del lm.model.forward
        PREFIXES.forget()


def first_token(lm, reqs) -> float:
    t0 = time.perf_counter()
    for _ in stream_batch(lm, reqs, max_new_tokens=1, ignore_stop=True, **VIEWS):
        return time.perf_counter() - t0
    raise AssertionError("no token")


def time_decoding(lm, half, rounds: int) -> list[dict]:
    compare = CompareRequest(question=Q, student_answer=A, level="analyze", max_new_tokens=TOKENS)
    batches = bench_batches(compare, SteerConfig(), SteerConfig(layers=(lm.middle_layer,)))
    names = ("none", "compare4", "ladder")
    modes = {"fp32": contextlib.nullcontext, "bf16": lambda: bf16_prompts(lm, half)}
    times = {(mode, n): [] for mode in modes for n in (*names, "first")}
    for r in range(rounds + 1):
        for mode, within in modes.items() if r % 2 else reversed(modes.items()):
            with within():
                generate_batch(lm, batches["compare4"], max_new_tokens=1, **VIEWS)  # the prefixes read
                for n in names:
                    t0 = time.perf_counter()
                    generate_batch(lm, batches[n], max_new_tokens=TOKENS, ignore_stop=True, **VIEWS)
                    if r:
                        times[mode, n].append(time.perf_counter() - t0)
                if r:
                    times[mode, "first"].append(first_token(lm, batches["none"]))
    first = {mode: round(statistics.median(times[mode, "first"]) * 1e3, 1) for mode in modes}
    return [decode_row(mode, times, names, first_token_ms=first[mode]) for mode in modes]


def main() -> None:
    if len(sys.argv) not in (2, 3):
        raise SystemExit(__doc__)
    rounds = int(sys.argv[2]) if len(sys.argv) == 3 else 5
    lm = load_model()
    half = type(lm.model)(copy.deepcopy(lm.model.config))  # a fresh module: lm.model holds the kernels' handles
    half.load_state_dict(lm.model.state_dict())
    half = half.to(torch.bfloat16).eval()
    lines = time_decoding(lm, half, rounds)
    lines.append(compare_replies(lm, lambda: bf16_prompts(lm, half)))
    Path(sys.argv[1]).write_text("".join(json.dumps(x) + "\n" for x in lines))


if __name__ == "__main__":
    main()
