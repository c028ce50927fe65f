"""What a ladder or a sweep waits for once its replies are written: the perplexity of each under the unsteered model,
one forward each over prompt and reply (fluency.perplexity, as evaluation measures it) against the prompt read once
and the replies together (fluency.perplexities, as the views measure it now), taking turns round by round, with
the whole view (generation, judge, perplexities) timed beside them.

    python -m experiments.perplexities_ab OUT.jsonl [ROUNDS]

Writes one JSON object per view (bench's question toward analyze; the ladder's seven replies, the sweep's):
{"view", "replies", "one_each_s", "together_s", "max_rel_diff", "view_s", "generated_s"}, the times the median over
rounds; max_rel_diff the largest relative difference between the two ways' values.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

from steer_core import bench
from steer_core.fluency import perplexities, perplexity
from steer_core.judge.classifier import default_judge
from steer_core.model.loading import load_model
from steer_core.views.compare import CompareRequest
from steer_core.views.ladder import ladder_stream
from steer_core.views.sweep import DEFAULT_STRENGTHS, sweep_stream


def whole(stream) -> tuple[float, float, list]:
    """(seconds to the last reply's last token, seconds to the judged view, the replies' token ids)."""
    t0, generated = time.perf_counter(), []
    for view in stream:  # noqa: B007 - the last is kept
        if not view.done:  # a reply's token (a ladder is then yielded judged, then whole)
            generated.append(time.perf_counter() - t0)
    return generated[-1], time.perf_counter() - t0, [o.token_ids for o in view.outputs]


def main() -> None:
    if len(sys.argv) not in (2, 3):
        raise SystemExit(__doc__)
    out, rounds = Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) == 3 else 5
    lm, judge = load_model(), default_judge()
    req = CompareRequest(question=bench.Q, student_answer=bench.A, level="analyze")
    views = {
        "ladder": lambda: ladder_stream(lm, req, judge=judge),
        "sweep": lambda: sweep_stream(lm, req, DEFAULT_STRENGTHS, judge=judge),
    }
    times: dict = {}
    for round_ in range(rounds + 1):  # the first round warms up
        for name, stream in views.items():
            generated, done, replies = whole(stream())
            t0 = time.perf_counter()
            each = [perplexity(lm, req.question, req.student_answer, r) for r in replies]
            t1 = time.perf_counter()
            together = perplexities(lm, req.question, req.student_answer, replies)
            t2 = time.perf_counter()
            diff = max(abs(a - b) / a for a, b in zip(each, together) if a == a)
            if round_:
                for key, value in (("one_each_s", t1 - t0), ("together_s", t2 - t1), ("view_s", done),
                                   ("generated_s", generated), ("max_rel_diff", diff)):  # fmt: skip
                    times.setdefault(name, {}).setdefault(key, []).append(value)
            times.setdefault(name, {})["replies"] = [len(replies)]
    with out.open("w") as f:
        for name, got in times.items():
            row = {"view": name, "replies": got["replies"][0]}
            row |= {k: round(statistics.median(v), 3) for k, v in got.items() if k not in ("replies", "max_rel_diff")}
            row["max_rel_diff"] = max(got["max_rel_diff"])
            print(json.dumps(row), file=f, flush=True)
    print(out.read_text(), end="")


if __name__ == "__main__":
    main()
