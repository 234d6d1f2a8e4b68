"""The house rules, checked on the source: imports run one way (no circle, not even inside functions or under
TYPE_CHECKING), the user class lives in `gliner_jax/model.py`, and torch / gliner stay out of the package except in
`gliner_jax/testing/` and the optional `pytorch_model.bin` reader."""

from __future__ import annotations

import ast
from pathlib import Path

import gliner_jax

PACKAGE = Path(gliner_jax.__file__).parent
# (module, function) allowed to import torch: reading pytorch_model.bin needs it (the torch extra).
TORCH_READERS = {("gliner_jax.checkpoint_io", "read_tensors")}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> list[tuple[str, str | None]]:
    """(imported module, enclosing function or None) for every import statement anywhere in the file, resolving
    `from X import name` to the submodule X.name where that is a module of the package."""
    tree = ast.parse(path.read_text())
    found = []

    def visit(node: ast.AST, function: str | None) -> None:
        for child in ast.iter_child_nodes(node):
            inner = child.name if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef) else function
            if isinstance(child, ast.Import):
                found.extend((alias.name, function) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                found.append((child.module, function))
                found.extend((f"{child.module}.{alias.name}", function) for alias in child.names)
            visit(child, inner)

    visit(tree, None)
    return found


def package_graph() -> dict[str, set[str]]:
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        targets = {target for target, _ in imports_of(path) if target in modules and target != name}
        graph[name] = targets
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return [*stack[stack.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle():
    graph = package_graph()
    assert "gliner_jax.model" in graph and "gliner_jax.modeling.encoders.deberta" in graph
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_layers_import_downwards_only():
    """Model code knows nothing of files, data or training; evaluation knows no model class; resolving names and
    layouts (hub) knows only configs."""
    graph = package_graph()
    rules = {
        "gliner_jax.modeling.": ("gliner_jax.modeling", "gliner_jax.config", "gliner_jax._deprecation"),
        "gliner_jax.evaluation": ("gliner_jax.data_formats", "gliner_jax.processing", "gliner_jax._deprecation"),
        "gliner_jax.hub": ("gliner_jax.config", "gliner_jax.modeling.encoders"),
    }
    for module, targets in graph.items():
        for prefix, allowed in rules.items():
            if module.startswith(prefix):
                outside = {t for t in targets if not t.startswith(allowed)}
                assert not outside, f"{module} imports {outside}"
    below_training = [m for m in graph if not m.startswith(("gliner_jax.training", "gliner_jax.cli"))]
    for module in below_training:
        assert not {t for t in graph[module] if t.startswith("gliner_jax.training")}, module


def test_user_class_lives_in_model_py():
    assert gliner_jax.GLiNER.__module__ == "gliner_jax.model"


def test_torch_and_gliner_only_in_testing_and_the_bin_reader():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        name = module_name(path)
        if name.startswith("gliner_jax.testing"):
            continue
        for target, function in imports_of(path):
            root = target.split(".")[0]
            if root in ("torch", "gliner") and (name, function) not in TORCH_READERS:
                offenders.append(f"{name} ({function or 'module level'}) imports {target}")
    assert not offenders, offenders
