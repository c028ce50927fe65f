"""What the app runs on: the environment it reads, the loaded model, and the ZeroGPU decorators. The only
module of the UI that touches the model loader (tests/test_layout.py keeps it so).

Environment: STEER_MODEL (default: the embedded SmolLM2-135M-Instruct with its feedback adapter),
STEER_ADAPTER (a LoRA folder for that model, or none), STEER_DEVICE (auto | cpu | cuda),
STEER_CONCURRENCY (requests served at once, default 4), and what a shared server allows its visitors:
STEER_TRAINING (on | private | off; default off on a Hugging Face Space, on elsewhere), STEER_QUEUE_SIZE
(requests that may wait; default 16 on a Space, no bound elsewhere) and STEER_PER_CLIENT (requests one visitor
may have waiting or running; default 2 on a Space, no bound elsewhere).
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading

try:  # ZeroGPU on Hugging Face Spaces: `spaces` must be imported before CUDA is touched
    import spaces

    gpu = spaces.GPU(duration=120)
    gpu_long = spaces.GPU(duration=300)  # 5 minutes: the most one call may ask for,
    # per a ZeroGPU maintainer's answer in huggingface.co/spaces/zero-gpu-explorers/README/discussions/7
except ImportError:  # anywhere else generation simply runs on the device steer_core picked

    def gpu(fn):
        return fn

    gpu_long = gpu


from steer_core.model.loading import adapter_choice, load_model  # noqa: E402
from steer_core.paths import DEFAULT_MODEL  # noqa: E402

MODEL = os.environ.get("STEER_MODEL", DEFAULT_MODEL)
ADAPTER = os.environ.get("STEER_ADAPTER")  # unset: the shipped adapter (default model only); none: the bare model
DEVICE = os.environ.get("STEER_DEVICE", "auto")
CONCURRENCY = int(os.environ.get("STEER_CONCURRENCY", "4"))
ON_SPACE = bool(os.environ.get("SPACE_ID"))  # every Hugging Face Space's environment names it
# What Train and Prepare may do (ui/train.py): "on" writes the model's cache, so every visitor is served what one
# trains (one's own machine); "private" gives a visitor their SAEs as a download and serves them to no one;
# "off" refuses both. A Space is shared, so it defaults to off: its owner turns training on.
TRAINING_MODES = ("on", "private", "off")
TRAINING = os.environ.get("STEER_TRAINING", "off" if ON_SPACE else "on").strip().lower()
if TRAINING not in TRAINING_MODES:
    raise SystemExit(f"STEER_TRAINING must be one of {', '.join(TRAINING_MODES)}, got {TRAINING!r}")
# Requests that may wait before the next is told the demo is busy, and one visitor's requests waiting or running at
# once (under the Compare's slots, so one visitor never holds them all); 0 = no bound, the default off a Space.
QUEUE_SIZE = int(os.environ.get("STEER_QUEUE_SIZE", "16" if ON_SPACE else "0"))
PER_CLIENT = int(os.environ.get("STEER_PER_CLIENT", "2" if ON_SPACE else "0"))


def limit_malloc_arenas(n: int = 2) -> None:
    """glibc gives each thread that allocates its own memory arena, and an arena keeps its peak: every new worker
    thread that runs a request grows the server's memory (experiments/space_flood.py, four floods of 50 requests:
    1,490, 1,726, 1,854, 1,924 MB with no cap; 1,554, 1,744, 1,620, 1,615 MB with two; with two and
    trim_after_each_request, six floods read 1,281 to 1,290 MB). MALLOC_ARENA_MAX, when set, decides instead."""
    if os.environ.get("MALLOC_ARENA_MAX"):
        return
    libc = _libc()
    if libc is not None and hasattr(libc, "mallopt"):
        libc.mallopt(-8, n)  # M_ARENA_MAX, before the server's threads start


def _libc():
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc
        return None


def trim_after_each_request(demo) -> None:
    """Hand freed memory back to the system when a request finishes. A reply's tensors are freed into glibc's
    arenas, which keep their pages: a flood that ran in new threads left the server 100 MB larger on one round in
    four even with two arenas (CI, 2026-12-05). malloc_trim(0) after each request keeps the resident size what the
    server holds. Wraps the queue's process_events (gradio 6 looks it up on the queue for every batch)."""
    libc = _libc()
    if libc is None or not hasattr(libc, "malloc_trim"):
        return
    import anyio

    queue = demo._queue
    process = queue.process_events

    async def process_then_trim(*args, **kwargs):
        try:
            return await process(*args, **kwargs)
        finally:
            await anyio.to_thread.run_sync(libc.malloc_trim, 0)

    queue.process_events = process_then_trim


def lm():
    """The loaded model (loaded once per process, then cached by steer_core)."""
    return load_model(MODEL, device=DEVICE, adapter=adapter_choice(ADAPTER))


def warm_prefixes_in_background(model) -> threading.Thread | None:
    """Read every level's Compare prompt prefixes (the system turn, the few-shot examples) into steer_core's
    prefix cache, and pack the weights for decoding, in a background thread after the start (4 s of CPU on 2
    cores), so the first visitor at a
    level waits for their own question only. On a CPU only: under ZeroGPU the model reaches a GPU inside a
    request."""
    if model.device.type != "cpu":
        return None
    from steer_core.views.compare import warm_prefixes

    def warm():
        try:
            warm_prefixes(model)
        except Exception:  # a cache left cold only costs the first visitor time; never the server
            logging.getLogger(__name__).warning("warming the prompt prefixes failed", exc_info=True)

    thread = threading.Thread(target=warm, name="warm-prefixes", daemon=True)
    thread.start()
    return thread
