"""What the fleet commands print: the live rollout table of ``push``/``rollback`` and the fleet
table of ``status`` (rich), and the rows behind ``status --json``."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Optional

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from contract.base import ContractError
from contract.messages import ModelDesired
from deploy.fleet import FleetLink
from deploy.state import RolloutState

__all__ = ["PushView", "status_rows", "status_table"]

_STYLE = {"active": "green", "failed": "red", "timeout": "red", "pending": "yellow"}


class PushView:
    """A live table of the rollout's devices (result and what each last reported), with each
    event printed above it as one line. On a pipe or file the events are plain lines and the
    table is printed once, at the end."""

    def __init__(self, state: RolloutState, link: Optional[FleetLink], console: Console) -> None:
        self.state = state
        self.link = link
        self.console = console
        self._live = Live(self.render(), console=console, auto_refresh=False, transient=False)

    def __enter__(self) -> PushView:
        self._live.start(refresh=True)
        return self

    def __exit__(self, *exc: object) -> None:
        self._live.update(self.render(), refresh=True)
        self._live.stop()
        if not self.console.is_terminal:
            self.console.line()
        self.console.file.flush()

    def event(self, text: str) -> None:
        self._live.console.print(f"{datetime.now():%H:%M:%S} {text}", highlight=False, soft_wrap=True)

    def update(self) -> None:
        self._live.update(self.render(), refresh=True)

    def render(self) -> Group:
        st = self.state
        table = Table(
            title=f"rollout {st.rollout_id}: {st.bundle.name} v{st.bundle.version} to {st.site}",
            title_justify="left",
        )
        for name in ("device", "stage", "result", "reported", "detail"):
            table.add_column(name)
        for device, rec in st.devices.items():
            result = "rolled back" if rec.rolled_back else rec.result
            table.add_row(
                device,
                str(rec.stage + 1),
                Text(result, style=_STYLE.get(rec.result, "")),
                self._reported(device),
                rec.detail,
            )
        stage = min(st.stage + 1, len(st.stages))
        summary = (
            f"{st.status}: stage {stage}/{len(st.stages)}, {len(st.failures())} failure(s) "
            f"(allowed {st.allowed_failures})"
        )
        if st.halt_reason:
            summary += f"; halted: {st.halt_reason}"
        return Group(table, Text(summary, style="dim"))

    def _reported(self, device: str) -> str:
        reports = self.link.reports(device) if self.link is not None else []
        if not reports:
            return ""
        last = reports[-1]
        return f"v{last.version} {last.state}"


def status_rows(link: FleetLink) -> list[dict[str, Any]]:
    """One row per device of the site: what its retained status, model/reported and desired say."""
    rows = []
    for device in link.devices():
        status = link.status(device)
        reports = link.reports(device)
        report = reports[-1] if reports else None
        rows.append(
            {
                "device": device,
                "online": status.state if status is not None else None,
                "version": status.model.version if status is not None and status.model else None,
                "model": status.model.name if status is not None and status.model else None,
                "desired": _desired_version(link.desired(device)),
                "update": report.state if report is not None else None,
                "update_version": report.version if report is not None else None,
                "detail": report.detail if report is not None else "",
                "rollout": report.rollout_id if report is not None else None,
                "last_seen": status.ts.isoformat().replace("+00:00", "Z") if status is not None else None,
            }
        )
    return rows


def _desired_version(payload: Optional[bytes]) -> Optional[int]:
    if not payload:
        return None
    try:
        return ModelDesired.parse(payload).version
    except ContractError:
        try:
            return int(json.loads(payload)["version"])
        except (ValueError, KeyError, TypeError):
            return None


def status_table(rows: list[dict[str, Any]], site: str) -> Table:
    table = Table(title=f"devices of site {site}", title_justify="left")
    for name in ("device", "online", "model", "desired", "update", "rollout", "last seen"):
        table.add_column(name)
    for r in rows:
        online = r["online"] or "unknown"
        model = f"{r['model']} v{r['version']}" if r["version"] is not None else "-"
        update = "-"
        if r["update"] is not None:
            update = f"v{r['update_version']} {r['update']}" + (f": {r['detail']}" if r["detail"] else "")
        table.add_row(
            r["device"],
            Text(online, style="green" if online == "online" else "red"),
            model,
            f"v{r['desired']}" if r["desired"] is not None else "-",
            Text(update, style=_STYLE.get(r["update"] or "", "")),
            r["rollout"] or "-",
            _local_time(r["last_seen"]),
        )
    return table


def _local_time(ts: Optional[str]) -> str:
    if ts is None:
        return "-"
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).astimezone().strftime("%Y-%m-%d %H:%M:%S")
