"""The package's layers (docs/design.md §10): every import, lazy ones and those only for type
checking included, goes to the module's own row or below, and no modules need each other."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "einsearch"

LAYERS = [  # top to bottom, as in docs/design.md §10; a package stands for its modules
    {"cli", "__main__"},
    {"einsearch", "benchmark", "bench_setup", "plot", "experiments"},
    {"search", "codegen"},
    {"analyze", "interpret"},
    {"planner", "canonical", "reference"},
    {"report", "network", "catalog", "options"},
    {"structure", "dsl", "expr", "sequence", "runtime", "outputs", "errors"},
]


def row(module: str) -> int:
    top = module.split(".")[0]
    return next(n for n, layer in enumerate(LAYERS) if top in layer)


def imports(path: Path, module: str) -> set[str]:
    """The einsearch modules ``path`` imports, anywhere in it (relative names resolved)."""
    tree = ast.parse(path.read_text())
    full = ["einsearch", *module.split(".")] if module != "einsearch" else ["einsearch"]
    package = full if path.name == "__init__.py" else full[:-1]
    found = set()
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif node.level:
            base = package[: len(package) - node.level + 1] + (node.module.split(".") if node.module else [])
            found |= {".".join(base)} if node.module else {".".join([*base, a.name]) for a in node.names}
        else:
            found.add(node.module)
    known = modules()
    found = {name.removeprefix("einsearch.") if name != "einsearch" else name for name in found
             if name.split(".")[0] == "einsearch"}  # fmt: skip
    return {owner(name, known) for name in found} - {module}


def owner(name: str, known: dict) -> str:
    """The module ``name`` lives in (``describe`` imported from the package: the package)."""
    while name not in known:
        name = name.rsplit(".", 1)[0] if "." in name else "einsearch"
    return name


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts) or "einsearch"
        found[name] = path
    return found


def test_every_module_has_a_row():
    assert {m.split(".")[0] for m in modules()} <= set().union(*LAYERS)


def test_no_module_imports_upward():
    upward = []
    for module, path in modules().items():
        for target in imports(path, module):
            if row(target) < row(module):
                upward.append(f"{module} -> {target}")
    assert not upward


def test_no_import_circle():
    """No chain of imports leads from a module back to itself (within a row too)."""
    graph = {module: imports(path, module) for module, path in modules().items()}
    done: set[str] = set()

    def visit(module: str, chain: list[str]) -> None:
        if module in chain:
            raise AssertionError(" -> ".join([*chain[chain.index(module) :], module]))
        if module in done:
            return
        for target in sorted(graph.get(module, ())):
            visit(target, [*chain, module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])


def test_report_renders_without_the_layers_that_compute():
    assert imports(PACKAGE / "report.py", "report") <= {"network", "structure", "options"}
