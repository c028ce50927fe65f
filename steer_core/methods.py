"""The generation methods, named once. Every list of methods (CLI choices, eval defaults, the demo's
columns, chart colours and labels, validation) is derived from these."""

from __future__ import annotations

STEERED = ("sae", "query", "meandiff", "residual")  # hooks during generation (residual: the field's baseline)
WITHOUT_CODES = ("query", "meandiff")  # steer the raw query: no SAE codes, so code-only targets fall back
AT_RESIDUAL = ("residual",)  # a learned vector added to the residual stream, not an edit of the queries
PROMPTED = ("fewshot", "instruction")  # baselines that change the prompt; no hooks
ALL = ("none", *STEERED, *PROMPTED)
COMPARE = ("none", "sae", "query", "fewshot")  # the demo's side-by-side columns
COMPARE_OPTIONAL = ("instruction", "residual")  # more columns on request (CompareRequest flags)
EVAL_DEFAULT = (*COMPARE, "instruction")  # what `eval` runs unless told otherwise

LABELS = {
    "none": "Unsteered",
    "sae": "SAE-steered",
    "query": "Query-steered",
    "meandiff": "Mean-difference",
    "residual": "Residual vector",
    "fewshot": "Few-shot",
    "instruction": "Instruction",
}
ROLES = {  # what each column is, for headlines (the demo's reply boxes)
    "sae": "sparse-code steering",
    "query": "baseline",
    "meandiff": "baseline",
    "residual": "baseline",
    "fewshot": "baseline",
    "instruction": "baseline",
}


def headline(method: str) -> str:
    return LABELS[method] + (f" ({ROLES[method]})" if method in ROLES else "")
