"""``binwatch alerts watch`` (operator side): follow mismatch alerts live (table or JSON lines).

Only typer/rich/stdlib at module level; paho and the contract are imported inside the command.
"""

from __future__ import annotations

import queue
import sys
import time
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from binwatch.cliutil import fail

app = typer.Typer(
    name="alerts",
    help="Follow the mismatch alerts that agents publish.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_ROWS = 20
_NOTICES = 6


@app.callback()
def _alerts() -> None:
    """Follow the mismatch alerts that agents publish."""


@app.command("watch")
def watch(
    broker: str = typer.Option(
        "mqtt://127.0.0.1:1883",
        "--broker",
        envvar=["BINWATCH_MQTT_BROKER", "BINWATCH_BROKER"],  # the second: deprecated (mqttconn.env)
        help="mqtt://host:port or mqtts://host:port",
    ),
    site: str = typer.Option("+", "--site", help="site id, or + for every site"),
    device: str = typer.Option("+", "--device", help="device id, or + for every device"),
    prefix: str = typer.Option("binwatch/v1", "--prefix", help="topic prefix the agents use"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON line per new alert (for piping)"),
    count: Optional[int] = typer.Option(None, "--count", min=1, help="exit after this many new alerts"),
    timeout: Optional[float] = typer.Option(
        None, "--timeout", min=0.0, help="exit after this many seconds (non-zero if --count was not reached)"
    ),
    username: Optional[str] = typer.Option(None, "--username", envvar="BINWATCH_MQTT_USERNAME"),
    password: Optional[str] = typer.Option(
        None, "--password", envvar="BINWATCH_MQTT_PASSWORD", help="prefer the environment variable"
    ),
    ca: Optional[Path] = typer.Option(None, "--ca", help="CA certificate (PEM) for mqtts://"),
    cert: Optional[Path] = typer.Option(None, "--cert", help="client certificate (PEM)"),
    key: Optional[Path] = typer.Option(None, "--key", help="client key (PEM)"),
) -> None:
    """Show live mismatch alerts, deduplicated by alert_id, with gaps in seq reported.

    Subscribes to <prefix>/<site>/<device>/alert/mismatch with QoS 1.

    With --json each new alert is one line on stdout and warnings go to stderr.
    """
    cfg, topic_filter = _broker_config(broker, prefix, site, device, username, password, ca, cert, key)
    from console.alerts_watch import AlertTracker, AlertWatcher

    watcher = AlertWatcher(cfg, topic_filter, AlertTracker())
    try:
        watcher.start()
    except (OSError, ValueError) as e:
        raise fail(f"cannot connect to {broker}: {e} (is the broker running? check --broker)", 1) from e
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        shown = _follow(watcher, broker, topic_filter, as_json=as_json, count=count, deadline=deadline)
    except KeyboardInterrupt:
        raise typer.Exit(code=130) from None
    if count is not None and shown < count:
        raise fail(f"timed out after {timeout:g} s with {shown} of {count} alert(s)", 1)


def _broker_config(
    broker: str,
    prefix: str,
    site: str,
    device: str,
    username: Optional[str],
    password: Optional[str],
    ca: Optional[Path],
    cert: Optional[Path],
    key: Optional[Path],
) -> tuple[Any, str]:
    """The connection settings and the topic filter; bad options exit 2 naming the option."""
    from pydantic import ValidationError

    from console.alerts_watch import alert_filter
    from mqttconn.config import BrokerConfig
    from mqttconn.env import warn_renamed

    warn_renamed()

    try:
        topic_filter = alert_filter(prefix, site, device)
    except ValueError as e:
        raise fail(f"{e} (use an id or + for --site/--device)", 2) from e
    tls: dict[str, Any] = {"ca": ca, "cert": cert, "key": key}
    try:
        cfg = BrokerConfig(
            broker=broker,
            prefix=prefix,
            username=username,
            password=password,
            tls={k: v for k, v in tls.items() if v is not None},
        )
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "options"
        raise fail(f"{where}: {first.get('msg')}", 2) from e
    return cfg, topic_filter


def _follow(
    watcher: Any,
    broker: str,
    topic_filter: str,
    *,
    as_json: bool,
    count: Optional[int],
    deadline: Optional[float],
) -> int:
    """Show alerts (a live table, or JSON lines) until ``count`` new ones or the deadline; returns
    how many new alerts were shown."""
    from console.alerts_watch import Notice

    err = Console(stderr=True)
    out = Console(highlight=False, soft_wrap=True)
    view = _View(topic_filter)
    announced = False
    shown = 0  # new alerts handed out (the tracker may run ahead of this loop)
    live = None if as_json else Live(view.render(), console=out, auto_refresh=False, transient=False)

    def warn(text: str) -> None:
        if live is None:
            err.print(f"warning: {text}", highlight=False)
        else:
            view.notices.append(text)

    try:
        if live is not None:
            live.start(refresh=True)
        while count is None or shown < count:
            if not announced and watcher.ready.is_set():
                announced = True
                if live is None:
                    err.print(f"listening on {broker} {topic_filter}", highlight=False)
            wait = 0.2 if deadline is None else min(0.2, deadline - time.monotonic())
            if wait <= 0:
                break
            try:
                event = watcher.events.get(timeout=wait)
            except queue.Empty:
                continue
            if isinstance(event, Notice):
                warn(event.text)
            else:
                for notice in event.notices:
                    warn(notice.text)
                if event.new:
                    shown += 1
                    if live is None:
                        sys.stdout.write(event.alert.to_json_bytes().decode("utf-8") + "\n")
                        sys.stdout.flush()
                    else:
                        view.add(event.alert, watcher.tracker)
            if live is not None:
                live.update(view.render(), refresh=True)
    finally:
        if live is not None:
            live.stop()
            if not out.is_terminal:
                out.line()  # Live leaves its last line open when the output is a pipe or file
            out.file.flush()
        watcher.stop()
    return shown


class _View:
    """The last alerts as a rich table, with warnings below."""

    def __init__(self, topic_filter: str) -> None:
        self.topic_filter = topic_filter
        self.rows: list[tuple[str, ...]] = []
        self.notices: list[str] = []
        self.summary = ""

    def add(self, alert: Any, tracker: Any) -> None:
        ts = alert.published_ts or alert.frame_ts
        self.rows.append(
            (
                ts.astimezone().strftime("%H:%M:%S"),
                f"{alert.site}/{alert.device}",
                alert.camera,
                alert.bin_id,
                str(alert.expected_qty),
                str(alert.predicted_qty),
                f"{alert.p_expected:.3f}",
                str(alert.seq),
                "yes" if alert.is_historical else "",
                alert.alert_id[:8],
            )
        )
        del self.rows[:-_ROWS]
        self.summary = (
            f"{tracker.new} alert(s), {tracker.duplicates} duplicate(s), {tracker.gaps} missing seq(s)"
        )

    def render(self) -> Group:
        table = Table(title=f"mismatch alerts on {self.topic_filter}", title_justify="left", expand=False)
        for name, justify in (
            ("time", "left"),
            ("device", "left"),
            ("camera", "left"),
            ("bin", "left"),
            ("expected", "right"),
            ("predicted", "right"),
            ("p(expected)", "right"),
            ("seq", "right"),
            ("replayed", "left"),
            ("alert", "left"),
        ):
            table.add_column(name, justify=justify)  # type: ignore[arg-type]
        for row in self.rows:
            table.add_row(*row)
        parts: list[Any] = [table, Text(self.summary or "waiting for alerts...", style="dim")]
        parts.extend(Text(f"warning: {n}", style="yellow") for n in self.notices[-_NOTICES:])
        return Group(*parts)


if __name__ == "__main__":
    app()
