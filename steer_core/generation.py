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
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from . import methods
from .bloom import normalize_level
from .errors import UserError
from .model import lean_step
from .model.attention_kernel import PROMPT_COPIES, PromptCopies
from .model.hooks import active_edits, dispatchers_held, query_edits
from .model.recording import RowRecording, recorder
from .prefix_cache import READS, PromptRead, cache_over, prefix_kv, read_key
from .prompts import DEFAULT_STYLE, render, shared_prefix
from .steering.assets import steering_groups
from .steering.config import PLAIN, SteerConfig
from .steering.edits import layer_edits
from .steering.files import MODEL_OWN, SteerFiles

MAX_INPUT_CHARS = 4000
MAX_NEW_TOKENS = 512
REPLY_TOKENS = 80  # the demo's and the CLI's default reply length
EVAL_TOKENS = 64  # every evaluation table was measured at this length
K_SHOTS = 3  # few-shot examples in the prompt
SEED = 0  # generation is greedy unless sampling is asked for; the seed of its sampler
MAX_BATCH = 96  # rows of one generation batch when many are run (eval, sweep, instructed replies)
# How the interactive views generate (stream_batch): prompts read after their cached prefix, attention over each
# row's own positions. Both agree with the plain way to float32 rounding, not bit for bit: evaluation uses neither.
# And each row's first word shown as soon as its prompt is read (the same tokens; only when they are shown changes).
VIEWS = {"prefix_cache": True, "own_positions": True, "first_words": True}


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
    files: SteerFiles = MODEL_OWN  # the folders it steers with (the model's own unless given)
    k_shots: int = K_SHOTS
    style: str = DEFAULT_STYLE
    scenario_id: str | None = None  # excluded from few-shot examples
    # The prompt it runs under: for a steered method, plain or a prompt baseline's (steering on top of it; None:
    # the steer's); other methods run their own. Read back, it is always the prompt the row ran under.
    prompt: str | None = None

    def __post_init__(self):
        m = methods.get(self.method)  # an unknown method is an error, never the plain prompt
        if self.level is not None:
            self.level = normalize_level(self.level)
        elif m.site != methods.NONE:
            raise UserError(f"method {self.method!r} needs a target level")
        check_inputs(self.question, self.student_answer)
        own = methods.own_prompt(self.method)
        if not m.steers:
            if self.prompt not in (None, own):
                raise UserError(
                    f"{m.label} runs its own prompt ({own}); a prompt under the steering is for steered methods "
                    f"({', '.join(methods.steered())})"
                )
            self.steer, self.prompt = None, own
            return
        steer = self.steer or SteerConfig()
        if self.prompt is not None:
            steer = replace(steer, prompt=self.prompt)
        self.steer = steer.for_method(self.method, files=self.files)
        self.prompt = self.steer.prompt

    def messages(self) -> list[dict]:
        """The prompt's messages: the method's entry builds them, or the prompt steered on top of builds its own."""
        return methods.get(self.method if self.prompt == PLAIN else self.prompt).prompt(self)


@dataclass
class Output:
    text: str
    method: str
    level: str
    new_tokens: int
    seconds: float
    token_ids: list[int] = field(default_factory=list)


