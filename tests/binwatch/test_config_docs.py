"""docs/config.md is generated from the pydantic models (scripts/gen_config_docs.py) and kept fresh."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]


def _gen() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_config_docs", REPO / "scripts" / "gen_config_docs.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_config_docs_are_fresh() -> None:
    gen = _gen()
    current = (REPO / "docs" / "config.md").read_text(encoding="utf-8")
    assert current == gen.render(), f"docs/config.md is stale: run `{gen.COMMAND}` and commit it"


def test_config_docs_cover_every_field() -> None:
    from agent.config import AgentConfig

    text = _gen().render()
    for key in (
        "connect_timeout_s",
        "sensor_mode",
        "verdict_log_max_bytes",
        "persistent_session",
        "receive_maximum",
        "event_max_age_s",
    ):
        assert f"| `{key}` |" in text, key
    for section in AgentConfig.model_fields:
        assert f"### `{section}`" in text or f"### `{section}[]`" in text, section
    assert "### `mqtt.tls`" in text and "### `cameras[].csi`" in text
    assert "BINWATCH_<SECTION>_<KEY>" in text


def test_config_docs_render_is_deterministic() -> None:
    gen = _gen()
    assert gen.render() == gen.render()
    assert "computed: The host name" in gen.render()  # not this machine's host name
