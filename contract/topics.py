"""MQTT topic names (docs/contract.md, "Topics"): one place that builds and parses them.

Per device, under ``<prefix>/<site>/<device>`` (prefix ``binwatch/v1`` by default)::

    status  alert/mismatch  alert/snapshot/<alert_id>  alert/review  result  stats
    model/reported  model/desired  bin  bin/outcome  cmd/<name>  cmd/<name>/result

Per site: ``<prefix>/<site>/manifest/<bin_id>``. Fleet-wide and per-group desired model:
``<prefix>/_fleet/model/desired`` and ``<prefix>/_group/<group>/model/desired`` (site ids starting
with ``_`` are reserved for these, and no device may be called ``manifest``: its subtree would be
the site's manifests).

Every id (site, device, group, bin id, command name) is one topic level: 1..128 characters with no
``/``, ``+``, ``#``, whitespace or control characters. A bad id raises ValueError naming it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

from contract.fields import check_id

__all__ = [
    "DEFAULT_PREFIX",
    "KINDS",
    "TopicInfo",
    "Topics",
    "check_prefix",
    "fleet_desired",
    "group_desired",
    "parse_topic",
]

DEFAULT_PREFIX = "binwatch/v1"
FLEET = "_fleet"
GROUP = "_group"

# topic kind -> path under the device root (cmd kinds take a name)
_DEVICE_TOPICS = {
    "status": "status",
    "alert_mismatch": "alert/mismatch",
    "result": "result",
    "stats": "stats",
    "model_reported": "model/reported",
    "model_desired": "model/desired",
    "bin": "bin",
    "bin_outcome": "bin/outcome",
    "alert_review": "alert/review",
}
KINDS = (*_DEVICE_TOPICS, "alert_snapshot", "cmd", "cmd_result", "manifest", "fleet_desired", "group_desired")
"""Every topic kind :func:`parse_topic` can return."""


def check_prefix(prefix: str) -> str:
    """A prefix is one or more non-empty levels (``binwatch/v1``) without wildcards or a leading ``$``."""
    if not isinstance(prefix, str) or not prefix:
        raise ValueError("topic prefix must be a non-empty string such as 'binwatch/v1'")
    if prefix.startswith("$"):
        raise ValueError(f"topic prefix {prefix!r} starts with '$' (reserved for broker topics such as $SYS)")
    for level in prefix.split("/"):
        check_id(level, f"topic prefix level in {prefix!r}")
    return prefix


def _check_site(site: str) -> str:
    check_id(site, "site")
    if site.startswith("_"):
        raise ValueError(f"site {site!r} starts with '_': reserved for fleet-wide topics ({FLEET}, {GROUP})")
    return site


@dataclass(frozen=True)
class Topics:
    """The topics of one device. ``Topics("dc1", "jetson-07").alert_mismatch`` ->
    ``binwatch/v1/dc1/jetson-07/alert/mismatch``."""

    site: str
    device: str
    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        check_prefix(self.prefix)
        _check_site(self.site)
        check_id(self.device, "device")
        if self.device == "manifest":
            raise ValueError(
                "device id 'manifest' is reserved (<site>/manifest/<bin_id> holds the site's manifests)"
            )

    @property
    def site_root(self) -> str:
        return f"{self.prefix}/{self.site}"

    @property
    def root(self) -> str:
        return f"{self.prefix}/{self.site}/{self.device}"

    @property
    def status(self) -> str:
        return f"{self.root}/status"

    @property
    def alert_mismatch(self) -> str:
        return f"{self.root}/alert/mismatch"

    @property
    def result(self) -> str:
        return f"{self.root}/result"

    @property
    def stats(self) -> str:
        return f"{self.root}/stats"

    @property
    def model_reported(self) -> str:
        return f"{self.root}/model/reported"

    @property
    def model_desired(self) -> str:
        return f"{self.root}/model/desired"

    @property
    def bin(self) -> str:
        return f"{self.root}/bin"

    @property
    def bin_outcome(self) -> str:
        return f"{self.root}/bin/outcome"

    @property
    def alert_review(self) -> str:
        return f"{self.root}/alert/review"

    def alert_snapshot(self, alert_id: str) -> str:
        """Where the JPEG of alert ``alert_id`` is published (raw bytes, QoS 1)."""
        return f"{self.root}/alert/snapshot/{check_id(alert_id, 'alert_id')}"

    def cmd(self, name: str) -> str:
        return f"{self.root}/cmd/{check_id(name, 'command name')}"

    def cmd_result(self, name: str) -> str:
        return f"{self.cmd(name)}/result"

    @property
    def cmd_wildcard(self) -> str:
        """Every command to this device (``cmd/+``; results one level deeper do not match)."""
        return f"{self.root}/cmd/+"

    def manifest(self, bin_id: str) -> str:
        return f"{self.site_root}/manifest/{check_id(bin_id, 'bin_id')}"

    @property
    def manifest_wildcard(self) -> str:
        return f"{self.site_root}/manifest/+"

    def fleet_desired(self) -> str:
        return fleet_desired(self.prefix)

    def group_desired(self, group: str) -> str:
        return group_desired(self.prefix, group)

    def subscriptions(
        self, groups: Sequence[str] = (), *, manifests: bool = True, desired: bool = True
    ) -> list[str]:
        """What the agent subscribes to: bins, commands, its site's manifests (unless
        ``manifests=False``) and its desired model: device, fleet and ``groups`` (unless
        ``desired=False``)."""
        subs = [self.bin, self.cmd_wildcard]
        if manifests:
            subs.append(self.manifest_wildcard)
        if desired:
            subs += [self.model_desired, self.fleet_desired(), *(self.group_desired(g) for g in groups)]
        return subs


def fleet_desired(prefix: str = DEFAULT_PREFIX) -> str:
    """Desired model for every device under ``prefix``."""
    return f"{check_prefix(prefix)}/{FLEET}/model/desired"


def group_desired(prefix: str = DEFAULT_PREFIX, group: str = "") -> str:
    """Desired model for the devices of one group."""
    return f"{check_prefix(prefix)}/{GROUP}/{check_id(group, 'group')}/model/desired"


@dataclass(frozen=True)
class TopicInfo:
    """What :func:`parse_topic` found: ``kind`` is one of :data:`KINDS`; ``arg`` is the command
    name, bin id or group where the kind has one."""

    kind: str
    site: Optional[str] = None
    device: Optional[str] = None
    arg: Optional[str] = None


def parse_topic(topic: str, prefix: str = DEFAULT_PREFIX) -> TopicInfo:
    """Split a concrete topic into kind, site, device and argument; ValueError if it is not one of ours."""
    check_prefix(prefix)
    head = prefix + "/"
    if not isinstance(topic, str) or not topic.startswith(head):
        raise ValueError(f"topic {topic!r} is not under prefix {prefix!r}")
    levels = topic[len(head) :].split("/")
    try:
        for level in levels:
            check_id(level, "topic level")
    except ValueError as e:
        raise ValueError(f"topic {topic!r}: {e}") from e
    if levels == [FLEET, "model", "desired"]:
        return TopicInfo("fleet_desired")
    if len(levels) == 4 and levels[0] == GROUP and levels[2:] == ["model", "desired"]:
        return TopicInfo("group_desired", arg=levels[1])
    if len(levels) == 3 and levels[1] == "manifest":
        return TopicInfo("manifest", site=levels[0], arg=levels[2])
    if len(levels) >= 3 and not levels[0].startswith("_"):
        site, device, rest = levels[0], levels[1], levels[2:]
        path = "/".join(rest)
        for kind, sub in _DEVICE_TOPICS.items():
            if path == sub:
                return TopicInfo(kind, site, device)
        if len(rest) == 3 and rest[:2] == ["alert", "snapshot"]:
            return TopicInfo("alert_snapshot", site, device, rest[2])
        if len(rest) == 2 and rest[0] == "cmd":
            return TopicInfo("cmd", site, device, rest[1])
        if len(rest) == 3 and rest[0] == "cmd" and rest[2] == "result":
            return TopicInfo("cmd_result", site, device, rest[1])
    raise ValueError(f"topic {topic!r} is not a binwatch topic (see docs/contract.md)")
