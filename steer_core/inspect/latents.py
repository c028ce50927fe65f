"""What the steering did inside one head: the data behind the demo's latent charts.

The SAE-steered text is replayed (teacher-forced) through the very steering code generation used,
and at the inspected layer the queries that reach the steering edit, and the ones it returns, are
recorded; their sparse codes before and after the edit (computed by the same `steer_codes`), and
the distance to each level's prototype step by step, are what a researcher wants to see. Also: how
separable the six prototypes are per layer and head, to help choose where to steer.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass

import numpy as np
import torch

from ..bloom import LEVELS
from ..generation import Request
from ..prompts import DEFAULT_STYLE
from ..sae.prototypes import separability
from ..sae.store import STORE
from ..steering.config import SteerConfig
from ..steering.descent import level_probabilities, prototype_scale
from ..steering.edits import steer_codes
from ..steering.files import MODEL_OWN, SteerFiles
from .replay import Replay, replay_at


@dataclass
class LatentView:
    layer: int
    head: int
    level: str
    tokens: list[str]  # prompt + steered feedback
    prompt_len: int
    before: np.ndarray  # (S, K) codes of the recorded queries
    after: np.ndarray  # (S, K) codes after the descent (equal to before at unsteered positions)
    prototype: np.ndarray  # (K,) target level's prototype
    trace: np.ndarray  # (T+1, 6) mean distance over steered positions to each level's prototype
    level_probs: np.ndarray  # (T+1, 6) mean over steered positions of softmax(-d^2 / tau) over the levels
    query_before: np.ndarray  # (S, D) the head's query as it reached the steering edit during the replay
    query_after: np.ndarray  # (S, D) the query the edit returned (what attention used)
    objective: np.ndarray | None = None  # (T+1,) what the descent minimises, mean over steered positions
    objective_name: str = ""

    def mean_codes(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean code over the steered positions, before and after."""
        sel = self.steered_positions()
        return self.before[sel].mean(0), self.after[sel].mean(0)

    def steered_positions(self) -> np.ndarray:
        changed = np.abs(self.after - self.before).sum(-1) > 0
        return changed if changed.any() else np.ones(len(self.tokens), dtype=bool)


def pick_head(bank, heads: tuple[int, ...] | None) -> int:
    """Among the steered heads, the one whose level prototypes differ most."""
    scores = separability(bank.codes).cpu()
    cand = list(range(len(scores))) if heads is None else list(heads)
    return max(cand, key=lambda h: float(scores[h]))


@torch.no_grad()
def inspect_steering(
    lm,
    question: str,
    student_answer: str,
    level: str,
    cfg: SteerConfig,
    feedback_ids: list[int],
    layer: int | None = None,
    head: int | None = None,
    style: str = DEFAULT_STYLE,
    files: SteerFiles = MODEL_OWN,
) -> LatentView:
    """Replay prompt + SAE-steered feedback through generation's own steering and look inside `layer`/`head`
    (defaults: the middle steered layer, its most separable steered head)."""
    layer = cfg.middle_layer if layer is None else lm.check_layer(layer)
    req = Request(question, student_answer, "sae", level, steer=cfg, files=files, style=style)
    return latent_view(lm, replay_at(lm, req, feedback_ids, layer), head)


