"""The agent config's environment overrides: ``BINWATCH_<SECTION>_<KEY>`` (mqttconn.env, the scheme
every binwatch tool shares; docs/config.md), and the deprecated ``BINWATCH__SECTION__KEY``.

A variable whose name starts with an agent section (``BINWATCH_MQTT_...``) but names no key of it
is refused, naming it; other ``BINWATCH_*`` variables (``BINWATCH_ALLOW_FAKE_BACKEND``, the web
console's ``BINWATCH_CONSOLE_*``) are not config keys and are left alone. When an old and a new
name set the same key, the new one wins.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from mqttconn.env import ENV_PREFIX, LEGACY_PREFIX, deprecated, env_name, resolve

__all__ = ["EnvError", "env_overrides"]


class EnvError(ValueError):
    """An environment variable that cannot be a config key (the message names it)."""


def _env_value(raw: str) -> Any:
    s = raw.strip()
    if s[:1] in "[{":
        try:
            return json.loads(s)
        except json.JSONDecodeError:
            return raw
    return raw


def _legacy(name: str) -> list[str]:
    parts = [p.lower() for p in name[len(LEGACY_PREFIX) :].split("__")]
    if any(not p for p in parts):
        raise EnvError(f"environment variable {name}: empty key level (use BINWATCH_SECTION_KEY)")
    deprecated(name, env_name(parts))
    return parts


def _current(name: str, model: type[BaseModel]) -> list[str] | None:
    words = name[len(ENV_PREFIX) :].lower().split("_")
    path = resolve(model, words)
    if path is None:
        section = next((s for s in model.model_fields if words[: len(s.split("_"))] == s.split("_")), None)
        if section is not None:
            raise EnvError(
                f"environment variable {name}: no such key in the {section!r} section "
                f"(BINWATCH_<SECTION>_<KEY>, e.g. {_example(model, section)})"
            )
    return path


def _example(model: type[BaseModel], section: str) -> str:
    fields = getattr(model.model_fields[section].annotation, "model_fields", None)
    return env_name([section, next(iter(fields))] if fields else [section, "0", "name"])


def env_overrides(env: Mapping[str, str], model: type[BaseModel]) -> list[tuple[list[str], Any, str]]:
    """``(key path, value, variable name)`` for every config variable in ``env``, in the order to
    apply them: shorter paths first (a whole ``cameras`` entry before its fields), and for one key
    the deprecated name before the new one (so the new one wins)."""
    out = []
    for name in sorted(env):
        if name.startswith(LEGACY_PREFIX):
            if name != LEGACY_PREFIX:
                out.append((_legacy(name), _env_value(env[name]), name, 0))
        elif name.startswith(ENV_PREFIX):
            path = _current(name, model)
            if path is not None:
                out.append((path, _env_value(env[name]), name, 1))
    out.sort(key=lambda t: (len(t[0]), t[0], t[3]))
    return [(path, value, name) for path, value, name, _ in out]
