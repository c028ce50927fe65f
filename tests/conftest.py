import contextlib
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# STEER_TEST_DEVICE=cuda pytest -m "not browser": every test that loads the real model, and the app it
# starts, runs on that device (the tiny models of the fast tests stay on the CPU).
if os.environ.get("STEER_TEST_DEVICE"):
    os.environ["STEER_DEVICE"] = os.environ["STEER_TEST_DEVICE"]


def pytest_report_header(config):
    return f"steer device: {os.environ.get('STEER_DEVICE', 'auto')}"


def pytest_sessionstart(session):
    want = os.environ.get("STEER_TEST_DEVICE", "")
    if want.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            pytest.exit(f"STEER_TEST_DEVICE={want}, but torch sees no CUDA GPU", returncode=4)


@pytest.fixture(scope="session")
def dataset():
    from steer_core.bloom import load_dataset

    return load_dataset()


@pytest.fixture(scope="module")
def steerable_lm(tmp_path_factory):
    """A tiny random Llama (character tokenizer) with an SAE bank for every layer in a private cache."""
    from tiny import char_tokenizer, tiny_bank, tiny_lm

    from steer_core.caches import clear_all
    from steer_core.sae.layer_files import save_layer
    from steer_core.sae.store import user_root

    cache = tmp_path_factory.mktemp("cache")
    old = os.environ.get("STEER_CACHE")
    os.environ["STEER_CACHE"] = str(cache)
    lm = tiny_lm(seed=2, tokenizer=char_tokenizer())
    for layer in range(lm.n_layers):
        b = tiny_bank(lm, layer, seed=layer)
        protos = {"codes": b.codes, "queries": b.queries, "query_all": b.query_all}
        save_layer(user_root(lm), lm, layer, b.sae, protos, {}, {}, dtype="float32")
    yield lm
    clear_all()
    if old is None:
        os.environ.pop("STEER_CACHE")
    else:
        os.environ["STEER_CACHE"] = old


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def app_url(app_server):
    return app_server[0]


@pytest.fixture(scope="session")
def app_server(tmp_path_factory):
    """The real `python app.py`, started once for the session on a free port: (url, process)."""
    with served_app(tmp_path_factory.mktemp("app"), STEER_CONCURRENCY="8") as served:
        yield served


@contextlib.contextmanager
def served_app(home, **env_vars):
    """`python app.py` on a free port with these environment variables, until the block ends: (url, process).
    A private cache (the model files linked in), so what is trained through the app stays in the test."""
    import subprocess
    import time
    import urllib.request

    from steer_core.paths import cache_root

    port = _free_port()
    log = home / "app.log"
    cache = home / "cache"
    cache.mkdir()
    for name in ("gguf", "smollm2-135m-instruct"):
        if (cache_root() / name).is_dir():
            (cache / name).symlink_to(cache_root() / name, target_is_directory=True)
    env = {
        **os.environ,
        "GRADIO_SERVER_PORT": str(port),
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "GRADIO_ANALYTICS_ENABLED": "False",
        "STEER_CACHE": str(cache),
        **env_vars,
    }
    with log.open("w") as fh:
        proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 300
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"app.py exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                raise RuntimeError(f"app.py did not serve within 300 s:\n{log.read_text()[-3000:]}")
            time.sleep(1)
        yield url, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
