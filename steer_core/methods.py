"""The generation methods, declared once: each is one `Method` entry that says how it builds its prompt, where
it edits the model (its site, which the edits dispatch on) and what files it needs. Every list of methods
(the CLI's choices, eval's defaults, the demo's columns and baselines, chart colours and labels, what an
uploaded set can run, validation) is read from this registry when it is asked for, so an entry registered
later (a plug-in, a test's toy) is offered everywhere at once.

Adding a Compare column is one entry here (with `column` naming the CompareRequest flag that asks for it)
plus that flag, a boolean field of `views.compare.CompareRequest`, which is its widget.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .errors import UserError
from .prompts import PromptInput, fewshot_prompt, instruction_prompt, plain_prompt

# Where a method edits the model. The steering edits dispatch on these, never on a method's name.
CODES = "codes"  # the SAE codes of a layer's queries (the paper's site)
QUERIES = "queries"  # a layer's raw queries, moved by the target's descent (the paper's query baseline)
QUERY_SHIFT = "query_shift"  # a layer's raw queries plus the level's mean difference; no descent
RESIDUAL = "residual"  # a decoder layer's output (the residual stream)
PROMPT = "prompt"  # the prompt only; no hooks
NONE = "none"  # nothing: the unsteered reply
SITES = (CODES, QUERIES, QUERY_SHIFT, RESIDUAL, PROMPT, NONE)
PLAIN = "plain"  # the prompt of every method but the prompt baselines, and of steering on top of none
HOOKED = (CODES, QUERIES, QUERY_SHIFT, RESIDUAL)  # sites edited by hooks while the model runs
AT_QUERIES = (CODES, QUERIES, QUERY_SHIFT)  # the q_proj edits, which read a layer's SAE bank

# What a method needs besides the model: the layers' SAEs and prototypes (their level means of the raw
# queries too), or the residual-stream vectors. Learned code offsets are the target's need (Target.needs_offsets).
SAES = "saes"
RESIDUAL_VECTORS = "residual vectors"


@dataclass(frozen=True)
class Method:
    name: str
    label: str  # the column's headline ("SAE-steered")
    site: str  # one of SITES: where it edits
    color: str  # its colour in every chart
    role: str = ""  # "sparse-code steering" or "baseline": the headline's note
    compare: bool = False  # a Compare column by default
    column: str | None = None  # or a Compare column on request: the CompareRequest flag that asks for it
    on_sets: bool = False  # offered for an uploaded set of questions
    prompt: Callable[[PromptInput], list[dict]] = plain_prompt  # its prompt's messages for one request
    fallback_target: str | None = None  # the target it runs when the chosen one works on SAE codes only
    only_target: str | None = None  # the one target it can run (the residual vector adds a learned one)

    def __post_init__(self):
        if self.site not in SITES:
            raise ValueError(f"method {self.name!r}: site must be one of {', '.join(SITES)}, got {self.site!r}")
        if self.site == NONE and self.prompt is not plain_prompt:
            raise ValueError(f"method {self.name!r} changes nothing (site 'none') but builds its own prompt")

    @property
    def steers(self) -> bool:
        """It edits the model while it runs (and so takes a SteerConfig)."""
        return self.site in HOOKED

    @property
    def needs(self) -> tuple[str, ...]:
        """The files it reads besides the model: SAES, RESIDUAL_VECTORS, or none."""
        if self.site in AT_QUERIES:
            return (SAES,)
        return (RESIDUAL_VECTORS,) if self.site == RESIDUAL else ()

    @property
    def has_codes(self) -> bool:
        """Its edit reads SAE codes (a code-only target needs this)."""
        return self.site == CODES

    @property
    def headline(self) -> str:
        return self.label + (f" ({self.role})" if self.role else "")


REGISTRY: dict[str, Method] = {}  # in the order of the demo's columns


def register(method: Method) -> Method:
    """Add a generation method (replacing one of the same name, which keeps its place)."""
    REGISTRY[method.name] = method
    return method


def unregister(name: str) -> None:
    """Remove a method (a test's toy, once the test is done)."""
    REGISTRY.pop(name, None)


def get(name: str) -> Method:
    """The entry of a method; a clear error for a name that is not one."""
    if name not in REGISTRY:
        raise UserError(f"unknown method {name!r}; choose one of {', '.join(REGISTRY)}")
    return REGISTRY[name]


def _where(test) -> tuple[str, ...]:
    return tuple(n for n, m in REGISTRY.items() if test(m))


def names() -> tuple[str, ...]:
    """Every method: the unsteered reply, the steered ones, then the prompt baselines."""
    return (*_where(lambda m: m.site == NONE), *steered(), *prompted())


def steered() -> tuple[str, ...]:
    """Methods that edit the model while it runs (hooks at generation)."""
    return _where(lambda m: m.steers)


def at_residual() -> tuple[str, ...]:
    """Methods that add a vector to the residual stream."""
    return _where(lambda m: m.site == RESIDUAL)


def prompted() -> tuple[str, ...]:
    """Baselines that change the prompt only; no hooks."""
    return _where(lambda m: m.site == PROMPT)


def compare_columns() -> tuple[str, ...]:
    """The demo's side-by-side columns."""
    return _where(lambda m: m.compare)


def column_flags() -> dict[str, str]:
    """Columns shown on request: method -> the CompareRequest flag that asks for it."""
    return {n: m.column for n, m in REGISTRY.items() if m.column}


def baselines() -> tuple[str, ...]:
    """The ladder's choice of a baseline shown beside the SAE rows."""
    return tuple(n for n in (*compare_columns(), *column_flags()) if REGISTRY[n].role == "baseline")


def on_sets() -> tuple[str, ...]:
    """What an uploaded set of questions can be run with."""
    return _where(lambda m: m.on_sets)


def eval_default() -> tuple[str, ...]:
    """What `eval` runs unless told otherwise: the Compare columns, then the prompt baselines shown on request."""
    return (*compare_columns(), *(n for n in column_flags() if REGISTRY[n].site == PROMPT))


def own_prompt(name: str) -> str:
    """The prompt a method runs when nothing is steered on top of: a prompt baseline's own, else the plain one."""
    m = REGISTRY.get(name)  # a name no longer registered (an old results row) ran the plain prompt
    return name if m is not None and m.site == PROMPT else PLAIN


def label(name: str) -> str:
    return get(name).label


def color(name: str) -> str:
    return get(name).color


def headline(name: str) -> str:
    return get(name).headline


for _m in (
    Method("none", "Unsteered", NONE, "#7F7F7F", compare=True, on_sets=True),
    Method("sae", "SAE-steered", CODES, "#1F77B4", "sparse-code steering", compare=True, on_sets=True),
    Method(
        "query", "Query-steered", QUERIES, "#17BECF", "baseline", compare=True, on_sets=True, fallback_target="delta"
    ),
    Method("meandiff", "Mean-difference", QUERY_SHIFT, "#9467BD", "baseline", fallback_target="delta"),
    Method("fewshot", "Few-shot", PROMPT, "#FF7F0E", "baseline", compare=True, on_sets=True, prompt=fewshot_prompt),
    Method(
        "instruction", "Instruction", PROMPT, "#2CA02C", "baseline", column="instruction", on_sets=True,
        prompt=instruction_prompt,
    ),
    Method(
        "residual", "Residual vector", RESIDUAL, "#8C564B", "baseline", column="residual_vector", on_sets=True,
        only_target="learned",
    ),
    Method(
        "latents", "Your latents", CODES, "#E377C2", "steered by hand", column="latents", only_target="latents"
    ),
):  # fmt: skip
    register(_m)
