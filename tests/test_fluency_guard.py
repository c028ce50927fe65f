"""The fluency guard: every shipped steering method, at strength 1 with its shipped files, keeps the
median perplexity of its replies (under the unsteered model) within GUARD times unsteered's, on six
test scenarios (one per writer) x six levels, measured exactly as `eval` and `summarize` measure it.
A broken vector or a wrong scale (the residual vector once shipped at 16x its validated scale and read
about 100x) fails here.
"""

import pytest

from steer_core.evaluation.selection import GUARD

pytestmark = pytest.mark.slow

SCENARIOS = ("A01", "B05", "C09", "D03", "E06", "F08")
SHIPPED_STEERING = ("sae", "residual", "query")


@pytest.fixture(scope="module")
def summary():
    from steer_core.bloom import load_dataset, scenarios
    from steer_core.evaluation.grid import Grid, run_grid
    from steer_core.evaluation.judging import add_judgements
    from steer_core.evaluation.stats import summarize
    from steer_core.judge.classifier import default_judge
    from steer_core.model.loading import load_model
    from steer_core.steering.config import SteerConfig

    lm = load_model()
    scs = [s for s in scenarios(load_dataset(split="test")) if s.scenario_id in SCENARIOS]
    assert len(scs) == len(SCENARIOS)
    rows = run_grid(lm, scs, Grid(methods=["none"]), progress=False)
    for method in SHIPPED_STEERING:
        cfg = SteerConfig().for_method(method)  # the shipped default of this method, its own layers
        rows += run_grid(lm, scs, Grid(methods=[method], layer_sets=[cfg.layers], steer=cfg), progress=False)
    return summarize(add_judgements(rows, default_judge()))


@pytest.mark.parametrize("method", SHIPPED_STEERING)
def test_shipped_steering_stays_fluent_at_strength_1(summary, method):
    (row,) = [s for s in summary if s["method"] == method and s["level"] == "ALL"]
    assert row["n_scenarios"] == len(SCENARIOS)
    assert row["ppl_ratio"] < GUARD, f"{method} {row['setting']}: perplexity {row['ppl_ratio']}x unsteered"
