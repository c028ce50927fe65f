"""Measure what a flood does to the app as a Space runs it: start `python app.py` with SPACE_ID set, let one
visitor submit N Compare requests at once while another visitor runs one Compare, and print how fast the
refusals came back, how long the other visitor waited, and the server's resident memory before and after.

    python -m experiments.space_flood [--n 50] [--rounds 3]

Prints one JSON object per round: {"served", "refused", "refusal_s_max", "refusal_s_median", "single_refusal_s",
"other_s", "rss_mb"}. Uses a private cache under a temporary folder (the model files linked in), like the tests.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

Q = "A recipe for 4 people uses 300 g of flour. How much flour is needed for 6 people?"
A = "450 g, because 300 divided by 4 is 75 and 75 times 6 is 450."


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=50)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--max-new-tokens", type=int, default=32)
    args = p.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    import httpx
    from conftest import served_app
    from gradio_client import Client
    from gradio_client.utils import QueueError

    with tempfile.TemporaryDirectory() as home, served_app(Path(home), SPACE_ID="probe/space") as (url, proc):
        flood, other = Client(url, verbose=False), Client(url, verbose=False)

        def compare(client):
            t0 = time.time()
            client.predict(Q, A, "create", api_name="/compare", max_new_tokens=args.max_new_tokens)
            return time.time() - t0

        def one(_):
            t0 = time.time()
            try:
                compare(flood)
                return "served", time.time() - t0
            except (httpx.HTTPStatusError, QueueError):
                return "refused", time.time() - t0

        def rss_mb() -> float:
            with open(f"/proc/{proc.pid}/status") as fh:
                return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS")) / 1024

        compare(other)  # the first Compare loads the judge and the few-shot pool
        print(json.dumps({"rss_mb_before": round(rss_mb(), 1)}))
        for _ in range(args.rounds):
            with ThreadPoolExecutor(args.n) as pool:
                flooding = pool.map(one, range(args.n))
                time.sleep(0.5)
                _, single_s = one(None)  # one more while the visitor's share is taken: a refusal on its own
                other_s = compare(other)
                got = list(flooding)
            refused = [t for kind, t in got if kind == "refused"]
            print(
                json.dumps(
                    {
                        "served": len(got) - len(refused),
                        "refused": len(refused),
                        "refusal_s_max": round(max(refused), 3) if refused else None,
                        "refusal_s_median": round(statistics.median(refused), 3) if refused else None,
                        "single_refusal_s": round(single_s, 3),
                        "other_s": round(other_s, 1),
                        "rss_mb": round(rss_mb(), 1),
                    }
                ),
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
