"""Every command starts: each subcommand the CLI registers answers --help, and every import written inside a
function body (the late imports that keep startup fast, which nothing runs until the command does) names a module
and names that exist. `heads` once failed at its first line on an import of a function that had been removed."""

import ast
import importlib
import importlib.util
import subprocess
import sys

import pytest
from conftest import ROOT

from steer_core import cli

SOURCES = sorted(p for folder in ("steer_core", "ui") for p in (ROOT / folder).rglob("*.py")) + [
    p for p in [ROOT / "app.py"] if p.is_file()
]
IMPORT_GUARDS = ("ImportError", "ModuleNotFoundError")  # an import inside `try: ... except ImportError` is optional


def commands() -> dict:
    """Every subcommand name (aliases included) the CLI's parser registers, with its parser."""
    parser = cli.build_parser()
    (sub,) = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
    return dict(sub.choices)


def test_the_registry_is_read_not_listed():
    names = set(commands())
    assert {"judge", "generate", "eval", "heads", "train-adapter", "prepare", "bench"} <= names
    assert len(names) >= 15


@pytest.mark.parametrize("name", sorted(commands()))
def test_every_command_answers_help_and_runs_a_function(name, capsys):
    parser = cli.build_parser()
    with pytest.raises(SystemExit) as done:
        parser.parse_args([name, "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    command = commands()[name]  # an alias answers with its command's usage
    assert out.startswith(f"usage: {command.prog} ") and command.prog.startswith("python -m steer_core ")
    assert callable(command.get_default("func")), f"{name} has no command function"


def test_help_from_a_fresh_interpreter_lists_every_command():
    out = subprocess.run(
        [sys.executable, "-m", "steer_core", "--help"], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    missing = [name for name in commands() if name not in out.stdout]
    assert not missing, missing


def module_name(path) -> tuple[str, str]:
    """(the file's module name, the package its relative imports resolve against)."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
        return ".".join(parts), ".".join(parts)
    return ".".join(parts), ".".join(parts[:-1])


def _guarded(node, parents) -> bool:
    """Whether the import sits in the body of a try whose handlers catch a failed import."""
    child, node = node, parents.get(node)
    while node is not None:
        if isinstance(node, ast.Try) and child in node.body:
            for handler in node.handlers:
                caught = handler.type
                names = [caught] if not isinstance(caught, ast.Tuple) else list(caught.elts)
                if caught is None or any(isinstance(n, ast.Name) and n.id in IMPORT_GUARDS for n in names):
                    return True
        child, node = node, parents.get(node)
    return False


def late_imports(path) -> list[tuple[int, str, list[str]]]:
    """(line, absolute module, imported names) of every import inside a function body of the file; `import a.b`
    gives ("a.b", []), `from .x import y, z` gives the resolved module and [y, z]."""
    tree = ast.parse(path.read_text(), str(path))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    _, package = module_name(path)
    found = []
    for fn in ast.walk(tree):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(fn):
            if _guarded(node, parents):
                continue
            if isinstance(node, ast.Import):
                found += [(node.lineno, alias.name, []) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                target = importlib.util.resolve_name("." * node.level + (node.module or ""), package)
                found.append((node.lineno, target, [a.name for a in node.names if a.name != "*"]))
    return sorted(set((line, mod, tuple(names)) for line, mod, names in found))


def unresolved(path) -> list[str]:
    """Each late import of the file that fails: a module that does not import, or a name it lacks (neither an
    attribute nor a submodule)."""
    bad = []
    where = path.relative_to(ROOT)
    for line, target, names in late_imports(path):
        try:
            mod = importlib.import_module(target)
        except ImportError as exc:
            bad.append(f"{where}:{line}: import {target}: {exc}")
            continue
        for name in names:
            if hasattr(mod, name):
                continue
            try:
                importlib.import_module(f"{target}.{name}")
            except ModuleNotFoundError:
                bad.append(f"{where}:{line}: from {target} import {name}: {target} has no {name!r}")
    return bad


def test_late_imports_are_found_and_resolved_relative_to_their_package():
    fit = ROOT / "steer_core" / "cli" / "fit.py"
    assert module_name(fit) == ("steer_core.cli.fit", "steer_core.cli")
    assert module_name(ROOT / "steer_core" / "cli" / "__init__.py") == ("steer_core.cli", "steer_core.cli")
    found = late_imports(fit)
    assert any(mod == "steer_core.inspect.head_ranking" and "rank_heads" in names for _, mod, names in found)
    assert any(mod == "steer_core.fit.sae_training" for _, mod, _ in found)  # `from ..fit.sae_training import ...`


def test_every_import_inside_a_function_resolves():
    assert len(SOURCES) > 40
    bad = [msg for path in SOURCES for msg in unresolved(path)]
    assert not bad, "late imports that fail when their function runs:\n" + "\n".join(bad)


def test_bench_counts_the_weights_a_decoding_step_reads_and_reports_its_floor():
    """The floor's bytes are every Linear's weight and bias once (a tied output layer once); the report has each
    figure of the floor (their values are bench's to print, not a test's to bound)."""
    import torch
    from tiny import char_tokenizer, tiny_lm

    from steer_core.bench import decode_floor, weight_bytes
    from steer_core.generation import Request

    lm = tiny_lm(seed=2, tokenizer=char_tokenizer())
    linears = [m for m in lm.model.modules() if isinstance(m, torch.nn.Linear)]
    tensors = {p.data_ptr(): p for m in linears for p in (m.weight, m.bias) if p is not None}
    assert weight_bytes(lm) == sum(p.numel() * p.element_size() for p in tensors.values()) > 0
    got = decode_floor(lm, [Request("q?", "a.", "none")], 6, 1)
    ranges = {"read_gb_s_range", "decode_floor_ratio_range"}
    assert set(got) == {"decode_step_ms", "weight_mb", "read_gb_s", "decode_floor_ms", "decode_floor_ratio"} | ranges
    assert got["weight_mb"] == round(weight_bytes(lm) / 2**20, 1)
    assert all(v > 0 for k, v in got.items() if k not in ranges)
    assert all(0 < lo <= hi for lo, hi in (got[k] for k in ranges))


def test_bench_pairs_each_replys_step_with_the_bandwidth_read_right_after_it(monkeypatch):
    """A round's floor ratio is its reply's median step over the floor of the bandwidth read with it (not over the
    best bandwidth of the run); cold start is the median of its launches."""
    from steer_core import bench

    size = 10**9  # bytes: a floor of 1 / bandwidth seconds
    steps = iter([[0.02] * 4, [0.03] * 4, [0.05] * 4])
    bandwidths = iter([50.0, 25.0, 20.0])  # GB/s: floors of 20, 40 and 50 ms
    monkeypatch.setattr(bench, "weight_bytes", lambda lm: size)
    monkeypatch.setattr(bench, "_step_gaps", lambda lm, reqs, tokens: next(steps))
    monkeypatch.setattr(bench, "read_buffer", lambda: None)
    monkeypatch.setattr(bench, "read_bandwidth_gb_s", lambda buffer: next(bandwidths))
    got = bench.decode_floor(None, [], 6, 3)
    # rounds 1.0, 0.75, 1.0; the median step over the best bandwidth's floor would read 1.5
    assert got["decode_floor_ratio"] == 1.0 and got["decode_floor_ratio_range"] == [0.75, 1.0]
    assert got["read_gb_s"] == 25.0 and got["decode_floor_ms"] == 40.0 and got["decode_step_ms"] == 30.0
    launches = iter([9.8, 5.6, 5.9])
    monkeypatch.setattr(bench, "cold_start_s", lambda model: next(launches))
    assert bench.cold_starts("m", 3) == {"cold_start_s": 5.9, "cold_start_s_range": [5.6, 9.8]}
