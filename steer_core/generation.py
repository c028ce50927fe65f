"""Generation of every method's feedback (methods.py: the unsteered reply, the steered ones, the prompt
baselines), in one batch.

A hand-written decoding loop (greedy by default, seeded sampling optional) over a KV cache, so
that rows of one batch can use different methods and levels, every forward knows whether it is
reading the prompt or generated tokens (the `positions` option), and all rows stream together.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch

from . import methods
from .bloom import LEVELS, FeedbackExample, load_dataset, normalize_level
from .caches import ProcessCache
from .errors import UserError
from .model.hooks import RESIDUAL, query_edits
from .prompts import DEFAULT_STYLE, fewshot_messages, instruction_messages, messages, pick_fewshot, render
from .sae.store import STORE, layer_roots
from .steering.config import SteerConfig
from .steering.edits import RowGroup, make_layer_edit, make_residual_edit
from .steering.offset_files import load_offsets, manifest_digest

MAX_INPUT_CHARS = 4000
MAX_NEW_TOKENS = 512
REPLY_TOKENS = 80  # the demo's and the CLI's default reply length
EVAL_TOKENS = 64  # every evaluation table was measured at this length
K_SHOTS = 3  # few-shot examples in the prompt
SEED = 0  # generation is greedy unless sampling is asked for; the seed of its sampler
MAX_BATCH = 96  # rows of one generation batch when many are run (eval, sweep, instructed replies)


def check_inputs(question, student_answer) -> None:
    """The question and answer a reply is written for: printable text, within the length limit."""
    for label, text in (("question", question), ("student answer", student_answer)):
        if not isinstance(text, str) or not any(c.isprintable() and not c.isspace() for c in text):
            raise UserError(f"The {label} is empty (no visible text).")
        if len(text) > MAX_INPUT_CHARS:
            raise UserError(f"The {label} is too long ({len(text):,} characters; the limit is {MAX_INPUT_CHARS:,}).")


@dataclass
class Request:
    """One row of a batch: what to ask, how to steer, toward which level."""

    question: str
    student_answer: str
    method: str = "none"
    level: str | None = None  # the target level; None for unsteered rows, which have none
    steer: SteerConfig | None = None
    k_shots: int = K_SHOTS
    style: str = DEFAULT_STYLE
    scenario_id: str | None = None  # excluded from few-shot examples

    def __post_init__(self):
        if self.method not in methods.ALL:
            raise UserError(f"unknown method {self.method!r}; choose one of {', '.join(methods.ALL)}")
        if self.level is not None:
            self.level = normalize_level(self.level)
        elif self.method != "none":
            raise UserError(f"method {self.method!r} needs a target level")
        check_inputs(self.question, self.student_answer)
        if self.method in methods.STEERED:
            self.steer = (self.steer or SteerConfig()).for_method(self.method)
        else:
            self.steer = None


@dataclass
class Output:
    text: str
    method: str
    level: str
    new_tokens: int
    seconds: float
    token_ids: list[int] = field(default_factory=list)


_POOL = ProcessCache("few-shot examples")


def _fewshot_pool() -> list[FeedbackExample]:
    return _POOL.get("train", lambda: load_dataset(split="train"))


def build_messages(req: Request) -> list[dict]:
    if req.method == "fewshot":
        shots = pick_fewshot(_fewshot_pool(), req.level, req.k_shots, exclude_scenario=req.scenario_id)
        return fewshot_messages(req.question, req.student_answer, shots, req.style)
    if req.method == "instruction":
        return instruction_messages(req.question, req.student_answer, req.level, req.style)
    return messages(req.question, req.student_answer, req.style)


def steering_groups(lm, requests: Sequence[Request]) -> dict:
    """site -> row groups sharing one SteerConfig and prompt style, each with its layer's bank (a site
    is a layer's queries, or ("residual", layer) for the residual-stream baseline). Layers and heads
    are checked here, before any generation starts."""
    by_cfg: dict[tuple, list[int]] = {}
    for i, r in enumerate(requests):
        if r.steer is not None and r.steer.method != "none":
            by_cfg.setdefault((r.steer, r.style), []).append(i)
    out: dict = {}
    for (_, style), rows in by_cfg.items():
        cfg = requests[rows[0]].steer
        row_idx = torch.tensor(rows, device=lm.device)
        levels = torch.tensor([LEVELS.index(requests[i].level) for i in rows], device=lm.device)
        if cfg.method in methods.AT_RESIDUAL:
            vectors = load_offsets(lm, cfg.residual_dir, style, site="residual")
            for layer in cfg.layers:
                group = RowGroup(row_idx, levels, cfg, offsets=vectors.for_layer(lm.check_layer(layer)))
                out.setdefault((RESIDUAL, layer), []).append(group)
            continue
        learned = None
        if cfg.method == "sae" and cfg.target_spec.needs_offsets:  # before loading SAEs: say what is missing
            learned = load_offsets(lm, cfg.offsets_dir, style)
            for layer in cfg.layers:
                learned.for_layer(lm.check_layer(layer))
        banks = STORE.get_many(lm, cfg.layers, style=style, root=cfg.saes_dir)
        if learned is not None:
            if cfg.saes_dir is None:
                banks = _banks_of(lm, learned, banks, style)
            learned.check_matches(banks)
        for layer, bank in banks.items():
            heads = cfg.heads_at(layer)
            heads = lm.check_heads("all" if heads is None else list(heads))
            head_idx = None if len(heads) == lm.n_heads else torch.tensor(heads, device=lm.device)
            offsets = None if learned is None else learned.for_layer(layer)
            out.setdefault(layer, []).append(RowGroup(row_idx, levels, cfg, bank, heads=head_idx, offsets=offsets))
    return out


def _banks_of(lm, learned, banks: dict, style: str) -> dict:
    """Offsets are codes of the SAEs they were fitted for: a layer whose newest SAEs (say, retrained in
    the Train tab) are others steers with the ones the offsets were fitted for, while those are still
    on disk (the shipped ones); descent targets use the newest."""
    want = learned.meta.get("sae_manifests", {})
    out = dict(banks)
    for layer, bank in banks.items():
        if str(layer) not in want or manifest_digest(bank.meta) == want[str(layer)]:
            continue
        for root in layer_roots(lm, style)[1:]:
            if (root / f"layer_{layer}" / "layer.json").is_file():
                other = STORE.get(lm, layer, style, root=root)
                if manifest_digest(other.meta) == want[str(layer)]:
                    out[layer] = other
                    break
    return out


def layer_edits(lm, groups: dict, phase: str, start: int = 0) -> dict:
    edits = {
        site: make_residual_edit(gs, phase, start)
        if isinstance(site, tuple)
        else make_layer_edit(gs, phase, lm.n_heads, lm.head_dim, start)
        for site, gs in groups.items()
    }
    return {site: e for site, e in edits.items() if e is not None}


def stream_batch(
    lm,
    requests: Sequence[Request],
    max_new_tokens: int = REPLY_TOKENS,
    seed: int = SEED,
    temperature: float = 0.0,
    top_p: float = 1.0,
    ignore_stop: bool = False,
) -> Iterator[list[Output]]:
    """Generate all requests together; yield the outputs so far after every new token.
    ignore_stop: always generate max_new_tokens (benchmarks compare equal work)."""
    if not requests:
        return
    _check_decoding(max_new_tokens, temperature, top_p)
    tok = lm.tokenizer
    device = lm.device
    groups = steering_groups(lm, requests)  # checks layers and heads (and loads their SAEs) before any work
    prompts = [render(tok, build_messages(r))[0] for r in requests]
    B, W = len(prompts), max(len(p) for p in prompts)
    mask = torch.zeros((B, W), dtype=torch.long)
    for i, p in enumerate(prompts):
        mask[i, W - len(p) :] = 1  # left padding
    mask = mask.to(device)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    eos = tok.eos_token_id
    # Chat models end a turn with their EOS, but a fine-tuned one may open the next turn instead.
    stops = torch.tensor(sorted({eos, *tok.all_special_ids} - {None}), device=device)
    done = torch.zeros(B, dtype=torch.bool, device=device)
    new_ids: list[list[int]] = [[] for _ in range(B)]
    t0 = time.time()

    warpers = _sampling_warpers(temperature, top_p)
    inp = None  # the previous step's tokens
    cache, first_logits = _prefill(lm, requests, prompts, W, max_new_tokens)
    decode_edits = layer_edits(lm, groups, "generated")
    # configs that steer only the reply's opening need edits that know which token a step runs
    opening_only = any(g.cfg.first_tokens is not None for gs in groups.values() for g in gs)
    position_ids = torch.tensor([[len(p)] for p in prompts], device=device)
    for step in range(max_new_tokens):
        if step == 0:
            logits = first_logits
        else:
            if opening_only:
                decode_edits = layer_edits(lm, groups, "generated", start=step - 1)  # step s runs token s-1
            with torch.no_grad(), query_edits(lm, decode_edits):
                out = lm.model(
                    input_ids=inp,
                    attention_mask=mask,
                    position_ids=position_ids,
                    past_key_values=cache,
                    use_cache=True,
                    logits_to_keep=1,
                    cache_position=position_ids.new_tensor([W + step - 1]),
                )
            logits = out.logits[:, -1, :].float()
            position_ids = position_ids + 1
        if temperature > 0:
            scores = warpers(None, logits.cpu())
            nxt = torch.multinomial(torch.softmax(scores, dim=-1), 1, generator=gen).squeeze(-1).to(device)
        else:
            nxt = logits.argmax(-1)
        nxt = torch.where(done, torch.full_like(nxt, eos), nxt)
        is_stop = torch.isin(nxt, stops) & (not ignore_stop)
        for i in range(B):
            if not done[i] and not is_stop[i]:
                new_ids[i].append(int(nxt[i]))
        done |= is_stop
        elapsed = time.time() - t0
        yield [
            Output(tok.decode(n, skip_special_tokens=True).strip(), r.method, r.level, len(n), elapsed, n)
            for r, n in zip(requests, new_ids)
        ]
        if bool(done.all()):
            break
        inp = nxt[:, None]
        mask = torch.cat([mask, torch.ones((B, 1), dtype=mask.dtype, device=device)], dim=1)


def _check_decoding(max_new_tokens, temperature, top_p) -> None:
    if (
        isinstance(max_new_tokens, bool)
        or not isinstance(max_new_tokens, int)
        or not 1 <= max_new_tokens <= MAX_NEW_TOKENS
    ):
        raise UserError(f"max new tokens must be an integer from 1 to {MAX_NEW_TOKENS}")
    if not (math.isfinite(temperature) and temperature >= 0):
        raise UserError("temperature must be a finite number >= 0")
    if not (isinstance(top_p, (int, float)) and 0 < top_p <= 1):
        raise UserError("top_p must be a number in (0, 1]")


def _sampling_warpers(temperature: float, top_p: float):
    """transformers' own temperature and nucleus warpers, so sampling means what it means in generate()."""
    from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopPLogitsWarper

    warpers = LogitsProcessorList()
    if temperature > 0:
        warpers.append(TemperatureLogitsWarper(temperature))
        if top_p < 1.0:
            warpers.append(TopPLogitsWarper(top_p))
    return warpers


