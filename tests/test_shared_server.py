"""The app as a public Space runs it (SPACE_ID set): a visitor cannot change what another is served, and a
flood of requests from one visitor is refused at once while another visitor's Compare still completes.

These start their own `python app.py` (conftest `served_app`) with SPACE_ID set and every other setting as a
Space gets it by default."""

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import served_app

pytestmark = pytest.mark.slow

Q = "A recipe for 4 people uses 300 g of flour. How much flour is needed for 6 people?"
A = "450 g, because 300 divided by 4 is 75 and 75 times 6 is 450."
PER_CLIENT = 2  # a Space's default (ui/runtime.py), under its 4 Compare slots


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    home = tmp_path_factory.mktemp("space")  # SPACE_ID: what every Hugging Face Space's environment holds
    with served_app(home, SPACE_ID="teacher/bloom-steering") as (url, proc):
        yield url, proc, home / "cache"


def visitor(space):
    from gradio_client import Client

    return Client(space[0], verbose=False)


def served(client) -> list:
    """What a visitor is served on layer 15 with the paper's target (the SAEs a /train of layer 15 would
    replace): every reply, verdict and chart of the Compare, without the report's path and the timing line."""
    out = client.predict(Q, A, "create", api_name="/compare", layers="15", target="prototype", max_new_tokens=12)
    report, status = out[-5], out[-4]
    assert report.endswith(".json") and "Done in" in status
    return [json.dumps(o, sort_keys=True) for i, o in enumerate(out) if i not in (len(out) - 5, len(out) - 4)]


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS")) / 1024


def test_training_and_preparing_are_off_and_change_nothing_another_visitor_is_served(space):
    from gradio_client.exceptions import AppError

    teacher, visitor_ = visitor(space), visitor(space)
    before = served(teacher)
    with pytest.raises(AppError, match="off on this shared server.*STEER_TRAINING"):
        visitor_.predict(15, "topk", 16, 1.0, 8, 1, api_name="/train")
    with pytest.raises(AppError, match="off on this shared server"):
        visitor_.predict("15", api_name="/prepare")
    assert served(teacher) == before
    assert not list(space[2].glob("saes/*/layer_*"))  # nothing was written where the server reads SAEs


def test_a_flood_from_one_visitor_is_refused_at_once_and_another_visitors_compare_completes(space):
    import httpx
    from gradio_client.utils import QueueError

    flood, teacher = visitor(space), visitor(space)
    pid = space[1].pid

    def one(_):
        t0 = time.time()
        try:
            flood.predict(Q, A, "create", api_name="/compare", max_new_tokens=16)
            return "served", time.time() - t0
        except httpx.HTTPStatusError as exc:  # over the visitor's bound: 429 and what to do
            return exc.response.json()["detail"], time.time() - t0
        except QueueError as exc:  # over the queue's bound: gradio's own busy answer
            return str(exc), time.time() - t0

    sizes = []
    for _ in range(4):  # the first flood also gives the server's worker threads their memory
        with ThreadPoolExecutor(50) as pool:
            flooding = pool.map(one, range(50))
            time.sleep(0.5)
            assert served(teacher)  # another visitor's Compare completes while the flood's requests run
            got = list(flooding)
        refused = [(why, t) for why, t in got if why != "served"]
        ran = [t for why, t in got if why == "served"]
        assert len(ran) <= PER_CLIENT and len(refused) >= 50 - PER_CLIENT, got
        # refused at once: every refusal came back before the first request it let in had finished
        assert max(t for _, t in refused) < min(ran), got
        assert all("busy" in why for why, _ in refused), refused
        sizes.append(rss_mb(pid))
    assert max(sizes[1:]) - sizes[0] < 60, sizes  # a plateau: a flood leaves nothing behind
    assert space[1].poll() is None
