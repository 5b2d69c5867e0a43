"""Import hygiene, checked in a fresh interpreter: contract is stdlib + pydantic, the agent never
imports torch, and every ``binwatch ... --help`` stays torch-free."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from tests.hw import REPO

# Optional, guarded imports an agent module may make at its top (a TensorRT backend module, say).
OPTIONAL = ("tensorrt", "pycuda", "cuda", "cuda_bindings")


def _run(code: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _heavy(modules: list[str], roots: tuple[str, ...]) -> list[str]:
    return sorted({m.split(".")[0] for m in modules if m.split(".")[0] in roots})


def test_contract_imports_only_stdlib_and_pydantic() -> None:
    found = _run(
        """
        import importlib, json, pkgutil, sys
        import contract
        light = "pydantic" in sys.modules
        for info in pkgutil.walk_packages(contract.__path__, "contract."):
            importlib.import_module(info.name)
        from contract import Alert, Topics  # the lazy re-exports resolve
        print(json.dumps({"light": not light, "modules": sorted(sys.modules)}))
        """
    )
    assert found["light"], "`import contract` alone should not load pydantic (lazy re-exports)"
    heavy = (
        "torch",
        "torchvision",
        "numpy",
        "cv2",
        "onnx",
        "onnxruntime",
        "tensorrt",
        "paho",
        "cryptography",
    )
    assert _heavy(found["modules"], heavy) == []
    assert "pydantic" in found["modules"]


def test_agent_never_imports_torch() -> None:
    found = _run(
        f"""
        import importlib, json, pkgutil, sys
        import contract, agent
        skipped = []
        for info in pkgutil.walk_packages(agent.__path__, "agent."):
            try:
                importlib.import_module(info.name)
            except ModuleNotFoundError as e:
                if (e.name or "").split(".")[0] in {OPTIONAL!r}:
                    skipped.append(info.name)
                    continue
                raise
        print(json.dumps({{"modules": sorted(sys.modules), "skipped": skipped}}))
        """
    )
    assert _heavy(found["modules"], ("torch", "torchvision", "training", "export", "onnx")) == []


def test_cli_help_is_torch_free() -> None:
    """``binwatch --help``, each group's ``--help`` and the edge-side commands' ``--help``."""
    found = _run(
        """
        import json, sys
        import typer
        from typer.testing import CliRunner
        from binwatch.cli import app

        root = typer.main.get_command(app)
        runner = CliRunner()
        paths, failures = [], []

        def walk(cmd, path):
            subs = getattr(cmd, "commands", None)
            # The root, every group, and every command of the edge-side groups. (Training's
            # commands may load torch for their own --help: not the Jetson's business.)
            if subs is not None or path[0] in ("contract", "agent", "alerts", "deploy"):
                paths.append(path)
            for name, sub in (subs or {}).items():
                walk(sub, [*path, name])

        walk(root, [])
        for path in paths:
            res = runner.invoke(app, [*path, "--help"])
            if res.exit_code != 0:
                failures.append([path, res.output[-500:]])
        print(json.dumps({"paths": paths, "failures": failures, "modules": sorted(sys.modules)}))
        """
    )
    assert found["failures"] == []
    assert ["contract", "validate"] in found["paths"]
    assert _heavy(found["modules"], ("torch", "torchvision", "onnxruntime", "tensorrt", "cv2")) == []
