"""`python -m steer_core bench`: the project's performance figures, as ratios measured in one run.

Every generation timing forces the same number of new tokens (stop tokens ignored), is preceded
by a warm-up, and the variants take turns round by round (interleaved), so that a busy moment of a
shared machine slows all of them alike. A ratio is the median over rounds of the variant's time over
the unsteered time of the same round; `_range` gives the lowest and highest round.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import replace

import torch

from .generation import VIEWS, Request, generate_batch, stream_batch
from .native import cpuinfo_line
from .paths import DEFAULT_MODEL, ROOT
from .prefix_cache import PREFIXES
from .steering.config import SteerConfig
from .views.compare import CompareRequest, compare_stream
from .views.ladder import ladder_rows, ladder_stream
from .views.rows import row_request

Q = "A recipe for 4 people uses 300 g of flour. How much flour is needed for 6 people?"
A = "450 g, because 300 divided by 4 is 75 and 75 times 6 is 450."


def interleaved(fns: dict, repeats: int) -> dict[str, list[float]]:
    """Seconds of each function per round, the functions taking turns (A B C A B C ...) after one
    warm-up each, so that noise on a shared machine hits all of them alike."""
    for fn in fns.values():
        fn()  # warm-up: first-call allocations, lazy loads
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


def ratio_spread(times: dict[str, list[float]], name: str, base: str = "none") -> tuple[float, float, float]:
    """(median, lowest, highest) over rounds of name's time over base's time in the same round."""
    ratios = [t / b for t, b in zip(times[name], times[base])]
    return statistics.median(ratios), min(ratios), max(ratios)


def first_token_s(lm, reqs, repeats: int, cold: bool = False, every_row: bool = False) -> float:
    """Median wall time until the first streamed token of a batch, as the app streams it: the first word on screen
    (the rows whose prompt is read first). cold: with the prompt-prefix cache emptied first (a prefix nobody read
    yet: another prompt style or number of examples than the app reads at start). every_row: until every row has
    its first token (every prompt read)."""
    out, views = [], {**VIEWS, "first_words": not every_row}
    for _ in range(repeats + 1):
        if cold:
            PREFIXES.forget()
        t0 = time.perf_counter()
        for _outs in stream_batch(lm, reqs, max_new_tokens=2, **views):
            break
        out.append(time.perf_counter() - t0)
    return statistics.median(out[1:])


def _step_gaps(lm, reqs, tokens: int) -> list[float]:
    """The times between one batch's streamed tokens (the first gap, which still holds the prefill, left out)."""
    stamps = [time.perf_counter() for _outs in stream_batch(lm, reqs, max_new_tokens=tokens, ignore_stop=True, **VIEWS)]
    return [b - a for a, b in zip(stamps[1:], stamps[2:])]


def weight_bytes(lm) -> int:
    """Bytes of the weights one decoding step reads, as loaded: every Linear's weight and bias (the output
    layer's too, where it shares the embedding's storage; an adapter's own small matrices too), each tensor
    counted once. The embedding is read one row a token and left out."""
    seen, total = set(), 0
    for m in lm.model.modules():
        if isinstance(m, torch.nn.Linear):
            for p in (m.weight, m.bias):
                if p is not None and p.data_ptr() not in seen:
                    seen.add(p.data_ptr())
                    total += p.numel() * p.element_size()
    return total


