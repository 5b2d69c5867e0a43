"""Static layering check (DESIGN section 2), by parsing the source with ``ast``: every import at any
level, inside functions too, so a lazy ``from export import ...`` cannot hide from it.

- ``agent/`` never imports ``export``, ``training``, ``deploy``, ``torch`` or ``torchvision`` (a Jetson
  installs ``.[agent]`` only; export may import the agent, never the reverse).
- ``contract/`` imports only the standard library, pydantic and itself; its CLI module
  (``contract/cli.py``, the ``binwatch contract`` group) may also import typer and rich, like every
  CLI module.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hw import REPO

AGENT_FORBIDDEN = frozenset({"export", "training", "deploy", "torch", "torchvision"})
CONTRACT_ALLOWED = frozenset({"pydantic", "contract", "__future__"})
CLI_ALLOWED = frozenset({"typer", "rich"})  # only in a package's cli.py
STDLIB = frozenset(sys.stdlib_module_names)
DYNAMIC_IMPORTERS = frozenset({"import_module", "__import__"})


def _sources(package: str) -> list[Path]:
    return sorted(p for p in (REPO / package).rglob("*.py") if "__pycache__" not in p.parts)


def imports(path: Path) -> Iterator[tuple[int, str]]:
    """``(line, top-level module)`` for every absolute import in ``path``: ``import x.y``,
    ``from x import y`` and ``importlib.import_module("x.y")`` / ``__import__("x")`` with a literal
    name. Relative imports stay inside the package and are skipped."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module:
                yield node.lineno, node.module.split(".")[0]
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            arg = node.args[0]
            literal = arg.value if isinstance(arg, ast.Constant) and isinstance(arg.value, str) else None
            if name in DYNAMIC_IMPORTERS and literal and not literal.startswith("."):
                yield node.lineno, literal.split(".")[0]


def _where(path: Path, line: int, module: str) -> str:
    return f"{path.relative_to(REPO).as_posix()}:{line}: imports {module}"


def agent_violations() -> list[str]:
    return [
        _where(path, line, module)
        for path in _sources("agent")
        for line, module in imports(path)
        if module in AGENT_FORBIDDEN
    ]


def contract_violations() -> list[str]:
    return [
        _where(path, line, module)
        for path in _sources("contract")
        for line, module in imports(path)
        if module not in STDLIB
        and module not in CONTRACT_ALLOWED
        and not (path.name == "cli.py" and module in CLI_ALLOWED)
    ]


def test_the_check_sees_the_sources() -> None:
    agent_files = {p.relative_to(REPO).as_posix() for p in _sources("agent")}
    assert {"agent/backends/tensorrt_backend.py", "agent/backends/tensorrt_build.py"} <= agent_files
    assert (REPO / "contract" / "card.py") in _sources("contract")


def test_agent_never_imports_export_training_deploy_or_torch() -> None:
    found = agent_violations()
    assert found == [], "agent/ must not import these (DESIGN section 2):\n" + "\n".join(found)


def test_contract_imports_only_stdlib_pydantic_and_itself() -> None:
    found = contract_violations()
    assert found == [], "contract/ may import stdlib and pydantic only:\n" + "\n".join(found)


@pytest.mark.parametrize(
    ("source", "want"),
    [
        ("import export.engine\n", [(1, "export")]),
        ("def f():\n    from training.engine import evaluate\n", [(2, "training")]),
        ("class A:\n    def m(self):\n        import torch as t, numpy\n", [(3, "torch"), (3, "numpy")]),
        ("import importlib\nm = importlib.import_module('deploy.cli')\n", [(1, "importlib"), (2, "deploy")]),
        ("try:\n    import torchvision\nexcept ImportError:\n    pass\n", [(2, "torchvision")]),
        ("from . import base\nfrom .backends import fake\n", []),
    ],
)
def test_every_import_form_is_found(tmp_path: Path, source: str, want: list[tuple[int, str]]) -> None:
    f = tmp_path / "m.py"
    f.write_text(source)
    assert sorted(imports(f)) == sorted(want)


def test_violations_name_file_and_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Planted bad imports in a copy of the layout are reported as ``file:line``."""
    (tmp_path / "agent").mkdir()
    (tmp_path / "contract").mkdir()
    (tmp_path / "agent" / "bad.py").write_text("import json\n\ndef f():\n    from export import engine\n")
    (tmp_path / "contract" / "bad.py").write_text("import json\nimport numpy as np\nimport pydantic\n")
    (tmp_path / "contract" / "cli.py").write_text("import typer\nimport torch\n")
    (tmp_path / "contract" / "card.py").write_text("import typer\n")
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    assert agent_violations() == ["agent/bad.py:4: imports export"]
    assert contract_violations() == [
        "contract/bad.py:2: imports numpy",
        "contract/card.py:1: imports typer",
        "contract/cli.py:2: imports torch",
    ]
