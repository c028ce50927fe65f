"""Prototypes from the first K feedback tokens only: a variant of the prototype definition.

    python scripts/early_prototypes.py OUT_DIR [--layers 8-21] [--first 8]

Why: a feedback's level is decided by its opening ("Compare ...", "Design ...", "Name ...");
averaging the code over every feedback token mixes that signal with the topic's words. This keeps
the shipped SAEs and recomputes the level prototypes (and mean queries) over the first K tokens of
each train-split feedback, written as a complete SAE folder (manifest and hashes included) that
`eval --saes OUT_DIR` and `generate --saes OUT_DIR` can steer with.
"""

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from steer_core.bank import STORE, save_layer  # noqa: E402
from steer_core.evaluation import parse_layers  # noqa: E402
from steer_core.models import load_model  # noqa: E402
from steer_core.prototypes import compute_prototypes  # noqa: E402
from steer_core.training import capture_train_queries  # noqa: E402


def position_in_example(example_ids: torch.Tensor) -> torch.Tensor:
    """0, 1, 2, ... within each run of equal example ids (tokens of one example are contiguous)."""
    idx = torch.arange(len(example_ids))
    starts = torch.ones(len(example_ids), dtype=torch.bool)
    starts[1:] = example_ids[1:] != example_ids[:-1]
    first = torch.cummax(torch.where(starts, idx, torch.zeros_like(idx)), 0).values
    return idx - first


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--layers", default="8-21")
    ap.add_argument("--first", type=int, default=8)
    args = ap.parse_args()
    lm = load_model()
    layers = list(parse_layers(args.layers))
    cap = capture_train_queries(lm, layers)
    fb = cap.is_feedback
    ex = cap.example_ids[fb]
    keep = position_in_example(ex) < args.first
    for layer in layers:
        bank = STORE.get(lm, layer, train_missing=False)
        q = cap.queries[layer][fb][keep].to(lm.device)
        protos = compute_prototypes(bank.sae, q, ex[keep].to(lm.device), cap.example_levels.to(lm.device))
        meta = dict(bank.meta.get("metrics", {}))
        settings = {**bank.meta.get("settings", {}), "prototype_tokens": f"first {args.first} feedback tokens"}
        save_layer(args.out, lm, layer, bank.sae, protos, meta, settings)
        print(f"layer {layer}: {int(keep.sum())} tokens", flush=True)


if __name__ == "__main__":
    main()