@torch.no_grad()
def latent_view(lm, rep: Replay, head: int | None = None) -> LatentView:
    """The codes of one head's queries over a replay (prompt + reply), before and after the steering edit, and
    the distances to each level's prototype step by step (head default: the most separable steered head)."""
    req, layer, cfg, level = rep.request, rep.layer, rep.request.steer, rep.request.level
    group = rep.group
    bank = group.bank if group else STORE.get(lm, layer, style=req.style, root=req.files.saes)
    head = pick_head(bank, cfg.heads_at(layer)) if head is None else lm.check_heads([head])[0]
    prompt, feedback_ids, steered = rep.prompt, rep.reply, rep.steered_by
    q_in, q_out = rep.q_in, rep.q_out
    S = q_in.shape[0]
    x = q_in.view(1, S, lm.n_heads, lm.head_dim)[:, :, head : head + 1].float()  # (1, S, 1, D)
    hsel = torch.tensor([head], device=lm.device)
    z0 = bank.sae.encode(x, hsel)
    protos = bank.codes[:, head].float()  # (6, K)
    level_idx = torch.tensor([LEVELS.index(level)], device=lm.device)
    offsets = group.offsets if group is not None else None
    z, trace = steer_codes(bank, z0, level_idx, hsel, cfg, offsets, trace_to=protos[:, None, None, None, :])
    later = [c is not None and c != cfg for c in steered]  # positions after the opening of a schedule
    if any(later):
        at = torch.tensor(later, device=lm.device)
        z_later, trace_later = steer_codes(
            bank, z0, level_idx, hsel, cfg.later, offsets, trace_to=protos[:, None, None, None, :]
        )
        z = torch.where(at[None, :, None, None], z_later, z)
        trace = torch.where(at[None, None, None, :, None], trace_later, trace)
    mask = torch.tensor([c is not None for c in steered], device=lm.device)
    z = torch.where(mask[None, :, None, None], z, z0)
    sel = mask if bool(mask.any()) else torch.ones_like(mask)
    n = len(LEVELS)
    per_pos = trace[:, :n, 0, sel, 0]  # (T+1, 6, positions) distances
    _, tau = prototype_scale(protos[:, None, :])
    pos_probs = level_probabilities(per_pos, tau, dim=1)
    probs = pos_probs.mean(-1)
    objective, objective_name = None, ""
    spec = cfg.target_spec.objective  # what the target's trace shows (targets.py)
    if spec is not None:  # a descent to a point puts the distance to that point last in the trace
        distance = trace[:, n, 0, sel, 0].mean(-1) if trace.shape[1] > n else None
        objective = spec.of(distance, pos_probs, int(level_idx[0]))
        objective_name = "" if objective is None else spec.label
    trace = per_pos.mean(-1)
    tok = lm.tokenizer
    all_ids = prompt + list(feedback_ids)
    return LatentView(
        layer=layer,
        head=head,
        level=level,
        tokens=[tok.decode([t]) for t in all_ids],
        prompt_len=len(prompt),
        before=z0[0, :, 0].cpu().numpy(),
        after=z[0, :, 0].cpu().numpy(),
        prototype=target_proto(bank, head, level),
        trace=trace.cpu().numpy(),
        level_probs=probs.cpu().numpy(),
        query_before=q_in.view(S, lm.n_heads, lm.head_dim)[:, head].float().cpu().numpy(),
        query_after=q_out.view(S, lm.n_heads, lm.head_dim)[:, head].float().cpu().numpy(),
        objective=None if objective is None else objective.cpu().numpy(),
        objective_name=objective_name,
    )


def target_proto(bank, head: int, level: str) -> np.ndarray:
    return bank.codes[LEVELS.index(level), head].float().cpu().numpy()


def separability_scores(lm, style: str = DEFAULT_STYLE) -> tuple[list[int], np.ndarray]:
    """(layers, scores (n_layers, n_heads)): mean pairwise cosine distance of the six prototypes;
    NaN for layers without trained SAEs (nothing is trained here)."""
    out = np.full((lm.n_layers, lm.n_heads), np.nan, dtype=np.float32)
    for layer in STORE.available_layers(lm, style):
        try:
            out[layer] = _separability(STORE.get(lm, layer, style).codes)
        except ValueError:  # a corrupt layer stays blank here; steering it reports the problem
            continue
    return list(range(lm.n_layers)), out


_SEPARABILITY: dict[int, tuple] = {}  # id(codes) -> (a weak reference to them, their version, their scores)
_SEPARABILITY_LOCK = threading.Lock()  # concurrent clicks read and prune it


def _separability(codes: torch.Tensor) -> np.ndarray:
    """separability(codes) as an array, kept while these prototypes stay loaded and unchanged: every Compare click
    draws the map, from the same prototypes (about 3.5 ms for 30 layers)."""
    with _SEPARABILITY_LOCK:
        kept = _SEPARABILITY.get(id(codes))
    if kept is not None and kept[0]() is codes and kept[1] == codes._version:
        return kept[2]
    scores = separability(codes).cpu().numpy()
    with _SEPARABILITY_LOCK:
        for gone in [k for k, v in _SEPARABILITY.items() if v[0]() is None]:  # prototypes since unloaded
            del _SEPARABILITY[gone]
        _SEPARABILITY[id(codes)] = (weakref.ref(codes), codes._version, scores)
    return scores
