"""The package's shape, checked from its source: every import points one way (no cycle, counting imports inside
functions), modules stay small, and the measurement tools are not shipped."""

import ast
from pathlib import Path

from conftest import ROOT

PACKAGE = ROOT / "food101hf"
# demo.py is one concern (a painter per dish) at 361 lines; splitting it would scatter one drawing style
LONG_MODULES = {"demo"}


def _own_imports(path: Path) -> set[str]:
    """The food101hf modules a file imports, at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and (node.level == 1 or (node.module or "").startswith("food101hf")):
            module = (node.module or "").removeprefix("food101hf").lstrip(".")
            found |= {module.split(".")[0]} if module else {alias.name for alias in node.names}
    return found


def _graph() -> dict[str, set[str]]:
    modules = {p.stem: p for p in PACKAGE.glob("*.py")} | {"metrics": PACKAGE / "metrics" / "__init__.py"}
    return {name: _own_imports(path) & set(modules) - {name} for name, path in modules.items()}


def test_the_package_has_no_import_cycle():
    graph, done, path = _graph(), set(), []

    def visit(module: str) -> None:
        assert module not in path, f"import cycle: {' -> '.join(path[path.index(module):] + [module])}"
        if module in done:
            return
        path.append(module)
        for imported in graph[module]:
            visit(imported)
        path.pop()
        done.add(module)

    for module in graph:
        visit(module)


def test_modules_stay_small_and_measurement_tools_are_not_shipped():
    sizes = {p.stem: len(p.read_text(encoding="utf-8").splitlines()) for p in PACKAGE.glob("*.py")}
    assert {name for name, lines in sizes.items() if lines > 300} <= LONG_MODULES, sizes
    assert not {"bench", "device_check", "naive_loop"} & set(sizes)
    assert {"bench.py", "device_check.py", "naive_loop.py"} <= {p.name for p in (ROOT / "benchmarks").iterdir()}


def test_every_exception_type_lives_in_errors():
    defined = {p.stem: [node.name for node in ast.walk(ast.parse(p.read_text(encoding="utf-8")))
                        if isinstance(node, ast.ClassDef) and node.name.endswith("Error")]
               for p in PACKAGE.glob("*.py")}
    assert {name for name, classes in defined.items() if classes} == {"errors"}



def test_every_json_the_package_writes_refuses_nan():
    """json.dumps writes NaN and Infinity, which are not JSON (a diverged run's metrics.json had `"eval_loss": NaN`):
    every dump in the package passes allow_nan=False, so a non-finite value fails where it is written."""
    dumps = {(path.name, node.lineno): node for path in PACKAGE.glob("*.py")
             for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
             if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
             and node.func.attr in ("dump", "dumps") and getattr(node.func.value, "id", None) == "json"}
    assert len(dumps) >= 6  # metrics.json (run, report), config.json, progress.json, audit.json, predict's lines...
    lenient = [where for where, call in dumps.items()
               if not any(k.arg == "allow_nan" and getattr(k.value, "value", None) is False for k in call.keywords)]
    assert lenient == []
