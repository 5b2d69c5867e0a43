"""MQTT topic names (docs/contract.md) and id validation."""

from __future__ import annotations

import pytest

from contract.topics import KINDS, Topics, check_prefix, fleet_desired, group_desired, parse_topic

T = Topics("dc-berlin", "jetson-07")
ROOT = "binwatch/v1/dc-berlin/jetson-07"


def test_device_topics() -> None:
    assert T.root == ROOT
    assert T.status == f"{ROOT}/status"
    assert T.alert_mismatch == f"{ROOT}/alert/mismatch"
    assert T.result == f"{ROOT}/result"
    assert T.stats == f"{ROOT}/stats"
    assert T.model_reported == f"{ROOT}/model/reported"
    assert T.model_desired == f"{ROOT}/model/desired"
    assert T.bin == f"{ROOT}/bin"
    assert T.cmd("resync") == f"{ROOT}/cmd/resync"
    assert T.cmd_result("capture") == f"{ROOT}/cmd/capture/result"
    assert T.cmd_wildcard == f"{ROOT}/cmd/+"


def test_site_and_fleet_topics() -> None:
    assert T.manifest("00121") == "binwatch/v1/dc-berlin/manifest/00121"
    assert T.manifest_wildcard == "binwatch/v1/dc-berlin/manifest/+"
    assert fleet_desired() == T.fleet_desired() == "binwatch/v1/_fleet/model/desired"
    assert (
        group_desired("binwatch/v1", "canary")
        == T.group_desired("canary")
        == "binwatch/v1/_group/canary/model/desired"
    )


def test_custom_prefix() -> None:
    t = Topics(prefix="acme/binwatch/v1", site="s", device="d")
    assert t.status == "acme/binwatch/v1/s/d/status"
    assert fleet_desired("acme/binwatch/v1") == "acme/binwatch/v1/_fleet/model/desired"


def test_subscriptions_cover_every_inbound_topic() -> None:
    subs = T.subscriptions(groups=("canary",))
    assert set(subs) == {
        T.model_desired,
        T.fleet_desired(),
        T.group_desired("canary"),
        T.bin,
        T.cmd_wildcard,
        T.manifest_wildcard,
    }


@pytest.mark.parametrize("bad", ["", "a/b", "a+b", "#", "a b", "tab\t", "nul\x00", "x" * 129, 7])
@pytest.mark.parametrize("where", ["site", "device"])
def test_bad_ids_are_refused(bad: object, where: str) -> None:
    kwargs = {"site": "s", "device": "d", where: bad}
    with pytest.raises(ValueError, match=where):
        Topics(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["", "a/b", "+", "#"])
def test_bad_argument_ids_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="bin_id"):
        T.manifest(bad)
    with pytest.raises(ValueError, match="command name"):
        T.cmd(bad)
    with pytest.raises(ValueError, match="group"):
        group_desired("binwatch/v1", bad)


def test_reserved_names() -> None:
    with pytest.raises(ValueError, match="reserved for fleet-wide"):
        Topics("_fleet", "d")
    with pytest.raises(ValueError, match="'manifest' is reserved"):
        Topics("s", "manifest")


@pytest.mark.parametrize(
    "bad", ["", "/binwatch", "binwatch/", "binwatch//v1", "binwatch/+", "$SYS/x", "bin watch"]
)
def test_bad_prefix(bad: str) -> None:
    with pytest.raises(ValueError, match="prefix"):
        check_prefix(bad)


def test_max_length_id_is_accepted() -> None:
    assert Topics("s", "d" * 128).device == "d" * 128


def test_parse_topic_inverts_every_builder() -> None:
    built = {
        T.status: ("status", None),
        T.alert_mismatch: ("alert_mismatch", None),
        T.result: ("result", None),
        T.stats: ("stats", None),
        T.model_reported: ("model_reported", None),
        T.model_desired: ("model_desired", None),
        T.bin: ("bin", None),
        T.bin_outcome: ("bin_outcome", None),
        T.alert_review: ("alert_review", None),
        T.alert_snapshot("4133728a-c4e6-41d5-9edd-3735da1a2174"): (
            "alert_snapshot",
            "4133728a-c4e6-41d5-9edd-3735da1a2174",
        ),
        T.cmd("capture"): ("cmd", "capture"),
        T.cmd_result("capture"): ("cmd_result", "capture"),
    }
    for topic, (kind, arg) in built.items():
        info = parse_topic(topic)
        assert (info.kind, info.site, info.device, info.arg) == (kind, "dc-berlin", "jetson-07", arg), topic
    m = parse_topic(T.manifest("00121"))
    assert (m.kind, m.site, m.device, m.arg) == ("manifest", "dc-berlin", None, "00121")
    assert parse_topic(fleet_desired()).kind == "fleet_desired"
    g = parse_topic(group_desired(group="canary"))
    assert (g.kind, g.arg) == ("group_desired", "canary")
    seen = {parse_topic(t).kind for t in built} | {"manifest", "fleet_desired", "group_desired"}
    assert seen == set(KINDS)


@pytest.mark.parametrize(
    "topic",
    [
        "other/v1/s/d/status",
        "binwatch/v1/s/d/unknown",
        "binwatch/v1/s/d",
        "binwatch/v1/s/d/cmd",
        "binwatch/v1/s/d/cmd/x/y",
        "binwatch/v1/s/d/alert/+",
        "binwatch/v1/s//status",
        "binwatch/v1/_fleet/other",
    ],
)
def test_parse_topic_refuses_foreign_topics(topic: str) -> None:
    with pytest.raises(ValueError, match="topic"):
        parse_topic(topic)


def test_subscriptions_leave_out_what_the_agent_does_not_follow() -> None:
    assert set(T.subscriptions(manifests=False, desired=False)) == {T.bin, T.cmd_wildcard}
    assert T.manifest_wildcard in T.subscriptions(desired=False)
    assert T.group_desired("g") not in T.subscriptions(("g",), desired=False)