def shared_prompt(model, prompt: Sequence[int], n: int, device):
    """Run one prompt once and repeat its key/value cache for n rows that all continue it (the rows'
    replies then cost only their own tokens). Returns (the prompt's output, the repeated cache);
    gradients flow through the cache unless the caller disables them."""
    from transformers import DynamicCache

    out = model(input_ids=torch.tensor([list(prompt)], device=device), past_key_values=DynamicCache(), use_cache=True)
    cache = out.past_key_values
    cache.batch_repeat_interleave(n)
    return out, cache


def replay(lm, prompt: Sequence[int], reply: Sequence[int], phase_edits):
    """Teacher-force a prompt and a reply as generation's two phases (the prompt's forward, then the
    reply's), with phase_edits(phase) -> {site: edit} active in each, so that a view of a reply sees
    exactly the steering that wrote it. Returns the cache (the keys of every position)."""
    from transformers import DynamicCache

    cache = DynamicCache()
    for phase, ids in (("prompt", list(prompt)), ("generated", list(reply))):
        if not ids:
            continue
        with query_edits(lm, phase_edits(phase)):
            lm.model(input_ids=torch.tensor([ids], device=lm.device), past_key_values=cache, use_cache=True)
    return cache


def _prompt_steering(req: Request):
    """What a row's prompt forward depends on besides its tokens: its steering, if that reaches the
    prompt (None otherwise). Rows with the same tokens and the same key read the prompt identically."""
    if req.steer is None or req.steer.steered_count("prompt") == 0:
        return None
    return (req.steer, req.level, req.style)


