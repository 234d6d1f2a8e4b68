"""The house rules, checked on the source: imports run one way (no circle, not even inside functions or under
TYPE_CHECKING; every import follows the order ARCHITECTURE.md states, and every module has a place in it), each name
is imported from the module that defines it, the user class lives in `gliner_jax/model.py`, and torch / gliner stay out
of the package except in `gliner_jax/testing/`, the optional `pytorch_model.bin` reader and, inside the functions that
run the reference, the benchmarks (`gliner_jax/bench/`, which nothing but the CLI imports)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import gliner_jax

PACKAGE = Path(gliner_jax.__file__).parent
ROOT = PACKAGE.parent
ARCHITECTURE = ROOT / "ARCHITECTURE.md"
# The public API, imported by gliner_jax/__init__.py for its users: the one re-export.
PUBLIC_API = {"GLiNER", "GLiNERConfig"}
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
    layouts (hub) knows only configs; text processing knows no model, file or device."""
    graph = package_graph()
    rules = {
        "gliner_jax.modeling.": ("gliner_jax.modeling", "gliner_jax.config"),
        "gliner_jax.evaluation": ("gliner_jax.data_formats", "gliner_jax.text."),
        "gliner_jax.text.": ("gliner_jax.text.", "gliner_jax.buckets", "gliner_jax.modeling.word_pooling"),
        "gliner_jax.hub": ("gliner_jax.config", "gliner_jax.modeling.encoders"),
    }
    for module, targets in graph.items():
        for prefix, allowed in rules.items():
            if module.startswith(prefix):
                outside = {t for t in targets if not t.startswith(allowed)}
                assert not outside, f"{module} imports {outside}"
    above_training = ("gliner_jax.training", "gliner_jax.cli", "gliner_jax.bench")
    below_training = [m for m in graph if not in_package(m, *above_training)]
    for module in below_training:
        assert not {t for t in graph[module] if in_package(t, "gliner_jax.training")}, module
    for module in (m for m in graph if not in_package(m, "gliner_jax.bench", "gliner_jax.cli")):
        assert not {t for t in graph[module] if in_package(t, "gliner_jax.bench")}, module


def in_package(module: str, *packages: str) -> bool:
    """Whether `module` is one of `packages` or inside one (gliner_jax.benchmark_suite is not in gliner_jax.bench)."""
    return any(module == package or module.startswith(f"{package}.") for package in packages)


def stated_order(text: str) -> list[list[str]]:
    """The levels of the "Imports run one way" section: per numbered line, its backticked module patterns
    (`training/*` is a package with everything in it)."""
    section = text.split("## Imports run one way", 1)[1].split("\n## ", 1)[0]
    levels: list[list[str]] = []
    for line in section.splitlines():
        if re.match(r"\d+\. ", line):
            levels.append([])
        elif not line.startswith("   ") or not levels:
            continue
        levels[-1] += re.findall(r"`([\w/*]+)`", re.sub(r"\([^)]*\)", "", line))  # remarks in brackets aside
    return levels


def level_of(module: str, levels: list[list[str]]) -> int | None:
    """The level whose pattern names `module` (a dotted name under gliner_jax), or None."""
    path = module.removeprefix("gliner_jax.").replace(".", "/")
    for index, patterns in enumerate(levels):
        for pattern in patterns:
            if path == pattern or (pattern.endswith("/*") and (path + "/").startswith(pattern[:-1])):
                return index
    return None


def test_imports_follow_the_stated_order():
    """Every module of the package (but the public `__init__` and `testing/`, which sits beside it) has a level in
    ARCHITECTURE.md, and imports only from its own level or those above it; only `cli` and the benchmarks reach into
    `testing/` (for the reference)."""
    levels = stated_order(ARCHITECTURE.read_text())
    graph = package_graph()
    placed = {m: level_of(m, levels) for m in graph if m != "gliner_jax" and not m.startswith("gliner_jax.testing")}
    unplaced = [m for m, level in placed.items() if level is None]
    assert not unplaced, f"modules without a place in ARCHITECTURE.md: {unplaced}"
    upward = [
        f"{module} -> {target}"
        for module, level in placed.items()
        for target in graph[module]
        if (in_package(target, "gliner_jax.testing") and not in_package(module, "gliner_jax.cli", "gliner_jax.bench"))
        or (target in placed and placed[target] > level)
    ]
    assert not upward, upward


def test_order_reader_reads_levels():
    text = "## Imports run one way\n\n1. `a` (reads `c`), `b/*`\n2. `d`,\n   `e`\n\n## Next\n3. `f`"
    levels = stated_order(text)
    assert levels == [["a", "b/*"], ["d", "e"]]
    assert level_of("gliner_jax.b.x", levels) == 0 and level_of("gliner_jax.b", levels) == 0
    assert level_of("gliner_jax.e", levels) == 1 and level_of("gliner_jax.bx", levels) is None


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
            lazy_reference = in_package(name, "gliner_jax.bench") and function is not None
            if root in ("torch", "gliner") and (name, function) not in TORCH_READERS and not lazy_reference:
                offenders.append(f"{name} ({function or 'module level'}) imports {target}")
    assert not offenders, offenders


def top_level_names(path: Path) -> tuple[set[str], set[str]]:
    """(names a module defines, names it imports) at its top level, `if` / `try` blocks included."""
    defined, imported = set(), set()
    nodes = list(ast.parse(path.read_text()).body)
    while nodes:
        node = nodes.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            defined.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            defined.update(name.id for target in targets for name in ast.walk(target) if isinstance(name, ast.Name))
        elif isinstance(node, ast.Import | ast.ImportFrom):
            imported.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, ast.If | ast.Try):
            nodes.extend(ast.iter_child_nodes(node))
    return defined, imported


def test_names_are_imported_from_their_home():
    """Every `from gliner_jax.X import name` in the package, tests, scripts and converters names a submodule of X or
    a name X defines: no module serves names it only imports (the public API of gliner_jax/__init__.py aside)."""
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    folders = ("gliner_jax", "tests", "scripts", "convert")
    sources = [path for folder in folders for path in (ROOT / folder).rglob("*.py")]
    offenders = []
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.ImportFrom) and node.level == 0 and node.module in modules):
                continue
            defined, imported = top_level_names(modules[node.module])
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}" in modules
                public = node.module == "gliner_jax" and alias.name in PUBLIC_API
                if not (submodule or public or alias.name in defined):
                    where = "re-exported" if alias.name in imported else "missing"
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.module}.{alias.name} ({where})")
    assert not offenders, offenders
