"""Reading and replacing attention queries at the query site (`q_proj`, or the query norm after it, or the
query's columns of a fused `qkv_proj`: families.py) (and, for the residual-stream baseline, a decoder
layer's output), per call, without leaking between calls.

An edit is keyed by its site: a layer index for that layer's queries, or ("residual", layer)
for the output of that decoder layer (the residual stream after it).

One dispatcher forward hook per steered layer reads the current context's edits from a
ContextVar, so two threads generating with different settings at the same time each see only
their own edits (a thread's context is its own). Dispatchers are reference-counted and removed
when the last context using them exits, on every path, exceptions included. With no edits
active for the calling context the dispatcher returns None: the output is untouched, bit for bit.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar

import torch

from .families import from_flat, to_flat

# An edit gets its site's output ((batch, seq, n_heads * head_dim) of queries, whatever the family's layout;
# (batch, seq, hidden) for the residual stream) and returns a replacement or None.
QueryEdit = Callable[[torch.Tensor], "torch.Tensor | None"]
Site = int | tuple[str, int]  # a layer (its queries) or ("residual", layer)
RESIDUAL = "residual"

_ACTIVE: ContextVar[Mapping[tuple, QueryEdit] | None] = ContextVar("steer_core_query_edits", default=None)
# Reentrant: a stream holding dispatchers across its yields (dispatchers_held) may be closed by the garbage collector
# at an allocation made while this thread holds the lock (registering a hook), and its release then takes it again.
_LOCK = threading.RLock()
_INSTALLED: dict[tuple, list] = {}  # (id(module), site) -> [handle, refcount]


def _dispatcher(key: tuple):
    def hook(module, inputs, output):
        edits = _ACTIVE.get()
        if not edits:
            return None
        fn = edits.get(key)
        return None if fn is None else fn(output)

    hook.site_key = key
    return hook


# An edit that adds the same vector at every position may say so: its attribute FIXED_SHIFT, called with (rows,
# dtype, device), returns the (rows, 1, width) tensor it adds (the edit returns output + that tensor), the same
# values at every call: a decoding loop keeps what it returned while the edit is the same object (lean_step.Plan).
FIXED_SHIFT = "fixed_shift"
LEAVE = "leave"  # planned_edit: the hooks leave the output as it is


def planned_edit(
    module: torch.nn.Module, rows: int, dtype: torch.dtype, device: torch.device, identity: tuple | None = None
):
    """What `module`'s forward hooks do to its output in this context, for a caller that runs its arithmetic itself
    (the lean decoding step) and can then do it without calling back into Python: LEAVE (its only hooks are
    dispatchers with no edit in this context), the (rows, 1, width) tensor the one edit there adds (FIXED_SHIFT),
    or None (anything else: call the hooks). identity: edit_identity(module), where the caller has it."""
    identity = edit_identity(module) if identity is None else identity
    if identity is None:  # a hook that is not a dispatcher
        return None
    planned = LEAVE
    for _, fn in identity:
        if fn is None:
            continue
        shift = getattr(fn, FIXED_SHIFT, None)
        if shift is None or planned is not LEAVE:
            return None
        planned = shift(rows, dtype, device)
    return planned


def active_edits() -> Mapping[tuple, QueryEdit]:
    """This context's edits, by dispatcher key (edit_identity's `edits`)."""
    return _ACTIVE.get() or {}


def edit_identity(module: torch.nn.Module, edits: Mapping[tuple, QueryEdit] | None = None) -> tuple | None:
    """What planned_edit's answer for `module` depends on, as objects compared by identity: each forward hook with
    this context's edit of its site (an edit's fixed shift is its own, made once a batch size). None where a hook is
    not a dispatcher, whose effect nothing here can key. A decoding loop that finds the same identity at its next
    step can keep the answer it planned (lean_step.Plan). edits: active_edits(), where the caller has it."""
    edits = active_edits() if edits is None else edits
    out = []
    for hook in module._forward_hooks.values():
        key = getattr(hook, "site_key", None)
        if key is None:
            return None
        out.append((hook, edits.get(key)))
    return tuple(out)


def active_hook_count() -> int:
    """Dispatchers currently registered (0 when no steering context is open anywhere)."""
    with _LOCK:
        return len(_INSTALLED)


def site_module(lm, site: Site) -> torch.nn.Module:
    """The module whose output an edit of `site` replaces."""
    if isinstance(site, tuple):
        kind, layer = site
        if kind != RESIDUAL:
            raise ValueError(f"unknown steering site {site!r}")
        return lm.decoder_layer(lm.check_layer(layer))
    return lm.query_site(lm.check_layer(site))


def _on_flat_queries(lm, fn: QueryEdit) -> QueryEdit:
    """An edit of (batch, seq, heads x dim) queries, applied to the query site's output in its family's layout."""
    fam = lm.family
    if fam.layout == "flat":
        return fn

    def edit(out):
        new = fn(to_flat(out, fam, lm.n_heads, lm.head_dim))
        return None if new is None else from_flat(new, out, fam, lm.n_heads, lm.head_dim)

    return edit


@contextmanager
def query_edits(lm, edits: Mapping[Site, QueryEdit]) -> Iterator[None]:
    """Within this block, and only in this context/thread, apply edits[site] to the site's output
    (a layer's queries, or a ("residual", layer) decoder layer's output)."""
    keyed = {}
    for site, fn in edits.items():
        key, module = _keyed_site(lm, site)
        keyed[key] = (module, fn if isinstance(site, tuple) else _on_flat_queries(lm, fn))
    acquired: list = []
    token = None
    try:
        _acquire(keyed, acquired)
        current = dict(_ACTIVE.get() or {})
        current.update({key: fn for key, (_, fn) in keyed.items()})
        token = _ACTIVE.set(current)
        yield
    finally:
        if token is not None:
            _ACTIVE.reset(token)
        _release(acquired)


@contextmanager
def dispatchers_held(lm, sites) -> Iterator[None]:
    """Keep the dispatchers of `sites` registered through this block, with no edit of its own: a decoding loop that
    enters query_edits for the same sites at every step then only switches its context's edits, instead of
    registering and removing a hook on every site at every step (0.08 to 0.11 ms a step for 30 layers,
    experiments/overheads_ab). A held dispatcher with no edit in a context leaves its output as it is, bit for bit,
    as a registered one always did."""
    keyed = {key: (module, None) for key, module in (_keyed_site(lm, site) for site in sites)}
    acquired: list = []
    try:
        _acquire(keyed, acquired)
        yield
    finally:
        _release(acquired)


def _keyed_site(lm, site: Site) -> tuple[tuple, torch.nn.Module]:
    """A site's dispatcher key ((id(module), site): _INSTALLED's) and the module it hooks."""
    module = site_module(lm, site)
    return (id(module), site), module


def _acquire(keyed: Mapping[tuple, tuple], acquired: list) -> None:
    """Register a dispatcher on each keyed module that has none, and count this holder on every one (appended to
    `acquired` as it goes, so that a failure part way releases what was taken)."""
    with _LOCK:
        for key, (module, _) in keyed.items():
            slot = _INSTALLED.get(key)
            if slot is None:
                slot = _INSTALLED[key] = [module.register_forward_hook(_dispatcher(key)), 0]
            slot[1] += 1
            acquired.append(key)


def _release(acquired: list) -> None:
    """Uncount a holder; a dispatcher nobody holds any longer is removed."""
    with _LOCK:
        for key in acquired:
            slot = _INSTALLED[key]
            slot[1] -= 1
            if slot[1] == 0:
                slot[0].remove()
                del _INSTALLED[key]


@contextmanager
def capture_queries(lm, layers) -> Iterator[dict[int, list[torch.Tensor]]]:
    """Record the queries of `layers` (before rotary) as (batch, seq, n_heads, head_dim) tensors, one per forward."""
    store: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}

    def recorder(layer):
        def fn(q):
            store[layer].append(q.detach().view(*q.shape[:-1], lm.n_heads, lm.head_dim))
            return None

        return fn

    with query_edits(lm, {layer: recorder(layer) for layer in layers}):
        yield store


class StopForward(Exception):
    """Raised by a capture hook to skip the layers above the last one needed."""


def _raise_stop(q):
    raise StopForward


def stop_above(lm, layer: int) -> dict[Site, QueryEdit]:
    """The edit that ends a forward at the next layer's queries, once `layer` has run whole (its keys are in the
    cache): the caller catches StopForward. Empty for the last layer (nothing above it to skip)."""
    above = lm.check_layer(layer) + 1
    return {above: _raise_stop} if above < lm.n_layers else {}
