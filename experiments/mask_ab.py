"""What making a decoding step's attention mask costs (lean_step._step_mask), the way it was (create_causal_mask
and SDPA's conversion to a float mask at every step) against the way it is (the last step's float mask kept on the
cache, the new position's column written), in one process: bench's batches (64 tokens, stop tokens ignored, the
views' settings), the two ways taking turns round by round, each step's mask timed, each batch timed whole, and the
replies checked to be the same both ways.

    python -m experiments.mask_ab [OUT.jsonl] [ROUNDS]

Prints, and appends to OUT.jsonl if given, one JSON object per batch: {"batch", "before_us", "after_us",
"before_ms", "after_ms", "same_replies"}, and for the Compare and the ladder "before_ratio" and "after_ratio" (_us:
the median over rounds of each round's median mask; _ms: the median batch, whole; _ratio: to one reply in the same
round and way, experiments.sites_ab.ab_rounds).
"""

from __future__ import annotations

import sys

from experiments.sites_ab import ab_rounds
from steer_core.model import lean_step
from steer_core.model.loading import load_model

KEPT = lean_step._step_mask


def mask_as_it_was(inner, h, attention_mask, cache, position_ids, lean):
    """_step_mask before the kept mask: made again at every step."""
    cache.__dict__.pop("_lean_mask", None)
    return KEPT(inner, h, attention_mask, cache, position_ids, lean)


def main() -> None:
    if len(sys.argv) > 3 or (len(sys.argv) == 3 and not sys.argv[2].isdigit()):
        raise SystemExit(__doc__)
    out, rounds = (sys.argv[1] if len(sys.argv) > 1 else None), (int(sys.argv[2]) if len(sys.argv) == 3 else 7)
    lm = load_model()
    if not lean_step.takes(lm.model):
        raise SystemExit("the default model's decoding steps are expected to take the lean path")
    ab_rounds(lm, lean_step, "_step_mask", {"before": mask_as_it_was, "after": KEPT}, rounds, out)


if __name__ == "__main__":
    main()
