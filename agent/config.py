"""The agent's configuration: one YAML file, environment overrides, secrets from env or files.

Sections (each a small pydantic model; unknown keys are refused)::

    agent:     site, device, state_dir, log_level, verdict_log
    mqtt:      broker, TLS, credentials, prefix, ...      (agent.delivery.config.MqttConfig)
    outbox:    max_rows, max_bytes                          (agent.delivery.config.OutboxConfig)
    cameras:   [ {name, source, kind, csi, fps, replay_rate, loop, trigger, ...} ]
    model:     bundle, backend, precision, threads, batch, watch
    decision:  mismatch_threshold, match_threshold, frames_per_event, uncertain_policy
    manifest:  dir, csv, mqtt
    snapshots: dir, max_files, max_bytes, retention_days, quality, publish, outbox_max_bytes
    http:      host, port

Precedence (last wins): defaults < YAML file < environment (``BINWATCH_SECTION_KEY=value``, the
scheme of every binwatch tool: ``BINWATCH_MQTT_TLS_CA``, ``BINWATCH_CAMERAS_0_SOURCE``; see
agent/config_env.py and docs/config.md; the old ``BINWATCH__SECTION__KEY`` still works, with a
warning) < command-line flags. Environment values are text that pydantic converts (``"8080"`` ->
8080); a value starting with ``[`` or ``{`` is JSON. Secrets: ``BINWATCH_MQTT_PASSWORD``, or point
``mqtt.password_file`` at a file (Docker/systemd credentials).
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from agent.camera_config import CameraConfig
from agent.config_check import fake_backend_problem, missing_files
from agent.config_env import EnvError
from agent.config_env import env_overrides as _env_overrides
from agent.delivery.config import MqttConfig, OutboxConfig
from contract.fields import check_id

__all__ = [
    "ENV_PREFIX",
    "AgentConfig",
    "AgentSection",
    "ConfigError",
    "DecisionConfig",
    "HttpConfig",
    "ManifestConfig",
    "ModelConfig",
    "SnapshotsConfig",
    "UpdateConfig",
    "default_device_id",
    "load_config",
]

ENV_PREFIX = "BINWATCH_"


class ConfigError(ValueError):
    """A config that cannot be used; the message names the file, the key and what is wrong."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def _id(value: str, what: str) -> str:
    return check_id(value, what)


def default_device_id() -> str:
    """The host name, made safe as one MQTT topic level."""
    name = re.sub(r"[/+#\s\x00-\x1f\x7f]+", "-", socket.gethostname() or "").strip("-")[:128]
    return name if name and name != "manifest" else "binwatch-agent"


