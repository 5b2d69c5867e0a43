"""Static architecture checks (docs/architecture.md, "Who may import what"), by parsing the source
with ``ast``: every import at any level, inside functions and under ``if TYPE_CHECKING:`` too, so a
lazy or type-only import cannot hide.

- Each package imports only the first-party packages its row allows (:data:`RULES`); the agent never
  imports torch, training, export, deploy or the operator side; training and export reach the agent
  only through ``agent.surface``.
- Inside ``agent/`` the stages flow one way: intake -> inference -> delivery, web beside delivery;
  a stage imports no top-level agent module but ``agent.metrics`` (:data:`AGENT_STAGES`).
- No import circle between the modules of ``agent/``, ``training/`` or any other package.
- No object touches another object's ``_private`` attributes (first-party names only).
- ``contract/`` imports only the standard library, pydantic and itself (its CLI module also typer,
  rich and ``binwatch.cliutil``; ``contract/signing.py`` also ``cryptography``).
- Product modules stay under :data:`MAX_MODULE_LINES` lines and functions under
  :data:`MAX_FUNCTION_LINES` (one concept per module; a function a reader can hold in mind).
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hw import REPO

PACKAGES = ("contract", "mqttconn", "agent", "console", "training", "export", "deploy", "demo", "binwatch")
STDLIB = frozenset(sys.stdlib_module_names)
DYNAMIC_IMPORTERS = frozenset({"import_module", "__import__"})

# package -> first-party module prefixes it may import ("x" allows x and x.anything).
RULES: dict[str, tuple[str, ...]] = {
    "contract": ("contract", "binwatch.cliutil"),  # cliutil: only in contract/cli.py (see below)
    "mqttconn": ("mqttconn", "contract"),
    "agent": ("agent", "contract", "mqttconn", "binwatch.cliutil", "binwatch"),
    "console": ("console", "contract", "mqttconn", "binwatch.cliutil"),
    "training": ("training", "contract", "agent.surface", "binwatch.cliutil"),
    "export": ("export", "contract", "training", "agent.surface", "binwatch.cliutil"),
    "deploy": ("deploy", "contract", "mqttconn", "binwatch.cliutil"),
    # the demo drives the other parts as `python -m binwatch ...` processes, never by import
    "demo": ("demo", "contract", "mqttconn", "binwatch.cliutil"),
    "binwatch": ("binwatch",),  # command groups are registered by name (binwatch.cli._GROUPS)
}
# Third-party packages a package must never import, whatever else it does.
FORBIDDEN_THIRD_PARTY: dict[str, frozenset[str]] = {
    "agent": frozenset({"torch", "torchvision"}),
    "console": frozenset({"torch", "torchvision"}),
    "demo": frozenset({"torch", "torchvision"}),
    "mqttconn": frozenset({"torch", "torchvision", "numpy"}),
}
CONTRACT_THIRD_PARTY = frozenset({"pydantic"})
CLI_THIRD_PARTY = frozenset({"typer", "rich"})
SIGNING_THIRD_PARTY = frozenset({"cryptography"})  # only in contract/signing.py

MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80

# agent stage -> the agent modules it may import (besides its own stage).
AGENT_STAGES: dict[str, tuple[str, ...]] = {
    "agent.intake": ("agent.metrics",),
    "agent.inference": ("agent.intake", "agent.metrics"),
    "agent.delivery": ("agent.inference", "agent.intake", "agent.metrics"),
    "agent.web": ("agent.inference", "agent.intake", "agent.metrics"),
    "agent.update": ("agent.inference", "agent.metrics"),
}


# -- reading the sources ---------------------------------------------------------------------------
def sources(package: str) -> list[Path]:
    return sorted(p for p in (REPO / package).rglob("*.py") if "__pycache__" not in p.parts)


def module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path) -> Iterator[tuple[int, str]]:
    """``(line, dotted module)`` for every import in ``path``: ``import x.y``, ``from x import y``
    (``x.y`` when that is a module of ours, else ``x``), relative imports resolved, and
    ``importlib.import_module("x.y")`` / ``__import__("x")`` with a literal name."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                mod = ".".join([*base, *([node.module] if node.module else [])])
            else:
                mod = node.module or ""
            for alias in node.names:
                sub = f"{mod}.{alias.name}"
                yield node.lineno, sub if _is_module(sub) else mod
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            arg = node.args[0]
            literal = arg.value if isinstance(arg, ast.Constant) and isinstance(arg.value, str) else None
            if name in DYNAMIC_IMPORTERS and literal and not literal.startswith("."):
                yield node.lineno, literal


def _is_module(dotted: str) -> bool:
    p = REPO.joinpath(*dotted.split("."))
    return p.with_suffix(".py").is_file() or (p / "__init__.py").is_file()


def _within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _where(path: Path, line: int, module: str) -> str:
    return f"{path.relative_to(REPO).as_posix()}:{line}: imports {module}"