@torch.no_grad()
def _prefill(lm, requests: Sequence[Request], prompts: list[list[int]], width: int, max_new_tokens: int):
    """Read each distinct prompt once (the Compare batch's unsteered, SAE and query rows share one),
    distinct prompts of equal length together (no padding, so a long few-shot prompt does not make
    every row pay for its length), then join the KV caches left-padded to `width`, one row per request.
    Returns (cache, last-position logits in row order)."""
    from transformers import DynamicCache, StaticCache

    first: dict[tuple, int] = {}  # (tokens, prompt steering) -> the first row that reads it
    source = [first.setdefault((tuple(p), _prompt_steering(r)), i) for i, (r, p) in enumerate(zip(requests, prompts))]
    by_len: dict[int, list[int]] = {}
    for i in first.values():
        by_len.setdefault(len(prompts[i]), []).append(i)
    parts = []  # (rows, cache, last logits) per length
    for rows in by_len.values():
        sub = [requests[i] for i in rows]
        ids = torch.tensor([prompts[i] for i in rows], device=lm.device)
        with query_edits(lm, layer_edits(lm, steering_groups(lm, sub), "prompt")):
            # logits_to_keep=1: the vocabulary projection of every prompt position would cost more
            # than the rest of the prefill
            out = lm.model(input_ids=ids, past_key_values=DynamicCache(), use_cache=True, logits_to_keep=1)
        parts.append((rows, out.past_key_values, out.logits[:, -1, :].float()))
    at = {i: n for n, i in enumerate(i for rows, _, _ in parts for i in rows)}  # read row -> place in the join
    gather = torch.tensor([at[s] for s in source], device=lm.device)
    logits = torch.cat([last for _, _, last in parts])[gather]
    # One preallocated cache for the whole generation: a growing cache re-copies every row's keys
    # and values at each step, which for a batch with a long few-shot prompt cost more than the
    # model's own matmuls (torch.profiler: aten::cat 38% of the time).
    cache = StaticCache(config=lm.model.config, max_cache_len=width + max_new_tokens)
    positions = torch.arange(width, device=lm.device)
    for layer in range(len(parts[0][1].layers)):
        ks, vs = [], []
        for _, c, _ in parts:
            k, v = c.layers[layer].keys, c.layers[layer].values  # (rows, kv_heads, len, dim)
            pad = width - k.shape[2]
            ks.append(torch.nn.functional.pad(k, (0, 0, pad, 0)))
            vs.append(torch.nn.functional.pad(v, (0, 0, pad, 0)))
        cache.update(torch.cat(ks)[gather], torch.cat(vs)[gather], layer, {"cache_position": positions})
    return cache, logits


def generate_batch(lm, requests: Sequence[Request], **kw) -> list[Output]:
    outputs: list[Output] = []
    for outputs in stream_batch(lm, requests, **kw):  # noqa: B007 - the last yield is the result
        pass
    return outputs


@torch.no_grad()
def perplexity(lm, question: str, student_answer: str, token_ids: Sequence[int], style: str = DEFAULT_STYLE) -> float:
    """Perplexity of generated tokens under the unsteered model, given the base prompt."""
    if not token_ids:
        return float("nan")
    prompt, _ = render(lm.tokenizer, messages(question, student_answer, style))
    ids = torch.tensor([prompt + list(token_ids)], device=lm.device)
    logits = lm.model(input_ids=ids, use_cache=False).logits[0, len(prompt) - 1 : -1].float()
    nll = torch.nn.functional.cross_entropy(logits, ids[0, len(prompt) :])
    return float(torch.exp(nll))
