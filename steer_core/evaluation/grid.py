"""The generation grid: methods x levels x layer sets x settings over scenarios.

Each scenario is one batch: all methods and levels of it share the base prompt (few-shot and
instruction rows are left-padded into the same batch), so a grid costs one generation loop per
scenario (chunked at max_batch rows).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace

from tqdm.auto import tqdm

from .. import methods
from ..bloom import LEVELS, Scenario
from ..fluency import perplexity
from ..generation import EVAL_TOKENS, MAX_BATCH, Request, generate_batch
from ..layer_spec import layers_label
from ..prompts import DEFAULT_STYLE
from ..steering.config import SteerConfig
from ..steering.files import MODEL_OWN, SteerFiles
from .results import config_columns


@dataclass(frozen=True, kw_only=True)
class Grid:
    """What a grid runs: methods x target levels x layer sets x steering settings, at a reply length and prompt
    style, in batches of at most max_batch rows. Unsteered and prompt-only methods don't depend on layers or
    settings and run once."""

    methods: Sequence[str]
    levels: Sequence[str] = LEVELS
    layer_sets: Sequence[tuple[int, ...]] = ((),)
    steer: SteerConfig | Sequence[SteerConfig] = SteerConfig()
    max_new_tokens: int = EVAL_TOKENS
    style: str = DEFAULT_STYLE
    max_batch: int = MAX_BATCH
    residual_layers: tuple[int, ...] | None = None  # the residual vector's layers, not layer_sets (None: layer_sets)
    files: SteerFiles = MODEL_OWN  # the folders every setting steers with (the model's own unless given)

    @property
    def steers(self) -> list[SteerConfig]:
        return [self.steer] if isinstance(self.steer, SteerConfig) else list(self.steer)


def run_grid(
    lm, scenarios: Iterable[Scenario], grid: Grid, done: set | None = None, progress: bool = True, on_rows=None
) -> list[dict]:
    """Generate the grid over scenarios, one batch per scenario (chunked at grid.max_batch rows); rows whose key is
    in `done` are skipped; on_rows(rows) gets each batch's rows as it finishes."""
    scenarios = list(scenarios)
    rows_out = []
    bar = tqdm(total=len(scenarios), desc="eval", disable=not progress)
    for sc in scenarios:
        for batch_rows in scenario_batches(lm, sc, grid, done):
            rows_out += batch_rows
            if on_rows:
                on_rows(batch_rows)
        bar.update(1)
    bar.close()
    return rows_out


def scenario_batches(lm, sc: Scenario, grid: Grid, done: set | None = None) -> Iterator[list[dict]]:
    """One scenario's rows of the grid (those not in `done`), generated in batches of up to max_batch
    rows; yields each batch's result rows (not yet judged) as it finishes."""
    done = done or set()
    levels, layer_sets, style = grid.levels, grid.layer_sets, grid.style
    steers = grid.steers
    reqs, meta = [], []
    for method in grid.methods:
        combos = [(None, None)]
        if method in methods.steered():  # one config per distinct setting this method runs (query has no codes)
            usable = list({c: c for c in (s.for_method(method, files=grid.files) for s in steers)}.values())
            sets = [grid.residual_layers] if method in methods.at_residual() and grid.residual_layers else layer_sets
            combos = [(layers, s) for layers in sets for s in usable]
        for layers, st in combos:
            for level in levels if methods.get(method).site != methods.NONE else ["-"]:
                cfg = replace(st, method=method, layers=tuple(layers)) if layers else None
                lab = layers_label(layers) if cfg else "-"
                setting = cfg.label_with(grid.files) if cfg else "-"
                cols = config_columns(cfg, grid.files)
                old = (sc.scenario_id, method, level, lab, setting, style)  # rows before the config column
                if (sc.scenario_id, method, level, lab, cols["config"], style) in done or old in done:
                    continue
                reqs.append(
                    Request(
                        sc.question,
                        sc.student_answer,
                        method,
                        None if level == "-" else level,
                        steer=cfg,
                        files=grid.files,
                        style=style,
                        scenario_id=sc.scenario_id,
                    )
                )
                meta.append((method, level, lab, setting, cols))
    for c in range(0, len(reqs), grid.max_batch):
        chunk, chunk_meta = reqs[c : c + grid.max_batch], meta[c : c + grid.max_batch]
        t0 = time.time()
        outs = generate_batch(lm, chunk, max_new_tokens=grid.max_new_tokens)
        secs = time.time() - t0
        yield [
            {
                "scenario_id": sc.scenario_id,
                "method": method,
                "level": level,
                "layers": lab,
                "setting": setting,
                **cols,
                "style": style,
                "prompt": req.prompt,
                "model": lm.label,
                "text": o.text,
                "new_tokens": o.new_tokens,
                "seconds": round(secs / len(outs), 3),
                "ppl": round(perplexity(lm, sc.question, sc.student_answer, o.token_ids, style), 3),
            }
            for (method, level, lab, setting, cols), req, o in zip(chunk_meta, chunk, outs)
        ]