def stream_batch(
    lm,
    requests: Sequence[Request],
    max_new_tokens: int = REPLY_TOKENS,
    seed: int = SEED,
    temperature: float = 0.0,
    top_p: float = 1.0,
    ignore_stop: bool = False,
    prefix_cache: bool = False,
    own_positions: bool = False,
    record: RowRecording | None = None,
    first_words: bool = False,
    keep_prompts: bool = False,
) -> Iterator[list[Output]]:
    """Generate all requests together; yield the outputs so far after every new token.
    ignore_stop: always generate max_new_tokens (benchmarks compare equal work).
    prefix_cache: read each prompt's shared prefix from prefix_cache.py (the interactive views).
    own_positions: a decoding step's attention reads each row's own positions only, not the padding a longer
    prompt beside it put there (model/attention_kernel.py; the interactive views). Both agree with the plain way to
    float32 rounding, not bit for bit, so the evaluation and the golden rows use neither.
    record: keep one row's queries at one layer as it is generated, then its keys and values (model/recording.py).
    first_words: show each row's first token once its prompt is read, before the other prompts' (_first_words).
    keep_prompts (with prefix_cache): a prompt read before is not read again (_read_group; a Compare clicked again)."""
    if not requests:
        return
    _check_decoding(max_new_tokens, temperature, top_p)
    tok, device = lm.tokenizer, lm.device
    groups = steering_groups(lm, requests)  # checks layers and heads (and loads their files) before any work
    encoded = [_encode(tok, r, prefix_cache) for r in requests]
    prompts = [ids for ids, _ in encoded]
    B, W = len(prompts), max(len(p) for p in prompts)
    mask = torch.tensor([[0] * (W - len(p)) + [1] * len(p) for p in prompts], device=device)  # left padding
    pick = _sampler(temperature, top_p, seed)
    # Chat models end a turn with their EOS, but a fine-tuned one may open the next turn instead.
    stops = torch.tensor(sorted({tok.eos_token_id, *tok.all_special_ids} - {None}), device=device)
    done, new_ids = torch.zeros(B, dtype=torch.bool, device=device), [[] for _ in range(B)]  # each row's tokens
    t0, edits_for = time.time(), _decode_edits(lm, groups, record)
    prefixes = [cut for _, cut in encoded] if prefix_cache else None
    reading = _read_prompts(lm, requests, prompts, W, max_new_tokens, prefixes, record, keep_prompts and prefix_cache)
    early = pick if first_words and temperature <= 0 else None  # greedy: a row's pick does not depend on the others
    cache, logits = yield from _first_words(tok, requests, reading, early, None if ignore_stop else stops, t0)
    position_ids, nxt = torch.tensor([[len(p)] for p in prompts], device=device), None  # nxt: the last step's picks
    with dispatchers_held(lm, list(edits_for(0))):  # the sites the first step edits (later steps edit no others)
        for step in range(max_new_tokens):
            if step > 0:  # step s reads the token chosen at step s-1 (generated token s-1)
                logits = _decode_step(
                    lm, edits_for(step - 1), nxt[:, None], mask, position_ids, cache, W + step - 1, own_positions
                )
                position_ids = position_ids + 1
            nxt = torch.where(done, tok.eos_token_id, pick(logits))
            is_stop = torch.isin(nxt, stops) & (not ignore_stop)
            for i in torch.nonzero(~done & ~is_stop).flatten().tolist():
                new_ids[i].append(int(nxt[i]))
            done |= is_stop
            yield _outputs(tok, requests, new_ids, time.time() - t0)
            if bool(done.all()):
                break
            mask = torch.cat([mask, torch.ones((B, 1), dtype=mask.dtype, device=device)], dim=1)
    if record is not None:  # the recorded row's keys and values, so that the batch's cache can go
        record.keep(cache, W - len(prompts[record.row]), W + len(record.steps))


def _first_words(tok, requests: Sequence[Request], reading, pick, stops: torch.Tensor | None, t0: float):
    """Run the prefill generator `reading` to its end; given the greedy `pick`, yield after each part it reads (but
    the last) every row's reply so far: the first token of the rows read, nothing for the others. The tokens are
    those the first step picks, so only when they are shown changes (one yield more; a sampler draws every row's at
    once, so stream_batch gives none and nothing is shown early). A Compare's plain rows start before its few-shot
    prompt is read. stops: the tokens that end a reply (not shown; None: every token shown). Returns the prefill's
    (cache, logits)."""
    ids: list[list[int]] = [[] for _ in requests]
    hidden = set() if stops is None else set(stops.tolist())
    while True:
        try:
            rows, last = next(reading)
        except StopIteration as finished:
            return finished.value
        if pick is not None:
            for r, token in zip(rows, pick(last).tolist()):
                ids[r] = [] if token in hidden else [token]
            yield _outputs(tok, requests, ids, time.time() - t0)


