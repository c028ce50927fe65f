"""Golden rows: the files in assets/ give back, token for token, the recorded rows behind every figure
the README reports from results/ (each shipped asset's provenance record names them), and each steering
method's shipped default is exactly the setting its recorded rows were made with.

A vector or offsets file that differs from the validated one, or a strength that means another scale
than the one validated, fails here instead of reaching users. `python -m steer_core reproduce --shipped`
runs the same check from the command line.
"""

import pytest

from steer_core.provenance import golden_entries, record

pytestmark = pytest.mark.slow

ENTRIES = golden_entries()


def _name(g) -> str:
    return f"{g.asset}-{g.method}-{g.setting or 'all'}".replace(" ", "_")


@pytest.fixture(scope="module")
def lm():
    from steer_core.model.loading import load_model

    return load_model()


@pytest.mark.parametrize("entry", ENTRIES, ids=_name)
def test_the_shipped_files_regenerate_the_recorded_rows(lm, entry):
    """With the recorded settings; rows of a method's default with that default as it ships (strength 1)."""
    from steer_core.evaluation.reproduce import reproduce_rows
    from steer_core.steering.config import SteerConfig

    rows = entry.rows()
    assert len(rows) >= 2
    checked = reproduce_rows(lm, rows, steer=SteerConfig().for_method(entry.method) if entry.default else None)
    differs = [
        f"{c['scenario_id']}/{c['level']}: recorded {c['recorded'][:80]!r}, now {c['regenerated'][:80]!r}"
        for c in checked
        if not c["same"]
    ]
    assert not differs, f"{len(differs)} of {len(checked)} rows of {entry.file.name} differ:\n" + "\n".join(differs)


@pytest.mark.parametrize("entry", [g for g in ENTRIES if g.default], ids=_name)
def test_each_methods_default_is_the_setting_its_rows_were_recorded_with(entry):
    """Strength 1 of the shipped default is the recorded setting, at the recorded scale (alpha)."""
    from steer_core.evaluation.reproduce import row_config, row_files
    from steer_core.evaluation.results import row_prompt
    from steer_core.steering.config import SteerConfig
    from steer_core.steering.files import MODEL_OWN

    for row in entry.rows():  # a row run on top of a prompt: the default under that prompt (its own strength 1)
        shipped = SteerConfig(prompt=row_prompt(row)).for_method(entry.method)
        assert row_config(row) == shipped, f"{entry.file.name} {row['setting']}: {row_config(row)} != {shipped}"
        assert row_files(row) == MODEL_OWN, f"{entry.file.name} {row['setting']}: steered with other files"


def test_the_judge_reproduces_its_recorded_test_accuracy():
    from steer_core.bloom import load_dataset
    from steer_core.judge.classifier import default_judge, scores

    (want,) = [e for e in record("judge")["reproduces"] if "accuracy" in e]
    rows = load_dataset(split="test")
    verdicts = default_judge().judge([r.feedback for r in rows])
    got = scores([r.level for r in rows], [v["pred"] for v in verdicts])
    assert (round(got["accuracy"], 3), got["n"]) == (want["accuracy"], want["n"])
