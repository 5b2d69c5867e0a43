"""What a push will do, from its options: the stages (canary first, then growing shares of the
devices), how many failures it tolerates, and the members of a group from the device inventory.

Pure functions; every bad value is an :class:`InputError` (exit 2) that names the option."""

from __future__ import annotations

import math
import secrets
from datetime import datetime, timezone
from pathlib import Path

__all__ = [
    "InputError",
    "allowed_failures",
    "new_rollout_id",
    "parse_devices",
    "parse_max_failures",
    "parse_stages",
    "plan_stages",
    "read_inventory",
]


class InputError(ValueError):
    """A bad option, file or bundle: the command exits 2 with this message."""


def new_rollout_id() -> str:
    """``r20250501-120000-3fa9c1``: sortable, unique enough, safe in a file name."""
    return f"r{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def parse_devices(text: str) -> list[str]:
    """``a,b,c`` -> ``["a", "b", "c"]`` (order kept, duplicates dropped, every id checked)."""
    from contract.fields import check_id

    devices = [d.strip() for d in text.split(",") if d.strip()]
    if not devices:
        raise InputError("--devices is empty: give device ids separated by commas, e.g. d1,d2")
    try:
        for d in devices:
            check_id(d, "device")
    except ValueError as e:
        raise InputError(f"--devices: {e}") from e
    return list(dict.fromkeys(devices))


def parse_stages(text: str) -> list[float]:
    """``10%,50%,100%`` -> ``[0.1, 0.5, 1.0]``: cumulative shares of the devices, increasing; 100%
    is added when the list does not end with it."""
    shares: list[float] = []
    for part in (p.strip() for p in text.split(",")):
        value = part[:-1] if part.endswith("%") else ""
        try:
            share = float(value) / 100
        except ValueError:
            share = math.nan
        if not 0 < share <= 1:
            raise InputError(
                f"--stages {text!r}: {part!r} is not a percentage in (0, 100], e.g. 10%,50%,100%"
            )
        if shares and share <= shares[-1]:
            raise InputError(f"--stages {text!r}: the shares must increase (each is cumulative)")
        shares.append(share)
    if not shares or shares[-1] < 1:
        shares.append(1.0)
    return shares


def parse_max_failures(text: str) -> float:
    """``N`` (a count, 0 or more) or a fraction of the devices in (0, 1) such as ``0.1`` or ``10%``."""
    raw = text.strip()
    try:
        value = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        value = math.nan
    ok = math.isfinite(value) and value >= 0 and (value < 1 or (value.is_integer() and not raw.endswith("%")))
    if not ok:
        raise InputError(
            f"--max-failures {text!r}: give a count (0, 1, 2, ...) or a fraction of the devices "
            "below 1 (0.1 or 10%)"
        )
    return value


def allowed_failures(max_failures: float, total: int) -> int:
    """How many failed devices a rollout of ``total`` devices tolerates; one more halts it."""
    if max_failures >= 1 or max_failures == 0:
        return int(max_failures)
    return math.floor(max_failures * total)


def plan_stages(devices: list[str], canary: int, shares: list[float]) -> list[list[str]]:
    """The devices stage by stage: the first ``canary`` devices alone, then each share's devices
    (cumulative over all devices, canary included, rounded up); empty stages are dropped."""
    if canary < 0:
        raise InputError("--canary must be 0 or more")
    total = len(devices)
    stages: list[list[str]] = []
    done = min(canary, total)
    if done:
        stages.append(devices[:done])
    for share in shares:
        upto = max(done, min(total, math.ceil(share * total - 1e-9)))
        if upto > done:
            stages.append(devices[done:upto])
            done = upto
    return stages


def read_inventory(path: Path, site: str, group: str | None = None) -> list[str]:
    """The devices of ``site`` (in ``group`` when given) in a device list of make-acl.sh: one
    ``SITE/DEVICE [GROUP ...]`` per line, ``#`` comments (deploy/mosquitto/devices.example)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise InputError(f"--inventory {path}: cannot read ({e.strerror or e})") from e
    found: list[str] = []
    for number, line in enumerate(lines, 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        where, _, device = words[0].partition("/")
        if not device or "/" in device:
            raise InputError(f"--inventory {path}:{number}: {words[0]!r} is not SITE/DEVICE")
        if where == site and (group is None or group in words[1:]):
            found.append(device)
    return list(dict.fromkeys(found))