# -- the checks ----------------------------------------------------------------------------------
def package_violations() -> list[str]:
    found = []
    for package, allowed in RULES.items():
        forbidden = FORBIDDEN_THIRD_PARTY.get(package, frozenset())
        for path in sources(package):
            for line, mod in imported_modules(path):
                top = mod.split(".")[0]
                if (top in PACKAGES and not _within(mod, allowed)) or top in forbidden:
                    found.append(_where(path, line, mod))
    return found


def contract_violations() -> list[str]:
    found = []
    for path in sources("contract"):
        for line, mod in imported_modules(path):
            top = mod.split(".")[0]
            if top in STDLIB or top == "contract" or top in CONTRACT_THIRD_PARTY:
                continue
            if path.name == "cli.py" and (top in CLI_THIRD_PARTY or _within(mod, ("binwatch.cliutil",))):
                continue
            if path.relative_to(REPO).as_posix() == "contract/signing.py" and top in SIGNING_THIRD_PARTY:
                continue
            found.append(_where(path, line, mod))
    return found


def stage_violations() -> list[str]:
    found = []
    for path in sources("agent"):
        me = module_name(path)
        stage = next((s for s in AGENT_STAGES if _within(me, (s,))), None)
        if stage is None:
            continue
        allowed = (stage, *AGENT_STAGES[stage])
        for line, mod in imported_modules(path):
            if _within(mod, ("agent",)) and not _within(mod, allowed):
                found.append(_where(path, line, mod))
    return found


def import_graph(package: str) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in sources(package):
        me = module_name(path)
        deps = graph.setdefault(me, set())
        for _line, mod in imported_modules(path):
            if _within(mod, (package,)) and mod != me and _is_module(mod):
                deps.add(mod)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def private_names(packages: tuple[str, ...]) -> set[str]:
    """``_names`` our own classes define: ``self._x = ...``, ``_x: T`` fields, ``def _x``."""
    names: set[str] = set()
    for package in packages:
        for path in sources(package):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ClassDef):
                    for item in node.body:
                        if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                            names.add(item.name)
                        elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                            names.add(item.target.id)
                elif (
                    isinstance(node, ast.Attribute)
                    and isinstance(node.ctx, ast.Store)
                    and isinstance(node.value, ast.Name)
                    and node.value.id == "self"
                ):
                    names.add(node.attr)
    return {n for n in names if n.startswith("_") and not n.startswith("__")}


def private_access_violations(packages: tuple[str, ...] = PACKAGES) -> list[str]:
    ours = private_names(packages)
    found = []
    for package in packages:
        for path in sources(package):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if not (isinstance(node, ast.Attribute) and node.attr in ours):
                    continue
                owner = node.value
                if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
                    continue
                if isinstance(owner, ast.Call) and getattr(owner.func, "id", "") == "super":
                    continue
                found.append(f"{path.relative_to(REPO).as_posix()}:{node.lineno}: {ast.unparse(node)}")
    return found


def size_violations(packages: tuple[str, ...] = PACKAGES) -> list[str]:
    found = []
    for package in packages:
        for path in sources(package):
            src = path.read_text(encoding="utf-8")
            rel = path.relative_to(REPO).as_posix()
            if src.count("\n") > MAX_MODULE_LINES:
                found.append(f"{rel}: {src.count(chr(10))} lines")
            for node in ast.walk(ast.parse(src)):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    n = (node.end_lineno or node.lineno) - node.lineno + 1
                    if n > MAX_FUNCTION_LINES:
                        found.append(f"{rel}:{node.lineno}: {node.name}() is {n} lines")
    return found


# -- tests -----------------------------------------------------------------------------------------
def test_the_check_sees_the_sources() -> None:
    agent_files = {p.relative_to(REPO).as_posix() for p in sources("agent")}
    assert {"agent/runtime.py", "agent/inference/backends/tensorrt_build.py"} <= agent_files
    assert (
        "agent.inference.backends.engine_cache"
        in import_graph("agent")["agent.inference.backends.tensorrt_build"]
    )
    assert (REPO / "contract" / "card.py") in sources("contract")


def test_packages_import_only_what_their_row_allows() -> None:
    found = package_violations()
    assert found == [], "imports outside docs/architecture.md's table:\n" + "\n".join(found)


def test_contract_imports_only_stdlib_pydantic_and_itself() -> None:
    found = contract_violations()
    assert found == [], (
        "contract/ may import stdlib and pydantic only (cryptography in signing.py):\n" + "\n".join(found)
    )


def test_agent_stages_flow_one_way() -> None:
    found = stage_violations()
    assert found == [], "an agent stage imports against the flow:\n" + "\n".join(found)


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_circle(package: str) -> None:
    found = cycles(import_graph(package))
    assert found == [], f"import circles in {package}/ (type-only and lazy imports count):\n" + "\n".join(
        " <-> ".join(c) for c in found
    )


