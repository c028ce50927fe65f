"""The descents that steering targets run: toward a point (l2 or cosine, with its closed form), on a
prototype-softmax loss, and on raw queries. Whole tensors of shape (rows, positions, heads, dim); the
only Python loop is over descent steps.
"""

from __future__ import annotations

import torch


def _distance_grad(x: torch.Tensor, target: torch.Tensor, distance: str) -> torch.Tensor:
    if distance == "l2":
        return 2 * (x - target)
    xn = x.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    tn = target.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    cos = (x * target).sum(-1, keepdim=True) / (xn * tn)
    return -(target / (xn * tn) - cos * x / xn**2)


def latent_descent(
    z0: torch.Tensor,
    target: torch.Tensor,
    steps: int,
    lr: float,
    mu: float = 0.0,
    distance: str = "l2",
    nonneg: bool = True,
    trace_to: torch.Tensor | None = None,
):
    """Minimise d(z, target) + mu * ||z - z0||^2 by gradient descent from z0; z = relu(z) each step.

    trace_to: optional (L, ..., K)-broadcastable prototypes; returns (z, trace) where trace[t] holds
    the l2 distance of z to each of them after t steps.
    """
    if distance == "l2" and trace_to is None and steps > 0:
        fast = _l2_descent_closed_form(z0, target, steps, lr, mu, nonneg)
        if fast is not None:
            return fast
    z = z0
    trace = []
    if trace_to is not None:
        trace.append(torch.linalg.vector_norm(z.unsqueeze(0) - trace_to, dim=-1))
    for _ in range(steps):
        grad = _distance_grad(z, target, distance) + 2 * mu * (z - z0)
        z = z - lr * grad
        if nonneg:
            z = torch.relu(z)
        if trace_to is not None:
            trace.append(torch.linalg.vector_norm(z.unsqueeze(0) - trace_to, dim=-1))
    if trace_to is not None:
        return z, torch.stack(trace)
    return z


def _l2_descent_closed_form(z0, target, steps, lr, mu, nonneg):
    """T steps of the l2 descent in one expression, exact when 0 <= c < 1 (l2_closed_form); None where it does not
    hold. Saves T passes over (rows, positions, heads, d_sae) tensors, which dominate the cost of steering a long
    prompt."""
    form = l2_closed_form(steps, lr, mu)
    if form is None or (nonneg and bool((z0 < 0).any())):
        return None
    return closed_form_codes(z0, target, lr, mu, form, nonneg)


def l2_closed_form(steps: int, lr: float, mu: float) -> tuple[float, float] | None:
    """The closed form's constants (c^T, (1 - c^T) / (1 - c)), or None where it does not hold.

    With l2 distance every coordinate follows its own recurrence z <- relu(c z + b), where
    c = 1 - 2 lr (1 + mu) and b = 2 lr (target + mu z0). For 0 <= c < 1 and z0 >= 0 the unclamped
    sequence u_t = c^t z0 + b (1 - c^t) / (1 - c) is monotone, so the clamped one is u_t until it
    crosses zero and 0 after: z_T = relu(u_T).
    """
    c = 1.0 - 2.0 * lr * (1.0 + mu)
    if not 0.0 <= c < 1.0:
        return None
    cT = c**steps
    return cT, (1.0 - cT) / (1.0 - c)


def closed_form_codes(z0, target, lr: float, mu: float, form: tuple[float, float], nonneg: bool = True):
    """z_T from z0 >= 0 (where nonneg) by the closed form whose constants `form` are (l2_closed_form)."""
    cT, gain = form
    b = 2.0 * lr * (target + mu * z0)
    u = cT * z0 + b * gain
    return torch.relu(u) if nonneg else u


def prototype_scale(protos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(L, H, K) prototypes -> squared norms (L, H) and per-head temperature (H,): the mean squared
    distance between two distinct prototypes."""
    L = protos.shape[0]
    pp = (protos * protos).sum(-1)
    gaps = pp[:, None] + pp[None] - 2 * torch.einsum("ahk,bhk->abh", protos, protos)  # (L, L, H)
    return pp, (gaps.sum((0, 1)) / (L * (L - 1))).clamp_min(1e-6)


def softmax_descent(
    z0: torch.Tensor,
    protos: torch.Tensor,
    target: torch.Tensor,
    steps: int,
    lr: float,
    mu: float = 0.0,
    nonneg: bool = True,
    trace_to: torch.Tensor | None = None,
):
    """Descent on a prototype-softmax loss (once attributed to the authors' follow-up, arXiv 2605.23040, by a
    secondary summary; not confirmed from the paper, so described here only by what it does):
    -log softmax_j(-||z - p_j||^2 / tau)[target] + mu ||z - z0||^2, scaled by tau / 2 so that a step
    is in code units: the gradient is (sum_j pi_j p_j) - p_target, which pulls toward the target and
    away from the levels the code is nearest to, and vanishes once the code sits at its target.

    z0 (..., H, K); protos (L, H, K); target (...) level indices broadcastable to z0's leading dims;
    tau per head = mean squared distance between distinct prototypes (logit gaps of order 1).
    trace_to: as for latent_descent.
    """
    pp, tau = prototype_scale(protos)
    H, K = protos.shape[1:]
    lead = z0.shape[:-2]
    # Work in (H, N, K) so each step is two batched matmuls; ||z||^2 is the same for every level and
    # cancels in the softmax, so the logits are (2 z.p_j - ||p_j||^2) / tau.
    A = (2 * protos / tau[None, :, None]).permute(1, 2, 0)  # (H, K, L)
    b = (-pp / tau[None]).T[:, None, :]  # (H, 1, L)
    P = protos.permute(1, 0, 2)  # (H, L, K)
    flat = lambda t: t.reshape(-1, H, K).transpose(0, 1)  # noqa: E731  (..., H, K) -> (H, N, K)
    p_t = flat(protos[target].expand(*lead, H, K))
    z0f = flat(z0)
    z = z0f
    back = lambda t: t.transpose(0, 1).reshape(*lead, H, K)  # noqa: E731
    trace = [] if trace_to is None else [torch.linalg.vector_norm(z0.unsqueeze(0) - trace_to, dim=-1)]
    for _ in range(steps):
        pi = torch.softmax(torch.baddbmm(b, z, A), dim=-1)  # (H, N, L)
        grad = torch.bmm(pi, P) - p_t
        if mu:
            grad = grad + 2 * mu * (z - z0f)
        z = z - lr * grad
        if nonneg:
            z = torch.relu(z)
        if trace_to is not None:
            trace.append(torch.linalg.vector_norm(back(z).unsqueeze(0) - trace_to, dim=-1))
    z = back(z)
    return z if trace_to is None else (z, torch.stack(trace))


def level_probabilities(distances: torch.Tensor, tau: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Distances of codes to the L level prototypes (along `dim`) -> each level's probability under the
    prototypes, softmax(-d^2 / tau): what the softmax target raises. tau from prototype_scale,
    shaped to broadcast against `distances`."""
    return torch.softmax(-(distances**2) / tau, dim=dim)


def query_descent(
    q0: torch.Tensor, target: torch.Tensor, steps: int, lr: float, mu: float = 0.0, distance: str = "l2"
) -> torch.Tensor:
    """The query baseline: the same descent directly on the raw query, toward the level's mean query."""
    return latent_descent(q0, target, steps, lr, mu, distance, nonneg=False)
