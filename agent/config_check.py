"""Checks of an agent config that the schema alone cannot make: files it names that are missing,
and the fake backend outside tests (see :meth:`agent.config.AgentConfig.validate_for_run`).

Every problem is reported, not just the first, so one ``binwatch agent check-config`` run lists all
of them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional

__all__ = ["ALLOW_FAKE_ENV", "fake_backend_problem", "missing_files"]

ALLOW_FAKE_ENV = "BINWATCH_ALLOW_FAKE_BACKEND"
_TRUE = {"1", "true", "yes", "on"}


def fake_backend_allowed(env: Optional[Mapping[str, str]] = None) -> bool:
    value = (os.environ if env is None else env).get(ALLOW_FAKE_ENV, "")
    return value.strip().lower() in _TRUE


def fake_backend_problem(backend: str, env: Optional[Mapping[str, str]] = None) -> Optional[str]:
    """A problem line when ``model.backend`` is ``fake`` and ``BINWATCH_ALLOW_FAKE_BACKEND`` is not set."""
    if backend != "fake" or fake_backend_allowed(env):
        return None
    return (
        "model.backend: 'fake' is for tests and demos only (it returns made-up counts, not the "
        f"model's); use auto, tensorrt or onnxruntime, or set {ALLOW_FAKE_ENV}=1 for a test or demo"
    )


def _file(problems: list[str], key: str, path: Optional[Path]) -> None:
    if path is not None and not Path(path).expanduser().is_file():
        problems.append(f"{key}: {path} not found")


def _folder(problems: list[str], key: str, path: Optional[Path]) -> None:
    if path is not None and not Path(path).expanduser().is_dir():
        problems.append(f"{key}: {path} is not a folder")


def _camera_problems(problems: list[str], cameras: list[Any]) -> None:
    for i, cam in enumerate(cameras):
        kind = cam.resolved_kind
        source = str(cam.source)
        key = f"cameras[{i}] ({cam.name}).source"
        if kind == "replay":
            root = source[len("replay:") :] if source.startswith("replay:") else source
            _folder(problems, f"{key} (replay folder)", Path(root))
        elif kind == "file":
            _file(problems, f"{key} (video file)", Path(source))


def missing_files(cfg: Any) -> list[str]:
    """One line per file or folder the config names that is not there."""
    problems: list[str] = []
    tls = cfg.mqtt.tls
    _file(problems, "mqtt.tls.ca", tls.ca)
    _file(problems, "mqtt.tls.cert", tls.cert)
    _file(problems, "mqtt.tls.key", tls.key)
    _file(problems, "mqtt.password_file", cfg.mqtt.password_file)
    bundle = cfg.model.bundle
    if bundle is not None and not Path(bundle).expanduser().exists():
        problems.append(f"model.bundle: {bundle} not found")
    for key in cfg.model.trusted_keys:
        _file(problems, "model.trusted_keys", key)
    _folder(problems, "manifest.dir", cfg.manifest.dir)
    _file(problems, "manifest.csv", cfg.manifest.csv)
    _camera_problems(problems, cfg.cameras)
    return problems