def test_no_object_touches_another_objects_private_parts() -> None:
    found = private_access_violations()
    assert found == [], "access to another object's _private attribute:\n" + "\n".join(found)


def test_modules_and_functions_stay_small() -> None:
    found = size_violations()
    assert found == [], (
        f"over {MAX_MODULE_LINES} lines per module / {MAX_FUNCTION_LINES} per function:\n" + "\n".join(found)
    )


def test_no_script_shadows_a_package() -> None:
    """``python bench/NAME.py`` puts ``bench/`` first on ``sys.path``: a ``bench/agent.py`` would be
    imported as the ``agent`` package by every other bench script."""
    scripts = [p for folder in ("bench", "scripts") for p in sorted((REPO / folder).glob("*.py"))]
    shadowing = [p.relative_to(REPO).as_posix() for p in scripts if p.stem in PACKAGES]
    assert shadowing == [], f"rename these, they shadow a package when run as scripts: {shadowing}"


# -- the checks themselves can fail ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("source", "want"),
    [
        ("import export.engine\n", [(1, "export.engine")]),
        ("def f():\n    from training.engine import evaluate\n", [(2, "training.engine")]),
        ("class A:\n    def m(self):\n        import torch as t, numpy\n", [(3, "torch"), (3, "numpy")]),
        (
            "import importlib\nm = importlib.import_module('deploy.cli')\n",
            [(1, "importlib"), (2, "deploy.cli")],
        ),
        ("try:\n    import torchvision\nexcept ImportError:\n    pass\n", [(2, "torchvision")]),
        (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import console\n",
            [(1, "typing"), (3, "console")],
        ),
    ],
)
def test_every_import_form_is_found(fake_repo: Path, source: str, want: list[tuple[int, str]]) -> None:
    f = fake_repo / "agent" / "m.py"
    f.write_text(source)
    assert sorted(imported_modules(f)) == sorted(want)


@pytest.fixture
def fake_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty copy of the layout in which tests plant bad code (the module's REPO points at it)."""
    for package in PACKAGES:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    return tmp_path


def test_planted_violations_are_named_by_file_and_line(fake_repo: Path) -> None:
    (fake_repo / "agent" / "bad.py").write_text("import json\n\ndef f():\n    from export import engine\n")
    (fake_repo / "training" / "t.py").write_text("from agent.intake import hub\nimport agent.surface\n")
    (fake_repo / "console" / "c.py").write_text("import torch\n")
    (fake_repo / "contract" / "bad.py").write_text("import json\nimport numpy as np\nimport pydantic\n")
    (fake_repo / "contract" / "cli.py").write_text("import typer\nimport torch\n")
    assert package_violations() == [
        "agent/bad.py:4: imports export",
        "console/c.py:1: imports torch",
        "training/t.py:1: imports agent.intake",
    ]
    assert contract_violations() == ["contract/bad.py:2: imports numpy", "contract/cli.py:2: imports torch"]


def test_only_contract_signing_may_import_cryptography(fake_repo: Path) -> None:
    (fake_repo / "contract" / "signing.py").write_text(
        "def f():\n    from cryptography.hazmat.primitives import serialization\n"
    )
    (fake_repo / "contract" / "bundle.py").write_text("def g():\n    import cryptography\n")
    (fake_repo / "contract" / "cli.py").write_text("import typer\nfrom cryptography import x509\n")
    (fake_repo / "contract" / "sub").mkdir()
    (fake_repo / "contract" / "sub" / "signing.py").write_text("import cryptography\n")
    assert contract_violations() == [
        "contract/bundle.py:2: imports cryptography",
        "contract/cli.py:2: imports cryptography",
        "contract/sub/signing.py:1: imports cryptography",
    ]


def test_planted_stage_cycle_and_private_access_are_found(fake_repo: Path) -> None:
    for stage in ("intake", "delivery"):
        (fake_repo / "agent" / stage).mkdir()
        (fake_repo / "agent" / stage / "__init__.py").write_text("")
    (fake_repo / "agent" / "intake" / "a.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from agent.delivery import b\n"
    )
    (fake_repo / "agent" / "delivery" / "b.py").write_text(
        "from agent.intake import a\n\nclass B:\n    def __init__(self):\n        self._q = []\n\n"
        "def peek(b):\n    return b._q\n"
    )
    assert stage_violations() == ["agent/intake/a.py:3: imports agent.delivery.b"]
    assert cycles(import_graph("agent")) == [["agent.delivery.b", "agent.intake.a"]]
    assert private_access_violations(("agent",)) == ["agent/delivery/b.py:8: b._q"]
    long_body = "".join(f"    x{i} = {i}\n" for i in range(MAX_FUNCTION_LINES))
    (fake_repo / "agent" / "long.py").write_text("def f():\n" + long_body)
    assert size_violations(("agent",)) == [f"agent/long.py:1: f() is {MAX_FUNCTION_LINES + 1} lines"]
