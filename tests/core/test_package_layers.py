"""The top-level packages form layers: a package imports only from the layers below it (docs/architecture.md).

This is what keeps ``core`` and ``modeling`` usable without the engine (export, a user's own training loop) and the
engine free of any one model. The test reads every import statement (absolute and relative) rather than importing, so
a lazy import inside a function counts as much as one at the top of a file.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: what each top-level package may import from, besides itself (and the standard library / third parties)
ALLOWED = {
    "core": set(),
    "modeling": {"core"},
    "data": {"core"},
    "evaluation": {"core", "data"},
    "engine": {"core", "data", "evaluation"},
    "configs": {"core", "data", "evaluation", "engine", "modeling"},
    "projects": {"core", "data", "evaluation", "engine", "modeling", "configs"},
    "scripts": {"core", "data", "evaluation", "engine", "modeling"},
    "tools": {"core", "data", "evaluation", "engine", "modeling"},
}


def imported_packages(path: Path) -> set[tuple[str, int]]:
    """(top-level module, line) for every import in ``path``, relative imports resolved against its location."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(parts[: len(parts) - node.level])
                names = [".".join(base + ([node.module] if node.module else []))]
            else:
                names = [node.module or ""]
        else:
            continue
        found.update((name.split(".")[0], node.lineno) for name in names if name)
    return found


def layer_violations(package: str) -> list[str]:
    forbidden = (set(ALLOWED) | {"tests"}) - ALLOWED[package] - {package}
    return [
        f"{path.relative_to(ROOT)}:{line} imports {top}"
        for path in sorted((ROOT / package).rglob("*.py"))
        for top, line in sorted(imported_packages(path))
        if top in forbidden
    ]


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_lower_layers(package):
    assert layer_violations(package) == []


def test_layers_form_no_cycle():
    order = []
    remaining = dict(ALLOWED)
    while remaining:
        ready = sorted(name for name, deps in remaining.items() if deps <= set(order))
        assert ready, f"import cycle among {sorted(remaining)}"
        order += ready
        for name in ready:
            del remaining[name]
    assert order.index("core") == 0


def test_scanner_sees_relative_and_lazy_imports(tmp_path, monkeypatch):
    package = tmp_path / "modeling" / "sub"
    package.mkdir(parents=True)
    (package / "mod.py").write_text(
        "from ...engine import hooks\ndef f():\n    import evaluation.coco_evaluation\nfrom . import sibling\n"
    )
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    assert layer_violations("modeling") == [
        "modeling/sub/mod.py:1 imports engine",
        "modeling/sub/mod.py:3 imports evaluation",
    ]