def _outputs(tok, requests: Sequence[Request], new_ids: list[list[int]], elapsed: float) -> list[Output]:
    """Each row's reply so far, as a view shows it after every token."""
    return [
        Output(tok.decode(n, skip_special_tokens=True).strip(), r.method, r.level, len(n), elapsed, n)
        for r, n in zip(requests, new_ids)
    ]


def _decode_edits(lm, groups: dict, record: RowRecording | None = None):
    """generated token -> the edits a decoding step runs with: built once, unless a config steers only the
    reply's opening, whose edits depend on which token a step runs (record: each step's kept)."""
    if any(g.cfg.first_tokens is not None for gs in groups.values() for g in gs):

        def made(token):
            return layer_edits(lm, groups, "generated", start=token)
    else:
        edits = layer_edits(lm, groups, "generated")

        def made(token):
            return edits

    return made if record is None else lambda token: recorder(made(token), record.layer, record.row, record.steps)


@torch.no_grad()
def _decode_step(
    lm, edits: dict, inp, mask, position_ids, cache, cache_position: int, own_positions: bool = False
) -> torch.Tensor:
    """One decoding forward of the batch's previous tokens under `edits`; the last position's logits. A Llama model
    takes lean_step's path: the same logits bit for bit, without transformers' per-module overhead (own_positions:
    its attention through the attention kernel, see stream_batch; other models ignore it)."""
    with query_edits(lm, edits):
        if lean_step.takes(lm.model):
            return lean_step.decode_logits(
                lm.model, inp, mask, position_ids, cache, own_positions=own_positions
            ).float()
        out = lm.model(
            input_ids=inp,
            attention_mask=mask,
            position_ids=position_ids,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
            cache_position=position_ids.new_tensor([cache_position]),
        )
    return out.logits[:, -1, :].float()


def _sampler(temperature: float, top_p: float, seed: int):
    """logits (rows, vocab) -> the next token of each row: greedy at temperature 0, else seeded sampling with
    transformers' own temperature and nucleus warpers (so sampling means what it means in generate())."""
    if temperature <= 0:
        return _greedy
    from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopPLogitsWarper

    warpers = LogitsProcessorList([TemperatureLogitsWarper(temperature)])
    if top_p < 1.0:
        warpers.append(TopPLogitsWarper(top_p))
    gen = torch.Generator(device="cpu").manual_seed(seed)

    def pick(logits: torch.Tensor) -> torch.Tensor:
        scores = warpers(None, logits.cpu())
        return torch.multinomial(torch.softmax(scores, dim=-1), 1, generator=gen).squeeze(-1).to(logits.device)

    return pick


def _greedy(logits: torch.Tensor) -> torch.Tensor:
    """Each row's first largest logit, as argmax picks it. On the CPU through numpy's argmax: 35 us for seven rows of
    the default model's vocabulary against 337 for torch's max (490 for its argmax), at every step of a batch."""
    if logits.device.type == "cpu" and logits.dtype == torch.float32:
        return torch.from_numpy(np.argmax(logits.detach().numpy(), axis=-1))
    return logits.max(-1).indices  # max's indices are argmax's, in a third of the time


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


def _encode(tok, req: Request, with_prefix: bool) -> tuple[list[int], int]:
    """A row's prompt ids, and (with_prefix) how many of them are its shared prefix (prompts.shared_prefix); 0
    otherwise."""
    msgs = req.messages()
    ids = render(tok, msgs)[0]
    return ids, shared_prefix(tok, msgs, ids) if with_prefix else 0


def _prompt_steering(req: Request):
    """What a row's prompt forward depends on besides its tokens: its steering, if that reaches the
    prompt (None otherwise). Rows with the same tokens and the same key read the prompt identically."""
    if req.steer is None or req.steer.steered_count("prompt") == 0:
        return None
    return (req.steer, req.files, req.level, req.style)


def _prefill(*args, **kw):
    """_read_prompts' (cache, last-position logits in row order), its parts read in silence."""
    reading = _read_prompts(*args, **kw)
    while True:
        try:
            next(reading)
        except StopIteration as finished:
            return finished.value


