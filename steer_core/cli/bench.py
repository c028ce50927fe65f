"""`bench`: performance figures (tokens/s, steering overhead, the Compare click, the ladder, cold start)."""

from __future__ import annotations

import json

from .common import UsageError, load, model_options


def cmd_bench(args) -> int:
    from ..bench import run_bench

    if args.tokens < 1 or args.repeats < 1:
        raise UsageError("--tokens and --repeats must be >= 1")
    lm = load(args)
    layer = lm.middle_layer if args.layer is None else lm.check_layer(args.layer)
    out = run_bench(
        lm,
        tokens=args.tokens,
        repeats=args.repeats,
        layer=layer,
        train=not args.no_train,
        cold_start=not args.no_cold_start,
    )
    print(json.dumps(out) if args.json else "\n".join(f"{k}: {v}" for k, v in out.items()))
    return 0


def register(sub) -> None:
    b = sub.add_parser(
        "bench",
        help="performance figures: tokens/s, steering overhead, the whole Compare click, cold start, SAE training",
        parents=[model_options()],
    )
    b.add_argument("--json", action="store_true", help="one JSON object")
    b.add_argument("--tokens", type=int, default=64, help="new tokens per timed generation")
    b.add_argument("--repeats", type=int, default=3, help="timed runs per figure (median)")
    b.add_argument(
        "--layer", type=int, default=None, help="the one steered layer, and the layer trained (default: the middle one)"
    )
    b.add_argument("--no-train", action="store_true", help="skip the SAE training figure (about a minute)")
    b.add_argument("--no-cold-start", action="store_true", help="skip the cold-start figure")
    b.set_defaults(func=cmd_bench)
