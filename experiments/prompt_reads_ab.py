"""A click repeated on the same question (bench's request, 64 tokens, stop tokens ignored), what an earlier click
kept taken (now) or not (before), the two ways taking turns round by round in one process, and the replies checked
to be the same both ways and as a click that reuses nothing:

- compare: a Compare clicked again. Both ways reuse its unsteered and few-shot replies (reply_cache), so each
  generates its SAE and query rows; before, the kept prompt reads (prefix_cache.READS) are emptied first, so the
  plain prompt is read again.
- ladder: a ladder clicked again. Before, nothing is reused (reuse=False: seven rows, the prompt read); now its
  unsteered reply and its prompt's read are the ones kept (six rows, no prompt read).

    python -m experiments.prompt_reads_ab [OUT.jsonl] [ROUNDS]

Prints, and appends to OUT.jsonl if given, one JSON object a view: the median over rounds of the click until it
is judged (the Compare's verdicts, before its inspection; the ladder's judged chart, before its perplexities) and
of its first word, in ms, each way, and whether the replies were the same.
"""

from __future__ import annotations

import statistics
import sys
import time

from experiments.jsonl import emit
from steer_core import bench
from steer_core.charts import white_by_default
from steer_core.model.loading import load_model
from steer_core.prefix_cache import READS
from steer_core.views.compare import CompareRequest, compare_stream
from steer_core.views.ladder import ladder_stream


def click(stream) -> tuple[float, float, list]:
    """(seconds to the judged result, seconds to the first yield, the replies' token ids) of a view's stream."""
    t0, first = time.perf_counter(), None
    for result in stream:
        first = time.perf_counter() - t0 if first is None else first
        if result.done:
            break
    outputs = result.outputs.values() if isinstance(result.outputs, dict) else result.outputs
    return time.perf_counter() - t0, first, [o.token_ids for o in outputs]


def main() -> None:
    if len(sys.argv) > 3 or (len(sys.argv) == 3 and not sys.argv[2].isdigit()):
        raise SystemExit(__doc__)
    out, rounds = (sys.argv[1] if len(sys.argv) > 1 else None), (int(sys.argv[2]) if len(sys.argv) == 3 else 9)
    white_by_default()
    lm = load_model()
    req = CompareRequest(question=bench.Q, student_answer=bench.A, level="analyze", max_new_tokens=64)
    views = {
        "compare": lambda reuse: compare_stream(lm, req, ignore_stop=True, reuse=reuse),
        "ladder": lambda reuse: ladder_stream(lm, req, ignore_stop=True, reuse=reuse),
    }
    for view, stream in views.items():
        fresh = click(stream(False))[2]
        click(stream(True))  # what the next click takes, kept
        times: dict[str, list[tuple[float, float]]] = {"before": [], "after": []}
        same = True
        for r in range(rounds):
            for way in ("before", "after") if r % 2 else ("after", "before"):
                if way == "before" and view == "compare":
                    READS.forget()
                whole, first, replies = click(stream(view == "compare" or way == "after"))
                times[way].append((whole, first))
                same = same and replies == fresh
        line = {"view": view, "rounds": rounds}
        for way, t in times.items():
            line[f"{way}_ms"] = round(statistics.median(x[0] for x in t) * 1e3, 1)
            line[f"{way}_first_word_ms"] = round(statistics.median(x[1] for x in t) * 1e3, 1)
        emit(line | {"same_replies": same}, out)


if __name__ == "__main__":
    main()