@torch.no_grad()
def _read_prompts(
    lm,
    requests: Sequence[Request],
    prompts: list[list[int]],
    width: int,
    max_new_tokens: int,
    prefixes: list[int] | None = None,
    record: RowRecording | None = None,
    keep: bool = False,
):
    """Read each distinct prompt once (the Compare batch's unsteered, SAE and query rows share one),
    distinct prompts of equal length together (no padding, so a long few-shot prompt does not make
    every row pay for its length), then join the KV caches left-padded to `width`, one row per request.
    prefixes: each row's shared prefix length; a row whose steering does not reach the prompt then reads
    only the rest, over the prefix's cached keys and values. record: the prompt's queries of its row. keep: a
    prompt read alone is taken from, or kept in, prefix_cache.READS (_read_group).
    A generator: after each group read but the last, it yields (the rows given those prompts, their last-position
    logits) for stream_batch's first words; it returns (cache, last-position logits in row order)."""
    steering = [_prompt_steering(r) for r in requests]
    first: dict[tuple, int] = {}  # (tokens, prompt steering) -> the first row that reads it
    source = [first.setdefault((tuple(p), s), i) for i, (p, s) in enumerate(zip(prompts, steering))]
    groups: dict[tuple, list[int]] = {}  # (prefix, length) -> rows read together
    for i in first.values():
        cut = prefixes[i] if prefixes is not None and steering[i] is None else 0
        groups.setdefault((tuple(prompts[i][:cut]), len(prompts[i])), []).append(i)
    parts = []  # (rows, cache, last logits) per group
    for (prefix, _), rows in groups.items():
        recorded = record is not None and source[record.row] in rows  # the rows read the recorded row's prompt
        at = (record.layer, rows.index(source[record.row])) if recorded else None
        sub, texts = [requests[i] for i in rows], [prompts[i] for i in rows]
        cache, logits, queries = _read_group(lm, sub, texts, prefix, at, keep)
        parts.append((rows, cache, logits))
        if recorded:
            record.prompt, record.prefix = queries, len(prefix)
        if len(parts) < len(groups):
            given = [r for r, s in enumerate(source) if s in rows]
            yield given, parts[-1][2][[rows.index(source[r]) for r in given]]
    at = {i: n for n, i in enumerate(i for rows, _, _ in parts for i in rows)}  # read row -> place in the join
    gather = torch.tensor([at[s] for s in source], device=lm.device)
    logits = torch.cat([last for _, _, last in parts])[gather]
    cache = _joined_cache(lm, [(rows, c) for rows, c, _ in parts], source, width, width + max_new_tokens)
    # rows given one prompt hold copies of its keys and values: the views' attention reads them from one row
    setattr(cache, PROMPT_COPIES, PromptCopies.of(source, width))
    return cache, logits


def _read_group(lm, requests, prompts, prefix: tuple, record_at: tuple | None, keep: bool):
    """A group's prompts (one row each, all as long) read together over their prefix's cached keys and values:
    (cache, last-position logits, the recorded queries or None). record_at: (layer, row of the group) whose queries
    to record. keep: a lone prompt that nothing steers, in a context with no edits of its own, is taken from the
    reads kept (prefix_cache.READS: the very tensors a read gave, so the same replies bit for bit) or its read kept."""
    from transformers import DynamicCache

    edits, kept = layer_edits(lm, steering_groups(lm, requests), "prompt"), []
    layer = None if record_at is None else record_at[0]
    key = held = None
    if keep and len(prompts) == 1 and not edits and not active_edits():
        key = read_key(lm, prompts[0], len(prefix))
        held = READS.peek(key)
        if held is not None and (layer is None or layer in held.queries):
            return cache_over(held.kv, 1), held.logits, held.queries.get(layer)
    ids = torch.tensor([p[len(prefix) :] for p in prompts], device=lm.device)
    past = cache_over(prefix_kv(lm, prefix), len(prompts)) if prefix else DynamicCache()
    if record_at is not None:
        edits = recorder(edits, layer, record_at[1], kept)
    with query_edits(lm, edits):
        # logits_to_keep=1: the vocabulary projection of every prompt position would cost more than the rest
        out = lm.model(input_ids=ids, past_key_values=past, use_cache=True, logits_to_keep=1)
    logits, queries = out.logits[:, -1, :].float(), (kept[0] if kept else None)
    if key is not None:  # held: this prompt's read kept without the layer recorded here; its queries stay
        recorded = {**(held.queries if held is not None else {}), **({layer: queries} if kept else {})}
        kv = tuple((c.keys, c.values) for c in out.past_key_values.layers)
        READS.put(key, PromptRead(kv, logits, recorded))
    return out.past_key_values, logits, queries


