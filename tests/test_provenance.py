"""Every shipped asset says how it was made, on which data, how its strength was chosen, and which
recorded rows it must reproduce; the rows it names exist (fast: no model)."""

import pytest
from conftest import ROOT

from steer_core import methods
from steer_core.errors import UserError
from steer_core.provenance import RECORDS, golden_entries, record


@pytest.mark.parametrize("asset", sorted(RECORDS))
def test_every_shipped_asset_has_a_provenance_record(asset):
    prov = record(asset)
    assert prov["made_by"].startswith("python -m steer_core ")
    assert prov["data"] and prov["reproduces"]
    if asset in ("offsets", "residual"):  # a steering asset says how its strength was chosen
        assert {"rule", "chosen_alpha", "results"} <= set(prov["strength"])
        for name in prov["strength"]["results"].split(", "):
            assert (ROOT / name).is_file(), name


def test_the_named_rows_exist_and_steered_ones_carry_their_settings():
    entries = golden_entries()
    assert {g.method for g in entries} >= {"none", "sae", "query", "residual", "fewshot", "instruction"}
    for g in entries:
        rows = g.rows()
        assert rows, g
        if g.method in methods.steered():  # a steered row regenerates only if it records its settings
            assert all(r.get("config") not in (None, "", "-") for r in rows), g


def test_a_record_without_provenance_is_refused(tmp_path, monkeypatch):
    from steer_core import provenance

    bad = tmp_path / "offsets.json"
    bad.write_text('{"fit": {}}')
    monkeypatch.setitem(provenance.RECORDS, "offsets", bad)
    with pytest.raises(UserError, match="no provenance record"):
        record("offsets")
    bad.write_text('{"provenance": {"made_by": "x"}}')
    with pytest.raises(UserError, match="lacks data, reproduces"):
        record("offsets")