class AgentSection(_Section):
    site: str = Field(default="site1", description="site id (one MQTT topic level)")
    device: str = Field(default_factory=default_device_id, description="device id; default: host name")
    state_dir: Path = Field(
        default=Path("binwatch-state"),
        description="outbox, seq/session, replay positions, snapshots, engine cache, verdict log",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    verdict_log: bool = Field(default=True, description="append every verdict to <state_dir>/verdicts.jsonl")
    verdict_log_max_bytes: int = Field(default=64 * 1024 * 1024, ge=4096, description="rotate beyond this")

    @field_validator("site")
    @classmethod
    def _site(cls, v: str) -> str:
        _id(v, "site")
        if v.startswith("_"):
            raise ValueError("site ids starting with '_' are reserved for fleet-wide topics")
        return v

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        _id(v, "device")
        if v == "manifest":
            raise ValueError("device id 'manifest' is reserved")
        return v


class ModelConfig(_Section):
    bundle: Optional[Path] = Field(default=None, description="bundle folder (or .tar) with card.json")
    backend: Literal["auto", "tensorrt", "onnxruntime", "fake"] = "auto"
    precision: Literal["auto", "fp32", "fp16", "int8"] = "auto"
    threads: Optional[int] = Field(default=None, ge=1, description="intra-op threads (default: runtime's)")
    inter_threads: Optional[int] = Field(default=None, ge=1)
    batch: int = Field(default=4, ge=1, le=64, description="most frames per inference call")
    warmup: int = Field(default=2, ge=0, le=100, description="warm-up runs at load")
    verify: bool = Field(default=True, description="check MANIFEST.json sha256s before loading")
    trusted_keys: list[Path] = Field(
        default_factory=list,
        description="ed25519 public keys (PEM) a bundle must be signed by; several, so keys can rotate",
    )
    allow_unsigned: bool = Field(
        default=False, description="development mode: accept unsigned bundles even with trusted_keys"
    )
    golden_check: bool = Field(default=True, description="check the bundle's golden set before switching")
    watch: bool = Field(default=False, description="reload when the bundle path changes")
    watch_interval_s: float = Field(default=5.0, gt=0)
    engine_cache: Optional[Path] = Field(
        default=None, description="TensorRT engines (default: <state_dir>/engines)"
    )


class UpdateConfig(_Section):
    """Fleet updates: the agent follows the retained desired model (device, group and fleet topics)."""

    enabled: bool = Field(default=True, description="follow model/desired")
    groups: list[str] = Field(default_factory=list, description="groups whose desired model applies")
    max_bytes: int = Field(default=2 * 1024**3, ge=1024, description="largest bundle download")
    timeout_s: float = Field(default=60.0, gt=0, description="download socket timeout")
    keep_versions: int = Field(default=3, ge=1, le=50, description="bundle versions kept on disk")
    retry_min_s: float = Field(default=5.0, gt=0, description="first retry after a failed update")
    retry_max_s: float = Field(default=600.0, gt=0, description="retry delay cap")
    trial_s: float = Field(default=120.0, ge=0, description="after a switch, health is watched this long")
    trial_restarts: int = Field(
        default=2, ge=1, description="agent starts within a trial that mean a crash loop: go back"
    )
    trial_max_errors: int = Field(default=3, ge=1, description="inference errors that fail a trial")

    @field_validator("groups")
    @classmethod
    def _groups(cls, v: list[str]) -> list[str]:
        for g in v:
            _id(g, "update.groups")
        return v


class DecisionConfig(_Section):
    mismatch_threshold: Optional[float] = Field(
        default=None, ge=0, le=1, description="p_expected below this -> mismatch (default: the card's)"
    )
    match_threshold: Optional[float] = Field(
        default=None, ge=0, le=1, description="p_expected at or above this -> match (default: the card's)"
    )
    frames_per_event: int = Field(default=3, ge=1, le=32, description="frames fused per bin event")
    uncertain_policy: Literal["report", "more_frames"] = Field(
        default="report", description="more_frames: capture more frames (events only) up to max_frames"
    )
    max_frames: int = Field(default=8, ge=1, le=64)
    event_timeout_s: float = Field(default=10.0, gt=0, description="give up on an event without frames")
    event_max_age_s: float = Field(
        default=30.0,
        gt=0,
        description="a bin event older than this (its ts, or queued across a restart) is reported failed, "
        "not decided on the frames of whatever bin is in front of the camera now",
    )

    @model_validator(mode="after")
    def _ordered(self) -> DecisionConfig:
        m, a = self.mismatch_threshold, self.match_threshold
        if m is not None and a is not None and m > a:
            raise ValueError("mismatch_threshold must be <= match_threshold")
        return self


class ManifestConfig(_Section):
    dir: Optional[Path] = Field(default=None, description="folder of <bin_id>.json (ABID metadata or ours)")
    csv: Optional[Path] = Field(default=None, description="CSV with columns bin_id,expected_qty")
    mqtt: bool = Field(default=True, description="use retained <prefix>/<site>/manifest/<bin_id> messages")
    max_entries: int = Field(default=200_000, ge=1, description="most MQTT manifests kept in memory")


class SnapshotsConfig(_Section):
    enabled: bool = True
    dir: Optional[Path] = Field(default=None, description="default: <state_dir>/snapshots")
    max_files: int = Field(default=2000, ge=0, description="0: unbounded")
    max_bytes: int = Field(default=512 * 1024 * 1024, ge=0, description="0: unbounded")
    retention_days: float = Field(default=14.0, ge=0, description="0: keep forever")
    quality: int = Field(default=90, ge=1, le=100, description="JPEG quality for camera frames")
    publish: bool = Field(
        default=True, description="publish each alert's JPEG on <root>/alert/snapshot/<alert_id> (outboxed)"
    )
    outbox_max_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=1024,
        description="outbox budget for JPEGs waiting to be published (apart from the alerts'); "
        "past it the oldest pictures are dropped, never alerts",
    )


class HttpConfig(_Section):
    enabled: bool = True
    host: str = Field(default="127.0.0.1", description="listen address (localhost by default)")
    port: int = Field(default=8780, ge=0, le=65535, description="0: any free port")
    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)


