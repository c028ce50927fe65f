"""What decoding with the weights rounded to bfloat16 would buy, and what it would change: the few-row kernel built
with -DWEIGHT_BF16 (rows_linear.c: the packed weight in bfloat16, half the bytes, widened exactly to float32 before
the same arithmetic) against the shipped float32 kernel. Nothing of the app changes; this only measures.

    python -m experiments.bf16_weights OUT.jsonl [ROUNDS]

Writes one JSON object a line:
- "exact": the bfloat16 kernel gives, bit for bit, the float32 kernel's products with the bfloat16-rounded weights
  (so it is the float32 kernel on other weights, nothing else), on every weight of the default model at 1 to 11 rows;
- "products": all the model's weights' products at 1, 4 and 7 rows, the two kernels taking turns round by round;
- "decode": bench's batches (one unsteered reply, the Compare, the ladder; 64 tokens, stop tokens ignored) through
  the app's decoding (generation.VIEWS), float32 and bfloat16 taking turns; each batch's ratio to one reply in the
  same round and mode, as bench computes it. Products of 12 rows or more, as in reading a prompt, keep MKL's
  float32 in both modes;
- "replies": the Compare of every test scenario (18), each toward one level in turn (three per level), in both
  modes, 64 tokens with stop tokens honoured: how many replies are the same token for token, how many first tokens
  agree on average, how often the judge reads the same level in both, and how many SAE-steered replies it reads at
  their target level in each mode.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from steer_core import native
from steer_core.bench import A, Q, bench_batches
from steer_core.bloom import LEVELS, load_dataset, scenarios
from steer_core.generation import VIEWS, generate_batch
from steer_core.model import lean_step, small_batch
from steer_core.model.loading import load_model
from steer_core.model.rows_kernel import MAX_ROWS, SOURCE, RowsKernel, pack, rows_kernel
from steer_core.steering.config import SteerConfig
from steer_core.views.compare import CompareRequest

TOKENS = 64


def bf16_kernel() -> RowsKernel:
    return RowsKernel(native.build(native.compiler(), SOURCE, native.FLAGS + ("-DWEIGHT_BF16",)))


def bf16_pack(w: torch.Tensor) -> torch.Tensor:
    """The kernel's packed layout of w, rounded to bfloat16 (packing only moves values and pads with zeros)."""
    return pack(w).to(torch.bfloat16)


def check_exact(lm, fp32: RowsKernel, bf16: RowsKernel) -> dict:
    g = torch.Generator().manual_seed(0)
    weights = {m.weight.data_ptr(): m for m in lm.model.modules() if isinstance(m, torch.nn.Linear)}
    for m in weights.values():
        w, b = m.weight.detach(), None if m.bias is None else m.bias.detach()
        rounded = w.to(torch.bfloat16).float()
        x = torch.randn(MAX_ROWS, w.shape[1], generator=g)
        for rows in range(1, MAX_ROWS + 1):
            if not torch.equal(bf16(x[:rows], w, b, bf16_pack(w)), fp32(x[:rows], rounded, b, pack(rounded))):
                raise AssertionError(f"bfloat16 kernel differs on a {tuple(w.shape)} weight at {rows} rows")
    return {"part": "exact", "weights": len(weights), "rows": f"1-{MAX_ROWS}", "same_bits": True}


def time_products(lm, fp32: RowsKernel, bf16: RowsKernel, rounds: int) -> list[dict]:
    seen = {}
    for m in lm.model.modules():
        if isinstance(m, torch.nn.Linear):
            seen.setdefault(m.weight.data_ptr(), m.weight.detach())
    weights = [(w, pack(w), bf16_pack(w)) for w in seen.values()]
    g = torch.Generator().manual_seed(0)
    xs = {k: torch.randn(MAX_ROWS, k, generator=g) for k in {w.shape[1] for w, _, _ in weights}}
    out = []
    for rows in (1, 4, 7):
        times = {"fp32": [], "bf16": []}
        for r in range(rounds + 1):  # the first round warms up
            for name, kernel, which in (("fp32", fp32, 1), ("bf16", bf16, 2)):
                t0 = time.perf_counter()
                for parts in weights:
                    kernel(xs[parts[0].shape[1]][:rows], parts[0], None, parts[which])
                if r:
                    times[name].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        out.append({"part": "products", "rows": rows, **{f"{k}_ms": round(v, 2) for k, v in med.items()}})
        print(json.dumps(out[-1]), flush=True)
    return out


@contextlib.contextmanager
def bf16_decoding(lm, bf16: RowsKernel):
    """Within: the model's few-row products (the C++ layers' and Python's) read bfloat16 packed weights."""
    modules = [m for m in lm.model.modules() if getattr(m, "_rows_kernel", None) is not None]

    def packed(module, w):  # made once a module, kept on it beside its float32 copy
        if getattr(module, "_bf16_packed", None) is None:
            module._bf16_packed = bf16_pack(w)
        return module._bf16_packed

    saved = (small_batch._packed, lean_step._packed, lean_step.rows_kernel)
    small_batch._packed = lean_step._packed = packed
    lean_step.rows_kernel = lambda: bf16
    for m in modules:
        m._rows_kernel = bf16
    try:
        yield
    finally:
        small_batch._packed, lean_step._packed, lean_step.rows_kernel = saved
        for m in modules:
            m._rows_kernel = rows_kernel()


