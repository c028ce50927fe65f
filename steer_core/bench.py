"""`python -m steer_core bench`: the project's performance figures, as ratios measured in one run.

Every generation timing forces the same number of new tokens (stop tokens ignored), is preceded
by a warm-up, and is the median of `repeats` runs, so ratios compare equal work on one machine.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from .compare import CompareRequest
from .generation import Request, generate_batch
from .paths import DEFAULT_MODEL
from .steering import SteerConfig

Q = "A recipe for 4 people uses 300 g of flour. How much flour is needed for 6 people?"
A = "450 g, because 300 divided by 4 is 75 and 75 times 6 is 450."
ROOT = Path(__file__).resolve().parent.parent


def _timed(fn, repeats: int) -> float:
    fn()  # warm-up: first-call allocations, lazy loads
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def peak_rss_mb() -> float:
    import resource

    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(kb / 1024 if sys.platform != "darwin" else kb / 2**20, 1)


def cold_start_s(model: str = DEFAULT_MODEL) -> float:
    """Wall time from launching a fresh interpreter to model + default SAEs ready (caches warm)."""
    code = (
        "from steer_core.models import load_model; from steer_core.bank import STORE; "
        f"from steer_core.steering import SteerConfig; lm = load_model({model!r}); "
        "[STORE.get(lm, layer, train_missing=False) for layer in SteerConfig().layers]"
    )
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        check=True,
        capture_output=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    return time.perf_counter() - t0


def sae_train_seconds(lm, layer: int, epochs: int | None = None) -> tuple[float, float]:
    """(capture seconds, SAE training seconds) for all heads of one layer with the train defaults."""
    from .sae import SAETrainConfig, train_head_saes
    from .training import capture_train_queries

    t0 = time.perf_counter()
    cap = capture_train_queries(lm, [layer], progress=False)
    capture = time.perf_counter() - t0
    cfg = SAETrainConfig() if epochs is None else SAETrainConfig(epochs=epochs)
    t0 = time.perf_counter()
    train_head_saes(cap.queries[layer].float(), cfg, progress=False)
    return capture, time.perf_counter() - t0


def run_bench(
    lm, tokens: int = 64, repeats: int = 3, layer: int = 15, train: bool = True, cold_start: bool = True
) -> dict:
    band = SteerConfig()
    one = SteerConfig(layers=(layer,))

    def gen(reqs):
        return lambda: generate_batch(lm, reqs, max_new_tokens=tokens, ignore_stop=True)

    base = Request(Q, A, "none")
    t_none = _timed(gen([base]), repeats)
    t_sae_band = _timed(gen([Request(Q, A, "sae", "analyze", steer=band)]), repeats)
    t_sae_one = _timed(gen([Request(Q, A, "sae", "analyze", steer=one)]), repeats)
    t_query_band = _timed(gen([Request(Q, A, "query", "analyze", steer=band)]), repeats)
    four = CompareRequest(Q, A, "analyze", max_new_tokens=tokens).requests()  # exactly the app's batch
    t_four = _timed(gen(four), repeats)
    out = {
        "device": str(lm.device)
        + (
            f" ({torch.cuda.get_device_name(lm.device)})"
            if lm.device.type == "cuda"
            else f" ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
        ),
        "model": lm.label,
        "new_tokens": tokens,
        "unsteered_tok_s": round(tokens / t_none, 2),
        # the performance target is stated for all heads of one layer
        "sae_steered_tok_s": round(tokens / t_sae_one, 2),
        "sae_overhead_ratio": round(t_sae_one / t_none, 3),
        "layer": layer,
        # the app's default: all heads of the 14-layer band
        "sae_band_tok_s": round(tokens / t_sae_band, 2),
        "sae_band_overhead_ratio": round(t_sae_band / t_none, 3),
        "query_band_overhead_ratio": round(t_query_band / t_none, 3),
        "band": f"{band.layers[0]}-{band.layers[-1]}",
        "compare4_ratio": round(t_four / t_none, 3),
    }
    if cold_start:
        out["cold_start_s"] = round(cold_start_s(lm.name), 2)
    if train:
        capture, fit = sae_train_seconds(lm, layer)
        out["query_capture_s"] = round(capture, 2)
        out["sae_train_s_per_layer"] = round(fit, 2)
    out["peak_rss_mb"] = peak_rss_mb()
    return out
