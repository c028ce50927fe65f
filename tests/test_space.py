"""A Space that a push accepts: every tracked binary file is covered by an LFS rule, the files the Space needs
are all there, and the dry run lists them with sizes. Nothing here reaches the network."""

import re

import pytest

from steer_core import space
from steer_core.cli import main as cli
from steer_core.errors import UserError
from steer_core.paths import ROOT


def test_every_tracked_binary_file_is_covered_by_an_lfs_rule():
    rules = space.lfs_rules()
    assert "*.safetensors" in rules and "*.png" in rules
    binaries = [p for p in space.tracked_files() if (ROOT / p).is_file() and space.is_binary(ROOT / p)]
    assert len(binaries) > 300  # the SAEs, offsets, adapter, judge and charts
    loose = [p for p in binaries if not any(space.matches(p, r) for r in rules)]
    assert not loose, f"binary files outside LFS rules (a Space push would be refused): {loose[:5]}"


def test_the_space_gets_what_it_needs_and_nothing_it_does_not():
    files = {f.path: f for f in space.check()}
    for needed in space.REQUIRED:
        assert needed in files
    ui = {p.name for p in (ROOT / "ui").glob("*.py")}
    assert ui and {p.removeprefix("ui/") for p in files if p.startswith("ui/")} >= ui  # every tab app.py wires
    layers = {m.group(1) for p in files if (m := re.search(r"assets/saes/[^/]+/layer_(\d+)/layer.json", p))}
    assert layers == {str(i) for i in range(30)}  # every layer the default steering reads
    assert any(p.startswith("assets/offsets/") for p in files) and any(p.startswith("assets/residual/") for p in files)
    assert not any(p.startswith(("tests/", "docs/", "experiments/", "runs/")) for p in files)
    assert all(f.lfs for p, f in files.items() if p.endswith(".safetensors"))


def test_the_readme_front_matter_configures_a_gradio_space():
    head = (ROOT / "README.md").read_text(encoding="utf-8").split("---")[1]
    assert "sdk: gradio" in head and "app_file: app.py" in head
    import gradio

    assert f"sdk_version: {gradio.__version__}" in head  # the Space runs the gradio the tests ran


def test_the_readme_is_a_newcomers_page_and_its_links_resolve():
    """Under 15 KB (the long form lives in docs/), and every relative link points at a file that exists."""
    import re

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.encode("utf-8")) < 15_000
    links = re.findall(r"\]\(((?:docs|assets)/[^)#]+)", text)
    assert links and all((ROOT / p).is_file() for p in links), [p for p in links if not (ROOT / p).is_file()]


def test_the_dry_run_lists_files_with_sizes_and_uploads_nothing(capsys):
    assert cli(["space", "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert any("LFS" in line and "adapter_model.safetensors" in line and "MB" in line for line in out)
    assert re.match(r"\d+ files, [\d.]+ MB \([\d.]+ MB through LFS\); nothing uploaded", out[-1])


def test_a_binary_outside_the_rules_is_named(tmp_path):
    (tmp_path / "app.py").write_text("print()\n")
    (tmp_path / "assets").mkdir()
    (tmp_path / "assets" / "weights.dat").write_bytes(b"\0\1\2")
    (tmp_path / ".gitattributes").write_text("*.safetensors filter=lfs diff=lfs merge=lfs -text\n")
    files = space.space_files(tmp_path)
    assert [f.path for f in files if not f.lfs] == [".gitattributes", "app.py", "assets/weights.dat"]
    with pytest.raises(UserError, match="would lack"):
        space.check(tmp_path)


def test_gitattributes_matching():
    assert space.matches("assets/a/b.safetensors", "*.safetensors")
    assert not space.matches("assets/a/b.safetensors.json", "*.safetensors")
    assert space.matches("docs/x.png", "docs/*.png") and not space.matches("x.png", "docs/*.png")