def time_decoding(lm, bf16: RowsKernel, rounds: int) -> list[dict]:
    compare = CompareRequest(question=Q, student_answer=A, level="analyze", max_new_tokens=TOKENS)
    batches = bench_batches(compare, SteerConfig(), SteerConfig(layers=(lm.middle_layer,)))
    names = ("none", "compare4", "ladder")
    modes = {"fp32": contextlib.nullcontext, "bf16": lambda: bf16_decoding(lm, bf16)}
    times = {(mode, n): [] for mode in modes for n in names}
    for r in range(rounds + 1):
        for mode, within in modes.items():
            with within():
                for n in names:
                    t0 = time.perf_counter()
                    generate_batch(lm, batches[n], max_new_tokens=TOKENS, ignore_stop=True, **VIEWS)
                    if r:
                        times[mode, n].append(time.perf_counter() - t0)
    return [decode_row(mode, times, names) for mode in modes]


def decode_row(mode: str, times: dict, names: tuple[str, ...], **extra) -> dict:
    """One mode's "decode" line, printed: one reply's pace, each batch's median ratio to one reply in the same
    round (and the lowest and highest round), each batch's median seconds, then `extra`. times: (mode, batch) ->
    seconds."""
    row = {"part": "decode", "mode": mode, "unsteered_tok_s": round(TOKENS / statistics.median(times[mode, "none"]), 2)}
    for n in names[1:]:
        ratios = [t / b for t, b in zip(times[mode, n], times[mode, "none"])]
        row[f"{n}_ratio"] = round(statistics.median(ratios), 3)
        row[f"{n}_ratio_range"] = [round(min(ratios), 3), round(max(ratios), 3)]
    row |= {f"{n}_s": round(statistics.median(times[mode, n]), 3) for n in names} | extra
    print(json.dumps(row), flush=True)
    return row


def _first_difference(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def compare_replies(lm, bf16_mode) -> dict:
    """The Compare of every test scenario in float32 and under `bf16_mode()` (a context): how the replies and the
    judge's verdicts differ."""
    from steer_core.judge.classifier import default_judge

    chosen = scenarios(load_dataset(split="test"))
    compares = [
        CompareRequest(question=s.question, student_answer=s.student_answer, level=LEVELS[i % 6], max_new_tokens=TOKENS)
        for i, s in enumerate(chosen)
    ]
    rows = [(c, r) for c in compares for r in c.requests()]  # (its Compare, the row's request)
    replies = {}
    for mode, within in (("fp32", contextlib.nullcontext), ("bf16", bf16_mode)):
        with within():
            replies[mode] = [
                o for c in compares for o in generate_batch(lm, c.requests(), max_new_tokens=TOKENS, **VIEWS)
            ]
    judge = default_judge()
    verdicts = {mode: judge.judge([o.text for o in outs]) for mode, outs in replies.items()}
    pairs = list(zip(replies["fp32"], replies["bf16"]))
    sae = [i for i, (_, r) in enumerate(rows) if r.method == "sae"]
    out = {
        "part": "replies",
        "rows": len(rows),
        "same_tokens": sum(a.token_ids == b.token_ids for a, b in pairs),
        "same_tokens_by_method": {
            m: sum(a.token_ids == b.token_ids for (a, b), (_, r) in zip(pairs, rows) if r.method == m)
            for m in dict.fromkeys(r.method for _, r in rows)
        },
        "mean_tokens_before_first_difference": round(
            statistics.mean(_first_difference(a.token_ids, b.token_ids) for a, b in pairs), 1
        ),
        "judge_same_level": sum(u["pred"] == v["pred"] for u, v in zip(verdicts["fp32"], verdicts["bf16"])),
        "sae_rows": len(sae),
        "sae_judged_on_target": {
            mode: sum(verdicts[mode][i]["pred"] == rows[i][0].level for i in sae) for mode in replies
        },
    }
    print(json.dumps(out), flush=True)
    return out


def main() -> None:
    if len(sys.argv) not in (2, 3):
        raise SystemExit(__doc__)
    rounds = int(sys.argv[2]) if len(sys.argv) == 3 else 5
    fp32 = rows_kernel()
    if fp32 is None:
        raise SystemExit("the few-row kernel is off here (no C compiler, or STEER_KERNEL=off)")
    bf16, lm = bf16_kernel(), load_model()
    lines = [check_exact(lm, fp32, bf16)]
    print(json.dumps(lines[0]), flush=True)
    lines += time_products(lm, fp32, bf16, 3 * rounds)
    lines += time_decoding(lm, bf16, rounds)
    lines.append(compare_replies(lm, lambda: bf16_decoding(lm, bf16)))
    Path(sys.argv[1]).write_text("".join(json.dumps(x) + "\n" for x in lines))


if __name__ == "__main__":
    main()
