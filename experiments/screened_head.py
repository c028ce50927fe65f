"""What a greedy step's output layer would cost read through a bfloat16 copy that only screens the vocabulary, the
exact float32 products then taken for the few tokens the screen leaves: the same picks, bit for bit, from about half
the bytes. Nothing of the app changes; this only measures.

The screen is rigorous, not a guess. For a row x and a token v, the float32 kernel's logit e_v and the screen's
s_v (the same kernel on the weights rounded to bfloat16) differ by at most
    B_v = (||W_v - bf16(W_v)|| + 2 gamma ||W_v||) ||x||     (Cauchy-Schwarz; gamma bounds the kernel's roundings)
so a token with s_v + B_v below max_u (s_u - B_u) is below some other token's exact logit and cannot be picked (nor
tie). The tokens left get their exact logits from the float32 kernel (an output is the same bits whatever else the
kernel computes beside it: rows_linear.c), and the first largest of them is argmax's pick.

    python -m experiments.screened_head [OUT.jsonl] [ROUNDS]

Prints, and appends to OUT.jsonl if given, one JSON object a line:
- "exact": over every output-layer input of bench's three batches (one reply, the Compare, the ladder; 64 tokens,
  stop tokens ignored, the views' settings): whether the screened pick was argmax's every time, and how many tokens
  the screen left (median, mean, largest);
- "head": the output layer alone at 1, 4 and 7 rows, float32 against screened (screen, bound, exact pass), the two
  taking turns round by round, medians in ms (its weights read again and again: as much of them in the caches as
  fits);
- per batch of bench's three (experiments.sites_ab.ab_rounds), the output layer read as shipped ("before") or
  screened ("after"; its logits hold -inf outside the tokens left, so their first largest is the same token), taking
  turns: each way's median output-layer call (us), median batch (ms), ratio to one reply in the same round and way (as
  bench computes it), and whether the replies were the same.
"""

from __future__ import annotations

import statistics
import sys
import time

import torch

from experiments.batch_costs import batches
from experiments.bf16_weights import bf16_kernel, bf16_pack
from experiments.jsonl import emit
from experiments.sites_ab import BATCHES, ab_rounds
from steer_core.generation import VIEWS, generate_batch
from steer_core.model.loading import load_model
from steer_core.model.rows_kernel import pack, rows_kernel

GAMMA = 64 * 2.0**-24  # the kernel's roundings of one logit (36 multiply-adds a lane, 4 in the tree), with room


class Screen:
    """The output layer's weight, its bfloat16 packed copy and each token's bound factor."""

    def __init__(self, weight: torch.Tensor):
        w = weight.detach()
        self.weight, self.packed, self.packed16 = w, pack(w), bf16_pack(w)
        wd = w.double()
        self.factor = ((wd - w.to(torch.bfloat16).double()).norm(dim=1) + 2 * GAMMA * wd.norm(dim=1)) * (1 + 1e-6)
        self.fp32, self.bf16 = rows_kernel(), bf16_kernel()

    def full(self, x: torch.Tensor) -> torch.Tensor:
        return self.fp32(x, self.weight, None, self.packed)

    def left(self, x: torch.Tensor) -> torch.Tensor:
        """(rows, vocab) bool: the tokens each row's screen leaves."""
        s = self.bf16(x, self.weight, None, self.packed16).double()
        bound = self.factor[None, :] * x.double().norm(dim=1, keepdim=True)
        return s + bound >= (s - bound).max(dim=1, keepdim=True).values

    def logits(self, x: torch.Tensor, left: torch.Tensor | None = None) -> torch.Tensor:
        """-inf but at the tokens some row's screen left (`left`, where the caller has it), which hold their exact
        float32 logits."""
        if not bool(torch.isfinite(x).all()):
            return self.full(x)
        kept = (self.left(x) if left is None else left).any(0).nonzero().flatten()
        out = torch.full((x.shape[0], self.weight.shape[0]), float("-inf"))
        out[:, kept] = self.fp32(x, self.weight[kept].contiguous(), None, None)
        return out


def inputs(lm) -> torch.Tensor:
    """Every (row, hidden) the output layer read in bench's three batches."""
    head, seen = lm.model.lm_head, []

    def keep(module, args):
        seen.append(args[0].detach().reshape(-1, args[0].shape[-1]).clone())

    hook = head.register_forward_pre_hook(keep)
    try:
        made = batches(lm)
        for n in BATCHES:
            generate_batch(lm, made[n], max_new_tokens=64, ignore_stop=True, **VIEWS)
    finally:
        hook.remove()
    return torch.cat(seen)


def check_exact(screen: Screen, xs: torch.Tensor) -> dict:
    counts, same = [], True
    for i in range(0, len(xs), 7):
        x = xs[i : i + 7]
        left = screen.left(x)
        same &= torch.equal(screen.full(x).argmax(-1), screen.logits(x, left).argmax(-1))
        counts += left.sum(1).tolist()
    spread = {"left_median": statistics.median(counts), "left_mean": round(statistics.mean(counts), 2)}
    return {"part": "exact", "states": len(xs), "same_picks": bool(same), **spread, "left_max": max(counts)}


def time_head(screen: Screen, xs: torch.Tensor, rounds: int, out: str | None) -> None:
    for rows in (1, 4, 7):
        x = xs[:rows]
        times = {"fp32": [], "screened": []}
        for r in range(rounds + 1):
            for way, fn in (("fp32", screen.full), ("screened", screen.logits)):
                t0 = time.perf_counter()
                fn(x)
                if r:
                    times[way].append(time.perf_counter() - t0)
        med = {f"{k}_ms": round(statistics.median(v) * 1e3, 2) for k, v in times.items()}
        emit({"part": "head", "rows": rows} | med, out)


def time_decode(lm, screen: Screen, rounds: int, out: str | None) -> None:
    head = lm.model.lm_head
    plain = head.forward

    def screened(x):
        flat = x.reshape(-1, x.shape[-1])
        if flat.shape[0] > 11 or torch.is_grad_enabled():
            return plain(x)
        return screen.logits(flat.contiguous()).reshape(*x.shape[:-1], -1)

    ab_rounds(lm, head, "forward", {"before": plain, "after": screened}, rounds, out)


def main() -> None:
    out = sys.argv[1] if len(sys.argv) > 1 else None
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 7
    lm = load_model()
    if rows_kernel() is None:
        raise SystemExit("the few-row kernel is off here (no C compiler, or STEER_KERNEL=off)")
    screen = Screen(lm.model.lm_head.weight)
    xs = inputs(lm)
    emit(check_exact(screen, xs), out)
    time_head(screen, xs, rounds * 3, out)
    time_decode(lm, screen, rounds, out)


if __name__ == "__main__":
    main()
