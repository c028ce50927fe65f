"""What the steering did inside one head: the data behind the demo's latent charts.

The SAE-steered text is replayed (teacher-forced, one forward) under the same steering, and at
the inspected layer the queries that reach the steering function are recorded; their sparse codes
before and after the descent, and the descent's distance to each level's prototype step by step,
are what a researcher wants to see. Also: how separable the six prototypes are per layer and
head, to help choose where to steer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .bank import STORE
from .bloom import LEVELS
from .hooks import query_edits
from .prompts import messages, render
from .prototypes import separability
from .steering import SteerConfig, latent_descent, steer_rows


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


def _position_mask(cfg: SteerConfig, prompt_len: int, total: int, device) -> torch.Tensor:
    pos = torch.arange(total, device=device)
    if cfg.positions == "prompt":
        return pos < prompt_len
    if cfg.positions == "generated":
        return pos >= prompt_len
    return torch.ones(total, dtype=torch.bool, device=device)


@torch.no_grad()
def inspect_steering(lm, question: str, student_answer: str, level: str, cfg: SteerConfig, feedback_ids: list[int],
                     layer: int | None = None, head: int | None = None, style: str = "plain") -> LatentView:
    """Replay prompt + SAE-steered feedback under `cfg` and look inside `layer`/`head` (defaults: the
    middle steered layer, its most separable steered head)."""
    layer = cfg.layers[len(cfg.layers) // 2] if layer is None else lm.check_layer(layer)
    bank = STORE.get(lm, layer, style=style)
    head = pick_head(bank, cfg.heads) if head is None else lm.check_heads([head])[0]
    prompt, _ = render(lm.tokenizer, messages(question, student_answer, style))
    ids = torch.tensor([prompt + list(feedback_ids)], device=lm.device)
    S = ids.shape[1]
    mask = _position_mask(cfg, len(prompt), S, lm.device)[None, :, None, None]
    level_idx = torch.tensor([LEVELS.index(level)], device=lm.device)
    heads_t = None if cfg.heads is None else torch.tensor(cfg.heads, device=lm.device)
    recorded = {}

    def edit_for(layer_bank, record: bool):
        def edit(q):
            q4 = q.view(1, S, lm.n_heads, lm.head_dim)
            if record:
                recorded["q"] = q4[0, :, head].float()
            x = q4 if heads_t is None else q4.index_select(2, heads_t)
            new = torch.where(mask, steer_rows(layer_bank, x.float(), level_idx, heads_t, cfg).to(q.dtype), x)
            out = q4.clone()
            if heads_t is None:
                out = new
            else:
                out[:, :, heads_t] = new
            return out.view(1, S, -1)

        return edit

    edits = {l: edit_for(STORE.get(lm, l, style=style), l == layer) for l in cfg.layers}
    if layer not in edits:
        edits[layer] = lambda q: recorded.__setitem__("q", q.view(1, S, lm.n_heads, lm.head_dim)[0, :, head].float())
    with query_edits(lm, edits):
        lm.model(input_ids=ids, use_cache=False)

    hsel = torch.tensor([head], device=lm.device)
    x = recorded["q"][None, :, None]  # (1, S, 1, D)
    z0 = bank.sae.encode(x, hsel)
    protos = bank.codes[:, head].float()  # (6, K)
    target = protos[LEVELS.index(level)]
    if cfg.target == "delta":
        target = z0 + cfg.alpha * (target - protos.mean(0))
    steered = mask[0, :, 0, 0] & (layer in cfg.layers)
    z, trace = latent_descent(z0, target, cfg.steps, cfg.lr, cfg.mu, cfg.distance,
                              trace_to=protos[:, None, None, None, :])
    z = torch.where(steered[None, :, None, None], z, z0)
    trace = trace[:, :, 0, steered, 0].mean(-1) if bool(steered.any()) else trace[:, :, 0, :, 0].mean(-1)
    tok = lm.tokenizer
    return LatentView(layer, head, level, [tok.decode([t]) for t in ids[0].tolist()], len(prompt),
                      z0[0, :, 0].cpu().numpy(), z[0, :, 0].cpu().numpy(), target_proto(bank, head, level),
                      trace.cpu().numpy())


def target_proto(bank, head: int, level: str) -> np.ndarray:
    return bank.codes[LEVELS.index(level), head].float().cpu().numpy()


def separability_scores(lm, style: str = "plain") -> tuple[list[int], np.ndarray]:
    """(layers, scores (n_layers, n_heads)): mean pairwise cosine distance of the six prototypes;
    NaN for layers without trained SAEs (nothing is trained here)."""
    out = np.full((lm.n_layers, lm.n_heads), np.nan, dtype=np.float32)
    for layer in STORE.available_layers(lm, style):
        try:
            out[layer] = separability(STORE.get(lm, layer, style, train_missing=False).codes).cpu().numpy()
        except ValueError:  # a corrupt layer stays blank here; steering it reports the problem
            continue
    return list(range(lm.n_layers)), out
