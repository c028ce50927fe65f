"""A Compare clicked again with the same question (bench's request, 64 tokens, stop tokens ignored), its plain
prompt's read taken from the reads kept (prefix_cache.READS, now) or read again (before: the kept reads emptied
first), the two ways taking turns round by round in one process. Both reuse the unsteered and few-shot replies
(reply_cache), so each click generates its SAE and query rows. Checks that both ways, and a click that reuses
nothing, give the same replies token for token.

    python -m experiments.prompt_reads_ab [OUT.jsonl] [ROUNDS]

Prints, and appends to OUT.jsonl if given, one JSON object: the median over rounds of the whole click (its
generation, judge and inspection) and of its first word, in ms, each way, and whether the replies were the same.
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


def click(lm, req, reuse: bool = True) -> tuple[float, float, dict]:
    """(whole seconds, seconds to the first yield, the replies' token ids by method)."""
    t0, first, results = time.perf_counter(), None, []
    for result in compare_stream(lm, req, ignore_stop=True, reuse=reuse):
        first = time.perf_counter() - t0 if first is None else first
        results[:] = [result]
    return time.perf_counter() - t0, first, {m: o.token_ids for m, o in results[0].outputs.items()}


def main() -> None:
    if len(sys.argv) > 3 or (len(sys.argv) == 3 and not sys.argv[2].isdigit()):
        raise SystemExit(__doc__)
    out, rounds = (sys.argv[1] if len(sys.argv) > 1 else None), (int(sys.argv[2]) if len(sys.argv) == 3 else 9)
    white_by_default()
    lm = load_model()
    req = CompareRequest(question=bench.Q, student_answer=bench.A, level="analyze", max_new_tokens=64)
    _, _, fresh = click(lm, req, reuse=False)
    click(lm, req)  # the replies and the read kept
    times: dict[str, list[tuple[float, float]]] = {"before": [], "after": []}
    same = True
    for r in range(rounds):
        for way in ("before", "after") if r % 2 else ("after", "before"):
            if way == "before":
                READS.forget()
            whole, first, replies = click(lm, req)
            times[way].append((whole, first))
            same = same and replies == fresh
    line = {"rounds": rounds}
    for way, t in times.items():
        line[f"{way}_ms"] = round(statistics.median(x[0] for x in t) * 1e3, 1)
        line[f"{way}_first_word_ms"] = round(statistics.median(x[1] for x in t) * 1e3, 1)
    emit(line | {"same_replies": same}, out)


if __name__ == "__main__":
    main()
