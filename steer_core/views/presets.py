"""Named Compare settings, each a few CompareRequest values and one line on why one would pick it. The
figures quoted are the shipped validation rows (results/frontier/validation.csv, writers D-F, 216 replies
a row); `tests/test_share.py` reads them again from that file."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Preset:
    name: str
    why: str
    values: dict = field(default_factory=dict)  # CompareRequest fields; the rest stay at their defaults
    quotes: tuple[tuple[str, str, float, float], ...] = ()  # (method, layers / setting, accuracy, perplexity
    # ratio) of each validation row the line quotes, as `summarize` names and reads them


PRESETS = (
    Preset(
        "Validated default",
        "Learned offsets on every layer at strength 1: the most accurate setting on validation within 1.4x "
        "perplexity (0.458 at 1.30x).",
        {"strength": 1.0},
        (("sae", "0-29 learned a16 pos generated", 0.458, 1.30),),
    ),
    Preset(
        "Gentle",
        "Half the default strength: nearly as fluent as the unsteered reply, and moves the level less "
        "(0.338 at 1.08x on validation).",
        {"strength": 0.5},
        (("sae", "0-29 learned a8 pos generated", 0.338, 1.08),),
    ),
    Preset(
        "Past the fluency budget",
        "Strength 1.25: the strongest measured SAE setting, a little more accurate and just over the 1.4x "
        "budget (0.481 at 1.42x on validation).",
        {"strength": 1.25},
        (("sae", "0-29 learned a20 pos generated", 0.481, 1.42),),
    ),
    Preset(
        "The paper's descent",
        "Descent from the query's sparse code toward the level's prototype (20 steps of 0.2) on layers 8-21, as "
        "the paper describes it. On validation (layer 15; every layer) it stays at chance: 0.18 at 1.13x.",
        {"target": "prototype", "layers": "8-21", "steps": 20, "lr": 0.2, "mu": 0.0, "strength": 1.0},
    ),
    Preset(
        "Name the level and steer",
        "The instruction prompt names the level and the SAE offsets and the residual vector steer on top of it, "
        "each at its own pick: 0.704 at 1.13x and 0.782 at 1.20x on validation (the prompt alone: 0.593 at 1.09x).",
        {"prompt": "instruction", "residual_vector": True},
        (
            ("sae", "0-29 learned a4 pos generated + instruction", 0.704, 1.13),
            ("residual", "15 learned a2 pos generated + instruction", 0.782, 1.2),
            ("instruction", "-", 0.593, 1.09),
        ),
    ),
    Preset(
        "Every baseline",
        "The default, plus the instruction prompt and the residual-stream vector as two more columns (on "
        "validation 0.593 at 1.09x and 0.764 at 1.19x: the vector, the prompt distilled, is level with it at the same "
        "fluency).",
        {"instruction": True, "residual_vector": True},
        (("instruction", "-", 0.593, 1.09), ("residual", "15 learned a4 pos generated", 0.764, 1.19)),
    ),
)
BY_NAME = {p.name: p for p in PRESETS}
