"""Greedy token ids of a fixed set of requests, to show a refactor changed no output.

    python -m experiments.greedy_check OUT.json     # in each checkout (old and new), then compare:
    python -c "import json,sys; a,b=(json.load(open(p)) for p in sys.argv[1:]); print(a == b)" OLD.json NEW.json

Four test scenarios x ten variants (unsteered; SAE steering with the default (learned offsets at
strength 1), the delta target, learned offsets at strength 0.25, a schedule (strength 2 on the first 4
tokens, then half), the prototype target at all positions; query steering; the residual vector;
few-shot; instruction), 32 greedy tokens each, in one batch.
"""

import json
import sys

from steer_core.bloom import load_dataset, scenarios
from steer_core.generation import Request, generate_batch
from steer_core.model.loading import load_model
from steer_core.steering.config import SteerConfig


def main() -> None:
    lm = load_model()
    reqs = []
    for s, lv in zip(scenarios(load_dataset(split="test"))[:4], ["remember", "apply", "evaluate", "create"]):
        q, a = s.question, s.student_answer
        reqs += [
            Request(q, a, "none", lv),
            Request(q, a, "sae", lv, steer=SteerConfig()),
            Request(q, a, "sae", lv, steer=SteerConfig(target="delta", strength=1.0)),
            Request(q, a, "sae", lv, steer=SteerConfig(target="learned", strength=0.25)),
            Request(q, a, "sae", lv, steer=SteerConfig(strength=2.0, first_tokens=4, after_first=0.5)),
            Request(q, a, "sae", lv, steer=SteerConfig(target="prototype", positions="all", layers=(15,))),
            Request(q, a, "query", lv, steer=SteerConfig()),
            Request(q, a, "residual", lv, steer=SteerConfig()),
            Request(q, a, "fewshot", lv, scenario_id=s.scenario_id),
            Request(q, a, "instruction", lv),
        ]
    outs = generate_batch(lm, reqs, max_new_tokens=32)
    with open(sys.argv[1], "w") as fh:
        json.dump([o.token_ids for o in outs], fh)
    print(f"{len(outs)} rows, {sum(o.new_tokens for o in outs)} tokens")


if __name__ == "__main__":
    main()
