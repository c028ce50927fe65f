"""`generate`: feedback for a question and answer (or a JSONL of scenarios), steered or not, with its level."""

from __future__ import annotations

import json

from .. import methods
from ..bloom import LEVELS
from ..generation import K_SHOTS, REPLY_TOKENS, SEED
from ..layer_spec import layers_label
from ..steering.model_defaults import residual_layers
from .common import (
    UsageError,
    add_style,
    load,
    model_layers,
    model_options,
    read_jsonl_file,
    steer_config,
    steer_files,
    steering_options,
)


def cmd_generate(args) -> int:
    import time

    from ..generation import Request, generate_batch
    from ..judge.classifier import default_judge

    if args.scenarios:
        items = [
            (o.get("id", n), o.get("question"), o.get("student_answer")) for n, o in read_jsonl_file(args.scenarios)
        ]
    else:
        if args.question is None or args.answer is None:
            raise UsageError("give --question and --answer, or --scenarios FILE.jsonl")
        items = [(None, args.question, args.answer)]
    if args.method is None:  # latents given: they are what steers
        args.method = "latents" if args.latents else "sae"
    lm = load(args)
    steer = None  # what the method needs is read from its entry: unsteered and prompt baselines need no files
    files = steer_files(args)
    if methods.get(args.method).steers:
        steer = steer_config(args, model_layers(args.layers, lm)).for_method(args.method, residual_layers(lm), files)
    judge = default_judge()
    for sid, q, a in items:
        if not isinstance(q, str) or not isinstance(a, str):
            raise UsageError(f"scenario {sid}: needs string fields 'question' and 'student_answer'")
        req = Request(
            q, a, args.method, args.level, steer=steer, files=files, k_shots=args.k, style=args.style,
            prompt=None if args.prompt == methods.PLAIN else args.prompt,
        )  # fmt: skip
        t0 = time.time()
        out = generate_batch(
            lm,
            [req],
            max_new_tokens=args.max_new_tokens,
            seed=args.seed,
            temperature=args.temperature,
            prefix_cache=True,
        )[0]
        verdict = judge.judge([out.text])[0]
        rec = {
            "text": out.text,
            "method": args.method,
            "prompt": req.prompt,
            "level": req.level,
            "seconds": round(time.time() - t0, 3),
            "new_tokens": out.new_tokens,
            "judge": verdict,
        }
        if req.steer is not None:  # what steered it, for the record
            rec |= {"layers": layers_label(req.steer.layers), "setting": req.steer.label_with(files)}
        if args.scenarios:
            rec = {"id": sid, **rec}
        print(
            json.dumps(rec)
            if args.json
            else f"[{args.method} -> {req.level}] {out.text}\n"
            f"judge: {verdict['pred']} ({verdict['probs'][verdict['pred']]:.2f})",
            flush=True,
        )
    return 0


def register(sub) -> None:
    gen = sub.add_parser(
        "generate",
        help="generate feedback, steered or not, and judge its level",
        parents=[steering_options(multi_layers=False), model_options()],
    )
    gen.add_argument("--question")
    gen.add_argument("--answer")
    gen.add_argument("--scenarios", help="JSONL with question, student_answer, id: one output line each")
    gen.add_argument("--level", default="apply", choices=LEVELS)
    gen.add_argument(
        "--method", default=None, choices=methods.names(), help="default: sae, or latents when --latents is given"
    )
    gen.add_argument("--k", type=int, default=K_SHOTS, help="few-shot examples")
    add_style(gen)
    gen.add_argument("--max-new-tokens", type=int, default=REPLY_TOKENS)
    gen.add_argument("--seed", type=int, default=SEED)
    gen.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    gen.add_argument("--json", action="store_true")
    gen.set_defaults(func=cmd_generate)
