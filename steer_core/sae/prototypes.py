"""Per-level prototypes: where each Bloom level sits in the SAE's code space and in query space.

A level's prototype is the mean over that level's examples of the mean over the example's
feedback tokens (so long feedbacks don't outweigh short ones).
"""

from __future__ import annotations

import torch

from ..bloom import LEVELS


def example_means(values: torch.Tensor, example_ids: torch.Tensor, n_examples: int) -> torch.Tensor:
    """values (tokens, ...) grouped by example id -> (n_examples, ...) means, via index_add."""
    sums = torch.zeros((n_examples, *values.shape[1:]), dtype=values.dtype, device=values.device)
    sums.index_add_(0, example_ids, values)
    counts = torch.bincount(example_ids, minlength=n_examples).clamp_min(1).to(values.dtype)
    return sums / counts.view(-1, *([1] * (values.dim() - 1)))


def level_means(per_example: torch.Tensor, example_levels: torch.Tensor) -> torch.Tensor:
    """(examples, ...) -> (6, ...) mean per level."""
    return example_means(per_example, example_levels, len(LEVELS))


@torch.no_grad()
def compute_prototypes(
    sae, queries: torch.Tensor, example_ids: torch.Tensor, example_levels: torch.Tensor, batch_size: int = 8192
) -> dict[str, torch.Tensor]:
    """queries (feedback tokens, heads, head_dim) of one layer; example_ids (tokens,) index into
    example_levels (examples,). Returns codes (6, H, d_sae), queries (6, H, D), query_all (H, D)."""
    n_examples = len(example_levels)
    if sae.architecture == "topk":
        per_ex_codes = _sparse_example_means(sae, queries, example_ids, n_examples, batch_size)
    else:
        codes = torch.cat([sae.encode(queries[i : i + batch_size].float()) for i in range(0, len(queries), batch_size)])
        per_ex_codes = example_means(codes, example_ids, n_examples)
    per_ex_q = example_means(queries.float(), example_ids, n_examples)
    return {
        "codes": level_means(per_ex_codes, example_levels),
        "queries": level_means(per_ex_q, example_levels),
        "query_all": per_ex_q.mean(0),
    }


def _sparse_example_means(sae, queries, example_ids, n_examples: int, batch_size: int) -> torch.Tensor:
    """example_means of the TopK codes from their k active latents only (no dense (tokens, H, d_sae) code): each
    sum adds the same nonzero values in the same token order, so the means are the dense path's bits."""
    H, K = sae.n_heads, sae.d_sae
    sums = torch.zeros(n_examples * H * K, device=queries.device)
    heads = torch.arange(H, device=queries.device)[None, :, None] * K
    for i in range(0, len(queries), batch_size):
        vals, idx = sae.sparse_codes(queries[i : i + batch_size].float())
        at = example_ids[i : i + batch_size, None, None] * (H * K) + heads + idx
        sums.index_add_(0, at.flatten(), vals.flatten())
    counts = torch.bincount(example_ids, minlength=n_examples).clamp_min(1).float()
    return sums.view(n_examples, H, K) / counts.view(-1, 1, 1)


def separability(codes: torch.Tensor) -> torch.Tensor:
    """Per head: mean pairwise cosine distance between the six level prototypes (0 = identical)."""
    c = torch.nn.functional.normalize(codes.float(), dim=-1)  # (6, H, K)
    sim = torch.einsum("ahk,bhk->hab", c, c)
    L = c.shape[0]
    off = sim.sum(dim=(1, 2)) - sim.diagonal(dim1=1, dim2=2).sum(-1)
    return 1 - off / (L * (L - 1))