def read_buffer(mb: int = 512) -> torch.Tensor:
    """A buffer far larger than any cache, for read_bandwidth_gb_s (made once by a caller that reads it often)."""
    return torch.ones(mb * 2**20 // 4)


def read_bandwidth_gb_s(x: torch.Tensor | None = None, repeats: int = 3) -> float:
    """The machine's memory read bandwidth as this process sees it now: summing `x` (read_buffer's), with torch's
    threads, the best of repeats + 1 reads."""
    x = read_buffer() if x is None else x
    best = float("inf")
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        x.sum()
        best = min(best, time.perf_counter() - t0)
    return x.numel() * x.element_size() / best / 1e9


def decode_floor(lm, reqs, tokens: int, repeats: int) -> dict:
    """How far one unsteered decoding step is from the machine's own limit: the weight-streaming floor (the bytes
    a step reads over the read bandwidth) and the step's ratio to it. The bandwidth is read right after each
    reply, and a round's ratio is its reply's median step over the floor of the bandwidth read with it: on a
    shared machine the bandwidth a neighbour leaves moves within minutes (25 to 60 GB/s on one AMD EPYC), and a
    step of one moment over the best bandwidth of another is no ratio."""
    size, buffer, gaps, steps, bandwidths = weight_bytes(lm), read_buffer(), [], [], []
    for _ in range(repeats):
        reply = _step_gaps(lm, reqs, tokens)
        gaps += reply
        steps.append(statistics.median(reply))
        bandwidths.append(read_bandwidth_gb_s(buffer))
    ratios = [step * gb_s * 1e9 / size for step, gb_s in zip(steps, bandwidths)]
    gb_s = statistics.median(bandwidths)
    return {
        "decode_step_ms": round(statistics.median(gaps) * 1e3, 2),
        "weight_mb": round(size / 2**20, 1),
        "read_gb_s": round(gb_s, 1),
        "read_gb_s_range": [round(min(bandwidths), 1), round(max(bandwidths), 1)],
        "decode_floor_ms": round(size / (gb_s * 1e9) * 1e3, 2),
        "decode_floor_ratio": round(statistics.median(ratios), 2),
        "decode_floor_ratio_range": [round(min(ratios), 2), round(max(ratios), 2)],
    }


def peak_rss_mb() -> float:
    import resource

    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(kb / 1024 if sys.platform != "darwin" else kb / 2**20, 1)


def cold_start_s(model: str = DEFAULT_MODEL) -> float:
    """Wall time from launching a fresh interpreter to model + default SAEs ready (caches warm)."""
    code = (
        "from steer_core.model.loading import load_model; from steer_core.sae.store import STORE; "
        f"from steer_core.steering.config import SteerConfig; lm = load_model({model!r}); "
        "[STORE.get(lm, layer) for layer in SteerConfig().layers]"
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


def cold_starts(model: str, launches: int) -> dict:
    """cold_start_s's median over `launches` launches, with the lowest and highest: one launch on a shared
    machine read 9.8 s where six that followed read 5.6 to 6.8."""
    times = [cold_start_s(model) for _ in range(launches)]
    return {
        "cold_start_s": round(statistics.median(times), 2),
        "cold_start_s_range": [round(min(times), 2), round(max(times), 2)],
    }


def sae_train_seconds(lm, layer: int, epochs: int | None = None) -> tuple[float, float]:
    """(capture seconds, SAE training seconds) for all heads of one layer with the train defaults."""
    from .fit.sae_training import capture_train_queries
    from .sae.module import SAETrainConfig, train_head_saes

    t0 = time.perf_counter()
    cap = capture_train_queries(lm, [layer], progress=False)
    capture = time.perf_counter() - t0
    cfg = SAETrainConfig() if epochs is None else SAETrainConfig(epochs=epochs)
    t0 = time.perf_counter()
    train_head_saes(cap.queries[layer].float(), cfg, progress=False)
    return capture, time.perf_counter() - t0


def card_open_s(lm) -> dict:
    """Opening a latent's card as the Latents tab does (HTML and chart), first in a process (its layer's cards and
    SAEs read from disk) and then another latent of the same layer; {} for a model without cards."""
    from .caches import caches
    from .errors import UserError
    from .views.latents import card_figure, card_html, open_card

    for name in ("latent cards", "SAE layers"):
        caches()[name].forget()
    out = {}
    for key, latent in (("card_open_cold_s", 10), ("card_open_s", 11)):
        t0 = time.perf_counter()
        try:
            card = open_card(lm, lm.middle_layer, 0, latent)
        except UserError:  # no cards built for this model
            return {}
        card_html(card), card_figure(card).to_json()
        out[key] = round(time.perf_counter() - t0, 3)
    return out


def compare_click(lm, req: CompareRequest, again: bool = False) -> tuple[float, float]:
    """One whole Compare click as the app serves it: the batch (stop tokens ignored, so every round does the same
    work), the judge (its verdicts and chart shown), the inspection (one steered and one unsteered replay), the
    charts and the report file. Returns the seconds the inspection took and those until the verdicts were shown. A
    new question's click (the ratio targets' figure) reuses nothing; again: the same click once more, whose
    unsteered and few-shot replies, and its plain prompt's read, are those kept from the last."""
    t0, judged = time.perf_counter(), None
    for result in compare_stream(lm, req, ignore_stop=True, reuse=again):
        if result.done and judged is None:
            result.judge_chart().to_json()
            judged = time.perf_counter() - t0
    result.figures()
    result.attention_html()
    os.unlink(result.write_report(lm.label))
    return result.inspection.seconds, judged


def ladder_click(lm, req: CompareRequest) -> float:
    """One whole ladder click as the app serves it: the batch (stop tokens ignored), the judge and the chart (shown
    judged), then the perplexities and the report files. Returns the seconds until the judged chart was made."""
    t0 = time.perf_counter()
    charted = None
    for result in ladder_stream(lm, req, ignore_stop=True, reuse=False):  # a new question's: nothing kept taken
        if result.done:  # the app draws it at both yields, judged and whole
            result.chart().to_json()
            charted = time.perf_counter() - t0 if charted is None else charted
    for path in result.write_files(lm.label):
        os.unlink(path)
    return charted


RATIOS = (  # (output key, timed variant): each variant's time over the unsteered time of the same round
    ("sae_overhead_ratio", "sae_one"),
    ("sae_band_overhead_ratio", "sae_band"),
    ("query_band_overhead_ratio", "query_band"),
    ("compare4_ratio", "compare4"),
    ("compare_click_ratio", "compare_click"),
    ("compare_click_again_ratio", "compare_click_again"),
    ("compare4_delta_ratio", "compare4_delta"),
    ("ladder_ratio", "ladder"),
    ("ladder_click_ratio", "ladder_click"),
)


def bench_batches(compare: CompareRequest, band: SteerConfig, one: SteerConfig) -> dict[str, list[Request]]:
    """The generation batches timed against each other, named as `RATIOS` names them: the Compare tab's and the
    ladder's are built exactly as the app builds them, so the figures are the app's own."""
    return {
        "none": [Request(Q, A, "none")],
        "sae_one": [Request(Q, A, "sae", "analyze", steer=one)],
        "sae_band": [Request(Q, A, "sae", "analyze", steer=band)],
        "query_band": [Request(Q, A, "query", "analyze", steer=band)],
        "compare4": compare.requests(),  # exactly the app's batch
        # the same batch with the delta target (a closed-form descent), beside the default's learned
        # offsets (an addition, no descent): what a descent target costs
        "compare4_delta": replace(compare, target="delta").requests(),
        "ladder": [row_request(compare, row) for row in ladder_rows()],  # exactly the ladder's batch
    }


def device_label(lm) -> str:
    """The device the figures were measured on, with what makes them comparable: the GPU's name, or the CPU's model
    and the threads torch used (one machine's figures are not another's: an AMD EPYC's prompt reads took twice an
    Intel Xeon's)."""
    if lm.device.type == "cuda":
        return f"{lm.device} ({torch.cuda.get_device_name(lm.device)})"
    return f"{lm.device} ({cpu_model()}, {torch.get_num_threads()} threads)"


def cpu_model() -> str:
    """The CPU's model name as the system gives it (/proc/cpuinfo), else the platform's processor or machine."""
    line = cpuinfo_line("model name")
    return line.split(":", 1)[1].strip() if line else platform.processor() or platform.machine()


def ratio_figures(times: dict[str, list[float]]) -> dict:
    """Each of `RATIOS`: the median ratio and, as `_range`, the lowest and highest round."""
    out = {}
    for key, name in RATIOS:
        mid, lo, hi = ratio_spread(times, name)
        out[key] = round(mid, 3)
        out[key + "_range"] = [round(lo, 3), round(hi, 3)]  # lowest and highest round
    return out


def run_bench(
    lm, tokens: int = 64, repeats: int = 3, layer: int | None = None, train: bool = True, cold_start: bool = True
) -> dict:
    """Every figure of `python -m steer_core bench`, as one dict in the order the JSON prints it. The batches and
    the whole Compare click take turns round by round (`interleaved`); the one-off timings (first token, cold start,
    SAE training) follow."""
    from .charts import white_by_default

    white_by_default()  # as the app starts: its charts made in their template
    layer = lm.middle_layer if layer is None else layer
    band = SteerConfig()
    compare = CompareRequest(question=Q, student_answer=A, level="analyze", max_new_tokens=tokens)
    batches = bench_batches(compare, band, SteerConfig(layers=(layer,)))
    clicks: list[tuple[float, float]] = []  # (the inspection's seconds, those until the verdicts showed)
    fns = {
        name: (lambda reqs=reqs: generate_batch(lm, reqs, max_new_tokens=tokens, ignore_stop=True, **VIEWS))
        for name, reqs in batches.items()
    }
    fns["compare_click"] = lambda: clicks.append(compare_click(lm, compare))
    fns["compare_click_again"] = lambda: compare_click(lm, compare, again=True)
    charted: list[float] = []
    fns["ladder_click"] = lambda: charted.append(ladder_click(lm, compare))
    times = interleaved(fns, repeats)
    med = {name: statistics.median(t) for name, t in times.items()}
    out = {
        "device": device_label(lm),
        "model": lm.label,
        "new_tokens": tokens,
        "repeats": repeats,
        "unsteered_tok_s": round(tokens / med["none"], 2),
        # the performance target is stated for all heads of one layer
        "sae_steered_tok_s": round(tokens / med["sae_one"], 2),
        "layer": layer,
        # the app's default: all heads of the default layers
        "sae_band_tok_s": round(tokens / med["sae_band"], 2),
        "band": f"{band.layers[0]}-{band.layers[-1]}",
        **ratio_figures(times),
    }
    out["compare_click_s"] = round(med["compare_click"], 2)  # the whole click: generation, judge, views, report
    out["compare_click_again_s"] = round(med["compare_click_again"], 2)  # the same click again (reply_cache)
    clicks = clicks[1:] or clicks  # the first was the warm-up
    out["compare_views_s"] = round(statistics.median(c[0] for c in clicks), 2)  # its inspection replays alone
    out["compare_judged_s"] = round(statistics.median(c[1] for c in clicks), 2)  # until its verdicts show
    out["ladder_click_s"] = round(med["ladder_click"], 2)  # the whole ladder: batch, judge, perplexities, files
    out["ladder_chart_s"] = round(statistics.median(charted[1:] or charted), 2)  # until its judged chart shows
    out["first_token_compare4_s"] = round(first_token_s(lm, batches["compare4"], repeats), 3)
    # the few-shot row's first word: its prompt is read after the plain prompt's rows showed theirs
    out["first_token_compare4_all_s"] = round(first_token_s(lm, batches["compare4"], repeats, every_row=True), 3)
    out["first_token_compare4_cold_s"] = round(first_token_s(lm, batches["compare4"], repeats, cold=True), 3)
    out["first_token_ladder_s"] = round(first_token_s(lm, batches["ladder"], repeats), 3)
    out |= decode_floor(lm, batches["none"], tokens, repeats)
    out |= card_open_s(lm)
    if cold_start:
        out |= cold_starts(lm.name, min(repeats, 3))
    if train:
        capture, fit = sae_train_seconds(lm, layer)
        out["query_capture_s"] = round(capture, 2)
        out["sae_train_s_per_layer"] = round(fit, 2)
    out["peak_rss_mb"] = peak_rss_mb()
    return out