class AgentConfig(_Section):
    agent: AgentSection = Field(default_factory=AgentSection)
    mqtt: MqttConfig = Field(default_factory=MqttConfig)
    outbox: OutboxConfig = Field(default_factory=OutboxConfig)
    cameras: list[CameraConfig] = Field(default_factory=list)
    model: ModelConfig = Field(default_factory=ModelConfig)
    update: UpdateConfig = Field(default_factory=UpdateConfig)
    decision: DecisionConfig = Field(default_factory=DecisionConfig)
    manifest: ManifestConfig = Field(default_factory=ManifestConfig)
    snapshots: SnapshotsConfig = Field(default_factory=SnapshotsConfig)
    http: HttpConfig = Field(default_factory=HttpConfig)

    @model_validator(mode="after")
    def _unique_cameras(self) -> AgentConfig:
        names = [c.name for c in self.cameras]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"camera names must be unique; repeated: {', '.join(dup)}")
        return self

    # derived paths
    @property
    def state_dir(self) -> Path:
        return self.agent.state_dir

    @property
    def snapshot_dir(self) -> Path:
        return self.snapshots.dir or self.agent.state_dir / "snapshots"

    @property
    def engine_cache_dir(self) -> Path:
        return self.model.engine_cache or self.agent.state_dir / "engines"

    def validate_for_run(self, env: Optional[Mapping[str, str]] = None) -> list[str]:
        """Problems that make ``agent run`` impossible (the schema alone allows them): every missing
        file the config names, and ``backend: fake`` unless ``BINWATCH_ALLOW_FAKE_BACKEND`` is set
        (read from ``env``, default the process environment)."""
        problems = []
        if self.model.bundle is None and self.model.backend != "fake":
            problems.append("model.bundle: no model bundle given (set it or pass --model BUNDLE)")
        if not self.cameras:
            problems.append("cameras: no camera configured (add one or pass --replay DIR)")
        fake = fake_backend_problem(self.model.backend, env)
        if fake:
            problems.append(fake)
        return problems + missing_files(self)


# -- loading ----------------------------------------------------------------------------------


def _deep_merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def _set_path(data: Any, path: list[str], value: Any, origin: str) -> Any:
    """Set ``value`` at ``path`` in nested dicts/lists (list levels are numeric indices)."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    if head.isdigit():
        items = list(data) if isinstance(data, list) else []
        i = int(head)
        if i > len(items):
            raise ConfigError(f"{origin}: list index {i} skips entries (the list has {len(items)})")
        if i == len(items):
            items.append({})
        items[i] = _set_path(items[i], rest, value, origin)
        return items
    node = dict(data) if isinstance(data, dict) else {}
    node[head] = _set_path(node.get(head), rest, value, origin)
    return node


def env_overrides(env: Mapping[str, str]) -> list[tuple[list[str], Any, str]]:
    """``BINWATCH_SECTION_KEY`` (and deprecated ``BINWATCH__SECTION__KEY``) variables as
    ``(key path, value, variable name)``, in the order to apply them (agent/config_env.py)."""
    try:
        return _env_overrides(env, AgentConfig)
    except EnvError as e:
        raise ConfigError(str(e)) from e


def _describe(e: ValidationError, origins: Mapping[str, str], where: str) -> str:
    lines = []
    for err in e.errors()[:10]:
        loc = ".".join(str(p) for p in err.get("loc", ())) or "<root>"
        msg = err.get("msg", "invalid")
        if err.get("type") == "extra_forbidden":
            msg = "unknown key (not a setting; check the spelling and the section)"
        src = next((f" (from {v})" for k, v in origins.items() if loc == k or loc.startswith(k + ".")), "")
        lines.append(f"  {loc}: {msg}{src}")
    more = f"\n  ... and {e.error_count() - 10} more" if e.error_count() > 10 else ""
    return f"invalid agent config {where}:\n" + "\n".join(lines) + more


def read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise ConfigError(f"config file {path} not found") from e
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e}") from e
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: the top level must be a mapping of sections")
    return data


def load_config(
    path: Optional[Union[str, Path]] = None,
    *,
    env: Optional[Mapping[str, str]] = None,
    overrides: Optional[Mapping[str, Any]] = None,
) -> AgentConfig:
    """Defaults < YAML file < ``BINWATCH_*`` environment < ``overrides`` (command-line flags).

    Raises :class:`ConfigError` whose message names the offending key (and its source).
    """
    data: dict[str, Any] = read_yaml(Path(path)) if path is not None else {}
    origins: dict[str, str] = {}
    for parts, value, name in env_overrides(os.environ if env is None else env):
        data = _set_path(data, parts, value, f"environment variable {name}")
        origins[".".join(parts)] = name
    if overrides:
        data = _deep_merge(data, overrides)
        for k in _flatten(overrides):
            origins.setdefault(k, "command line")
    where = f"in {path}" if path is not None else "(no file)"
    try:
        return AgentConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_describe(e, origins, where)) from e


def _flatten(d: Mapping[str, Any], prefix: str = "") -> list[str]:
    out = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.extend(_flatten(v, key + "."))
        else:
            out.append(key)
    return out
