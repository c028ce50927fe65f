"""The generation methods, declared once: each is one `Method` entry, and every list of methods (the CLI's
choices, eval's defaults, the demo's columns and baselines, chart colours and labels, what an uploaded set
can run, validation) is derived from this registry.

Adding a Compare column is one entry here (with `column` naming the CompareRequest flag that asks for it)
plus that flag, a boolean field of `views.compare.CompareRequest`, which is its widget.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Method:
    name: str
    label: str  # the column's headline ("SAE-steered")
    site: str  # what it changes: "codes" (SAE codes of the queries), "queries" (raw queries), "residual"
    # (the residual stream), "prompt" (the prompt only, no hooks) or "none"
    color: str  # its colour in every chart
    role: str = ""  # "sparse-code steering" or "baseline": the headline's note
    compare: bool = False  # a Compare column by default
    column: str | None = None  # or a Compare column on request: the CompareRequest flag that asks for it
    on_sets: bool = False  # offered for an uploaded set of questions


REGISTRY: dict[str, Method] = {  # in the order of the demo's columns (the /compare outputs follow it)
    m.name: m
    for m in (
        Method("none", "Unsteered", "none", "#7F7F7F", compare=True, on_sets=True),
        Method("sae", "SAE-steered", "codes", "#1F77B4", "sparse-code steering", compare=True, on_sets=True),
        Method("query", "Query-steered", "queries", "#17BECF", "baseline", compare=True, on_sets=True),
        Method("meandiff", "Mean-difference", "queries", "#9467BD", "baseline"),
        Method("fewshot", "Few-shot", "prompt", "#FF7F0E", "baseline", compare=True, on_sets=True),
        Method("instruction", "Instruction", "prompt", "#2CA02C", "baseline", column="instruction", on_sets=True),
        Method(
            "residual", "Residual vector", "residual", "#8C564B", "baseline", column="residual_vector", on_sets=True
        ),
    )
}

STEERED = tuple(m for m, v in REGISTRY.items() if v.site in ("codes", "queries", "residual"))  # hooks at generation
WITHOUT_CODES = tuple(
    m for m, v in REGISTRY.items() if v.site == "queries"
)  # no SAE codes: code-only targets fall back
AT_RESIDUAL = tuple(m for m, v in REGISTRY.items() if v.site == "residual")  # a vector added to the residual stream
PROMPTED = tuple(m for m, v in REGISTRY.items() if v.site == "prompt")  # baselines that change the prompt; no hooks
ALL = ("none", *STEERED, *PROMPTED)
COMPARE = tuple(m for m, v in REGISTRY.items() if v.compare)  # the demo's side-by-side columns
COMPARE_OPTIONAL = tuple(m for m, v in REGISTRY.items() if v.column)  # more columns on request
COLUMN_FLAGS = {m: v.column for m, v in REGISTRY.items() if v.column}  # column -> the request flag that asks for it
BASELINES = tuple(m for m in COMPARE + COMPARE_OPTIONAL if REGISTRY[m].role == "baseline")  # the ladder's choices
ON_SETS = tuple(m for m, v in REGISTRY.items() if v.on_sets)  # what an uploaded set can be run with
EVAL_DEFAULT = (*COMPARE, "instruction")  # what `eval` runs unless told otherwise

LABELS = {m: v.label for m, v in REGISTRY.items()}
ROLES = {m: v.role for m, v in REGISTRY.items() if v.role}
COLORS = {m: v.color for m, v in REGISTRY.items()}


def headline(method: str) -> str:
    return LABELS[method] + (f" ({ROLES[method]})" if method in ROLES else "")