def _joined_cache(lm, parts: list, source: list[int], width: int, max_len: int):
    """One preallocated cache for the whole generation, row r holding the keys and values that row source[r] read
    (parts: (rows read together, their cache)), left-padded with zeros to `width`. A growing cache re-copies every
    row's keys and values at each step, which for a batch with a long few-shot prompt cost more than the model's own
    matmuls (torch.profiler: aten::cat 38% of the time). Each part is copied straight to its place: padding,
    joining and reordering the parts first made a Compare's join 32 ms against 14, the same tensors
    (experiments/prefill_join_ab)."""
    from transformers import StaticCache
    from transformers.cache_utils import StaticLayer

    cache = StaticCache(config=lm.model.config, max_cache_len=max_len)
    place = {i: (p, j) for p, (rows, _) in enumerate(parts) for j, i in enumerate(rows)}  # read row -> its part
    fills = []  # per part: (the rows of the join it fills, their rows in the part's cache)
    for p in range(len(parts)):
        dst = [r for r, s in enumerate(source) if place[s][0] == p]
        fills.append(tuple(torch.tensor(x, device=lm.device) for x in (dst, [place[source[r]][1] for r in dst])))
    positions, rows = torch.arange(width, device=lm.device), len(source)
    for n, layer in enumerate(cache.layers):
        k0, v0 = parts[0][1].layers[n].keys, parts[0][1].layers[n].values  # (rows, kv_heads, len, dim)
        in_place = type(layer) is StaticLayer  # filled where it is; another kind (a sliding window) by its update
        if in_place:  # its zeros of (rows, kv_heads, max_len, dim), of which the prompts fill the first `width`
            layer.lazy_initialization(k0.new_empty(rows, *k0.shape[1:]), v0.new_empty(rows, *v0.shape[1:]))
            layer.cumulative_length.fill_(width)
            keys, values = layer.keys[:, :, :width], layer.values[:, :, :width]
        else:
            keys = k0.new_zeros(rows, k0.shape[1], width, k0.shape[3])
            values = v0.new_zeros(rows, v0.shape[1], width, v0.shape[3])
        for (dst, src), (_, c) in zip(fills, parts):  # (index_copy_, about half the time of indexed assignment)
            k, v = c.layers[n].keys, c.layers[n].values
            keys.narrow(2, width - k.shape[2], k.shape[2]).index_copy_(0, dst, k.index_select(0, src))
            values.narrow(2, width - v.shape[2], v.shape[2]).index_copy_(0, dst, v.index_select(0, src))
        if not in_place:
            cache.update(keys, values, n, {"cache_position": positions})
    return cache


def read_prefixes(lm, requests: Sequence[Request]) -> int:
    """Read the shared prompt prefixes of `requests` into the prefix cache without generating (a server warming
    up); rows whose steering reaches the prompt read it whole and have none. Returns how many prefixes."""
    seen = set()
    for r in requests:
        if _prompt_steering(r) is not None:
            continue
        ids, cut = _encode(lm.tokenizer, r, True)
        prefix = tuple(ids[:cut])
        if prefix and prefix not in seen:
            seen.add(prefix)
            prefix_kv(lm, prefix)
    return len(seen)


def generate_batch(lm, requests: Sequence[Request], **kw) -> list[Output]:
    """stream_batch's last outputs."""
    outputs: list[Output] = []
    for outputs in stream_batch(lm, requests, **kw):  # noqa: B007 - the last yield is the result
        pass
    return outputs
