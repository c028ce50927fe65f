"""The package's shape: no import cycle between steer_core modules (late imports inside functions
count too), and the core never imports gradio."""

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "steer_core"


def module_name(path: Path) -> str:
    rel = path.relative_to(PKG).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts) or "__init__"


def imports_of(path: Path) -> set[str]:
    """steer_core modules this file imports, as dotted names relative to the package (late imports too)."""
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
                target = [*base, *(node.module.split(".") if node.module else [])]
                out.add(".".join(target))
                out.update(".".join([*target, a.name]) for a in node.names)  # `from . import methods`
            elif node.module and node.module.startswith("steer_core."):
                out.add(node.module.removeprefix("steer_core."))
        elif isinstance(node, ast.Import):
            out.update(a.name.removeprefix("steer_core.") for a in node.names if a.name.startswith("steer_core."))
    return out


def graph() -> dict[str, set[str]]:
    mods = {module_name(p): p for p in PKG.rglob("*.py")}
    return {m: {d for d in imports_of(p) if d in mods and d != m} for m, p in mods.items()}


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for d in sorted(g[m]):
            if state.get(d) == 1:
                return stack[stack.index(d) :] + [d]
            if d not in state:
                found = visit(d)
                if found:
                    return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(g):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return None


def test_no_import_cycle_in_steer_core():
    cycle = find_cycle(graph())
    assert cycle is None, " -> ".join(cycle)


def test_cycle_finder_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_core_never_imports_gradio():
    for p in PKG.rglob("*.py"):
        tree = ast.parse(p.read_text())
        names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        assert not any(n.split(".")[0] == "gradio" for n in names), p.name


INFERENCE = ("model", "sae", "steering", "generation", "inspect", "judge.classifier", "views", "prompts", "bloom")
FITTING = ("fit", "judge.fitting")
VIEWS = ("views",)


def _in(module: str, places) -> bool:
    return any(module == p or module.startswith(p + ".") for p in places)


def test_the_folders_keep_their_rules():
    """Where code runs, by folder: inference (the model, SAEs, steering, generation, inspection, the judge's
    classifier, the views a user runs) imports no fitting code, statically or late; fitting imports no views."""
    g = graph()
    assert {m.split(".")[0] for m in g} >= {"model", "sae", "steering", "fit", "inspect", "judge", "views", "cli"}
    bad = [
        f"{m} -> {d}"
        for m, deps in g.items()
        for d in deps
        if (_in(m, INFERENCE) and _in(d, FITTING)) or (_in(m, FITTING) and _in(d, VIEWS))
    ]
    assert not bad, bad


def test_inference_loads_no_fitting_code():
    """Generating steered text (and the views the app runs) loads the file formats and the steering, never
    the fitting loops: those load only when something has to be fitted."""
    import subprocess
    import sys

    code = (
        "import sys, steer_core.generation, steer_core.views.compare, steer_core.views.ladder\n"
        "print(' '.join(m.removeprefix('steer_core.') for m in sys.modules if m.startswith('steer_core.')))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert "generation" in loaded and "steering.offset_files" in loaded
    assert not [m for m in loaded if _in(m, FITTING) or m.startswith("evaluation")], loaded


ROOT = PKG.parent
UI = ROOT / "ui"
MAX_FUNCTION_LINES = 60


def _ui_files() -> list[Path]:
    return [ROOT / "app.py", *sorted(UI.glob("*.py"))]


def _absolute_imports(path: Path) -> set[str]:
    """The modules a UI file imports (late imports too), as absolute dotted names."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = "ui" if node.level else ""
            module = ".".join(p for p in (base, node.module or "") if p)
            out.add(module)
            out.update(f"{module}.{a.name}" for a in node.names)  # `from ui import runtime`
    return out


def test_no_function_over_sixty_lines():
    """Every function (nested ones too) of the engine, the UI and app.py fits on a screen."""
    long = []
    for p in [*PKG.rglob("*.py"), *_ui_files()]:
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{p.relative_to(ROOT)}:{node.lineno} {node.name} ({n} lines)")
    assert not long, long


def test_app_is_a_thin_entry_point():
    assert len((ROOT / "app.py").read_text().splitlines()) < 100


def test_no_module_both_builds_widgets_and_runs_the_model():
    """The UI (ui/ and app.py) imports no torch, no steer_core.generation and no steer_core.model module, at
    import or late; the one exception is ui/runtime.py, which loads the model (steer_core.model.loading)."""
    bad = []
    for p in _ui_files():
        allowed = {"steer_core.model.loading"} if p == UI / "runtime.py" else set()
        for m in _absolute_imports(p):
            runs_model = m.split(".")[0] == "torch" or _in(m, ("steer_core.generation", "steer_core.model"))
            if runs_model and not any(_in(m, (a,)) for a in allowed):
                bad.append(f"{p.relative_to(ROOT)} -> {m}")
    assert not bad, bad


def test_no_import_cycle_in_ui():
    mods = {p.stem for p in UI.glob("*.py")}
    g = {}
    for p in UI.glob("*.py"):
        deps = {m.split(".")[1] for m in _absolute_imports(p) if m.startswith("ui.") and m.split(".")[1] in mods}
        g[p.stem] = deps - {p.stem}
    cycle = find_cycle(g)
    assert cycle is None, " -> ".join(cycle)
