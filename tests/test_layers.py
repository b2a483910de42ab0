"""The library's import layering, read from the source (every `import`, including those inside functions).

One line per layer, bottom to top; a module may import its own layer or those below, never one above:

0. foundations: geometry and data formats, files, errors, logging, determinism, the params schema, storage and
   tracking plumbing (`template`, `densepose`, `raycast`, `io`, `errors`, `log`, `determinism`, `config`, ...).
1. computing libraries (`render`, `cse`, `models`, `losses`, `eval`, `pseudo_gt`, `train`, `data`, `registry`,
   `cluster`): they take typed arguments, never the whole `Params`, and never import a stage module.
2. stage modules (`*/stage.py`, `train/pretrain.py`, `train/finetune.py`, `predict.py`, `eval/pipeline.py`, the
   tool commands): the only code that reads the whole `Params`; they compose train -> predict -> evaluate.
3. `bodymap.cli`, which loads the stage modules by name.

There are no cycles between modules, counting imports inside functions, so no function-local import can dodge
one. A function-local import of a bodymap module is allowed only where `LAZY` says why.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

FOUNDATIONS = {
    "bodymap",
    "bodymap.cli_options",
    "bodymap.cluster_schema",
    "bodymap.config",
    "bodymap.densepose",
    "bodymap.determinism",
    "bodymap.errors",
    "bodymap.io",
    "bodymap.log",
    "bodymap.raycast",
    "bodymap.remote",
    "bodymap.schema",
    "bodymap.shards",
    "bodymap.storage",
    "bodymap.tracking",
}
FOUNDATION_PACKAGES = ("bodymap.template",)
LIBRARY_PACKAGES = (
    "bodymap.cluster",
    "bodymap.cse",
    "bodymap.data",
    "bodymap.eval",
    "bodymap.losses",
    "bodymap.models",
    "bodymap.pseudo_gt",
    "bodymap.registry",
    "bodymap.render",
    "bodymap.train",
)
STAGES = {
    "bodymap.cluster.cli",
    "bodymap.eval.pipeline",
    "bodymap.params_cli",
    "bodymap.predict",
    "bodymap.tracking_cli",
    "bodymap.train.finetune",
    "bodymap.train.pretrain",
}
CLI = {"bodymap.cli"}
LAYER_NAMES = ("foundations", "computing libraries", "stage modules", "cli")
# Below the stages, only these build a `Params` (they load it for a command; they read none of it).
PARAMS_LOADERS = {"bodymap.cli_options"}

# (importer, imported) -> why the import waits until the function runs. Only heavy dependencies qualify.
LAZY = {
    ("bodymap.render.stage", "bodymap.render.run"): "torch, Warp and Anny load only when rendering",
    ("bodymap.render.run", "bodymap.render.renderer"): "Anny and torch load in the render workers, not when merging",
    ("bodymap.render.run", "bodymap.render.writer"): "imports the renderer (Anny, torch): render workers only",
    ("bodymap.render.poses", "bodymap.template.anny_body"): "torch and Anny load only when posing",
    ("bodymap.template.build", "bodymap.template.anny_body"): "torch and Anny load only for an Anny template",
    ("bodymap.template.mesh", "bodymap.template.charts"): "scipy loads only when a mesh's edges are asked for",
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in (SRC / "bodymap").rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def layer(module: str) -> int:
    if module in CLI:
        return 3
    if module in STAGES or module.endswith(".stage"):
        return 2
    if module in FOUNDATIONS or module.startswith(FOUNDATION_PACKAGES):
        return 0
    if module.startswith(LIBRARY_PACKAGES):
        return 1
    raise AssertionError(f"{module}: in no layer; add it to tests/test_layers.py")


def _target(module: str, path: Path, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The bodymap modules one import statement loads (a name imported from a package may be a submodule)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
            base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
    out = []
    for name in names:
        if not name.startswith("bodymap"):
            continue
        while name not in MODULES and "." in name:
            name = name.rsplit(".", 1)[0]
        out.append(name)
    return out


def _imports() -> list[tuple[str, str, bool, int]]:
    """(importer, imported, inside a function, line) for every bodymap import in src/bodymap."""
    found = []
    for module, path in MODULES.items():

        def visit(node: ast.AST, local: bool, module: str = module, path: Path = path) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.Import | ast.ImportFrom):
                    found.extend((module, t, local, child.lineno) for t in _target(module, path, child) if t != module)
                visit(child, local or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda))

        visit(ast.parse(path.read_text()), False)
    return found


IMPORTS = _imports()


def test_every_module_has_a_layer():
    for module in MODULES:
        layer(module)


def test_no_module_imports_a_layer_above_its_own():
    climbs = [
        f"{a}:{line} ({LAYER_NAMES[layer(a)]}) imports {b} ({LAYER_NAMES[layer(b)]})"
        for a, b, _, line in IMPORTS
        if layer(b) > layer(a)
    ]
    assert not climbs, "\n".join(climbs)


def test_no_import_cycles_counting_function_local_imports():
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for a, b, _, _ in IMPORTS:
        graph[a].add(b)
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def walk(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = [*path[path.index(nxt) :], nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                walk(nxt, [*path, nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            walk(module, [module])


def test_function_local_imports_are_only_the_listed_heavy_ones():
    local = {(a, b): line for a, b, inside, line in IMPORTS if inside}
    unlisted = [f"{a}:{line} imports {b} inside a function" for (a, b), line in local.items() if (a, b) not in LAZY]
    assert not unlisted, "\n".join(unlisted) + "\n(hoist it, or add it to LAZY with the reason)"
    stale = sorted(set(LAZY) - set(local))
    assert not stale, f"LAZY lists imports that are no longer function-local: {stale}"


def test_only_stage_modules_read_the_whole_params():
    readers = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.ImportFrom) and node.module == "bodymap.config"):
                continue
            if any(a.name == "Params" for a in node.names) and layer(module) < 2 and module not in PARAMS_LOADERS:
                readers.append(f"{module}:{node.lineno}")
    assert not readers, "below the stage modules, take the params sections (or typed arguments): " + ", ".join(readers)


def test_the_rules_see_a_climb_a_cycle_and_a_local_import():
    """The checks above would fail on a library importing a stage, on a cycle and on an unlisted lazy import."""
    source = "def f():\n    from bodymap.eval.stage import main\n"
    node = ast.parse(source).body[0].body[0]
    (target,) = _target("bodymap.losses.total", MODULES["bodymap.losses.total"], node)
    assert target == "bodymap.eval.stage" and layer(target) > layer("bodymap.losses.total")
    assert ("bodymap.losses.total", target) not in LAZY
