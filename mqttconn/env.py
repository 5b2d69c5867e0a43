"""The one environment-variable scheme of every binwatch tool (docs/config.md, "Environment variables").

``BINWATCH_<SECTION>_<KEY>``: a setting's dotted path in the config file, upper-cased, with every
``.`` and list index written as ``_`` (``mqtt.tls.ca`` -> ``BINWATCH_MQTT_TLS_CA``,
``cameras[0].source`` -> ``BINWATCH_CAMERAS_0_SOURCE``). Keys that contain ``_`` themselves are
found by matching the model's own field names (:func:`resolve`). The agent reads every key this
way; ``alerts watch`` and ``deploy`` read the ``mqtt`` ones their flags stand for.

Names of the old schemes stay readable for one release, with a warning naming the new one:
``BINWATCH__SECTION__KEY`` (the agent) and ``BINWATCH_BROKER`` (``alerts watch``, ``deploy``).
"""

from __future__ import annotations

import logging
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, Optional, Union

from pydantic import BaseModel

__all__ = [
    "ENV_PREFIX",
    "LEGACY_PREFIX",
    "RENAMED",
    "deprecated",
    "env_name",
    "resolve",
    "warn_renamed",
]

log = logging.getLogger(__name__)

ENV_PREFIX = "BINWATCH_"
LEGACY_PREFIX = "BINWATCH__"  # the agent's old BINWATCH__SECTION__KEY (deprecated)
# old name -> new name, for the operator tools' flags (deprecated names read for one release)
RENAMED: dict[str, str] = {"BINWATCH_BROKER": "BINWATCH_MQTT_BROKER"}


def env_name(path: Sequence[Union[str, int]]) -> str:
    """``("mqtt", "tls", "ca")`` -> ``BINWATCH_MQTT_TLS_CA``."""
    return ENV_PREFIX + "_".join(str(p) for p in path).upper()


def deprecated(old: str, new: str) -> str:
    """Log (once per call) that ``old`` is deprecated in favour of ``new``; return the message."""
    msg = f"environment variable {old} is deprecated (read for one more release): use {new}"
    log.warning(msg)
    return msg


def warn_renamed(env: Optional[Mapping[str, str]] = None) -> list[str]:
    """Warn about every old operator-tool name in ``env`` (default: the process environment)."""
    import os

    env = os.environ if env is None else env
    out = []
    for old, new in RENAMED.items():
        if old in env:
            out.append(deprecated(old, new) + (f" ({old} is ignored: {new} is set)" if new in env else ""))
    return out


def _candidates(tp: Any) -> list[Any]:
    """The types an annotation can hold (``Optional[X]`` -> ``[X]``)."""
    if typing.get_origin(tp) in (Union, types.UnionType):
        return [a for a in typing.get_args(tp) if a is not type(None)]
    return [tp]


def resolve(tp: Any, words: Sequence[str]) -> Optional[list[str]]:
    """The key path that ``words`` (lower-case parts of a variable name, split at ``_``) spell in
    the model ``tp``, or ``None``. Field names are tried longest first, so ``password_file`` wins
    over ``password``; a list level takes a numeric index. ``[]`` when ``words`` is empty."""
    if not words:
        return []
    for cand in _candidates(tp):
        origin = typing.get_origin(cand)
        if origin is list and words[0].isdigit():
            rest = resolve(typing.get_args(cand)[0], words[1:])
            if rest is not None:
                return [words[0], *rest]
        elif isinstance(cand, type) and issubclass(cand, BaseModel):
            for name in sorted(cand.model_fields, key=lambda f: (-f.count("_"), f)):
                parts = name.split("_")
                if list(words[: len(parts)]) == parts:
                    rest = resolve(cand.model_fields[name].annotation, words[len(parts) :])
                    if rest is not None:
                        return [name, *rest]
    return None
