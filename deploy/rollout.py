"""A staged rollout over MQTT (docs/deploy.md, "Pushing a model to the fleet").

Stage by stage (canary first), each device of the stage gets the retained desired state on its own
``model/desired`` topic; its retained desired state from before is kept in the state file first.
A device succeeds when its ``model/reported`` says ``active`` with the version and this rollout's
id, and fails when it says ``failed`` (or ``rolled_back``) with this rollout's id, or when the
stage's time runs out. A failed canary, or more failures than allowed, halts the rollout and rolls
back every device it moved: each gets its previous desired state again (with ``rollback: true``
where the contract has that field), or an empty retained payload when it had none (the agent then
keeps its running model). The state file is written after every step, so ``push --resume`` and
``rollback`` pick up where an interrupted run stopped.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Optional, Protocol

from contract.base import ContractError
from contract.messages import ModelDesired
from deploy.fleet import FleetLink
from deploy.state import RolloutState, now_text

log = logging.getLogger(__name__)

__all__ = ["Rollout", "RolloutView", "restore_payload"]


class RolloutView(Protocol):
    """Where a rollout shows its progress (a rich live table in the CLI)."""

    def event(self, text: str) -> None: ...

    def update(self) -> None: ...


class Rollout:
    """Runs (or resumes) the rollout of ``state`` and rolls it back; saves ``state`` to ``path``
    after every change."""

    def __init__(
        self, state: RolloutState, path: Path, link: FleetLink, view: RolloutView, *, poll_s: float = 0.2
    ) -> None:
        self.state = state
        self.path = path
        self.link = link
        self.view = view
        self.poll_s = poll_s
        self.payload = state.desired.encode("utf-8")

    # -- rolling out ------------------------------------------------------------------------------
    def run(self) -> bool:
        """Every remaining stage; True when all devices are active, False when it halted (and was
        rolled back)."""
        st = self.state
        while st.stage < len(st.stages):
            reason = self._run_stage(st.stage)
            if reason:
                self.view.event(f"halted: {reason}")
                self.rollback(reason)
                return False
            st.stage += 1
            self._save()
        st.status = "completed"
        self._save()
        active = len(st.devices) - len(st.failures())
        self.view.event(
            f"completed: {active} of {len(st.devices)} device(s) active on version {st.bundle.version}"
        )
        return True

    def stage_label(self, index: int) -> str:
        st = self.state
        if index == 0 and st.canary:
            return "canary"
        reached = sum(len(s) for s in st.stages[: index + 1])
        return f"{round(100 * reached / max(1, len(st.devices)))}%"

    def _run_stage(self, index: int) -> str:
        """Move the stage's devices and wait for them; the halt reason, or "" when it passed."""
        st = self.state
        devices = st.stages[index]
        self.view.event(
            f"stage {index + 1}/{len(st.stages)} ({self.stage_label(index)}): {', '.join(devices)}"
        )
        for device in devices:
            if not st.devices[device].moved:
                self._move(device)
        deadline = time.monotonic() + st.stage_timeout_s
        soak_end: Optional[float] = None
        while True:
            for device in self._watched(index):
                self._check(device)
            self.view.update()
            reason = self._halt_reason(devices, canary=index == 0 and st.canary > 0)
            if reason:
                return reason
            pending, now = self._pending(devices), time.monotonic()
            if not pending:  # every device decided: watch them --soak seconds more (the agents' trial)
                soak_end = now + st.soak_s if soak_end is None else soak_end
                if now >= soak_end:
                    return ""
                self.link.wait(min(self.poll_s, soak_end - now))
            elif now >= deadline:
                for device in pending:
                    self._decide(device, "timeout", f"no result within {st.stage_timeout_s:g} s")
            else:
                self.link.wait(min(self.poll_s, deadline - now))

    def _pending(self, devices: list[str]) -> list[str]:
        return [d for d in devices if self.state.devices[d].result == "pending"]

    def _watched(self, index: int) -> list[str]:
        """The devices of this stage and the earlier ones that are pending or active: an active
        device that rolls back later (the agent's trial window) still counts as a failure."""
        devices = [d for stage in self.state.stages[: index + 1] for d in stage]
        return [d for d in devices if self.state.devices[d].result in ("pending", "active")]

    def _halt_reason(self, devices: list[str], *, canary: bool) -> str:
        st = self.state
        failed = st.failures()
        if canary and any(d in failed for d in devices):
            d = next(d for d in devices if d in failed)
            return f"canary {d} {st.devices[d].result}: {st.devices[d].detail}"
        if len(failed) > st.allowed_failures:
            return f"{len(failed)} device(s) failed, more than the {st.allowed_failures} allowed"
        return ""

    def _move(self, device: str) -> None:
        """Keep the device's desired state, then publish ours (retained)."""
        rec = self.state.devices[device]
        current = self.link.desired(device)
        if current != self.payload:  # ours already there: a resumed run crashed after publishing
            rec.previous = current.decode("utf-8", "replace") if current is not None else None
        self._save()
        already = self._runs_target(device)
        self.link.publish_desired(device, self.payload)
        rec.moved = True
        self._save()
        self.view.event(f"{device}: desired version {self.state.bundle.version} published")
        if already:
            self._decide(device, "active", f"already running version {self.state.bundle.version}")

    def _runs_target(self, device: str) -> bool:
        """The device runs the target version now (the agent then reports nothing new)."""
        version = self.state.bundle.version
        status = self.link.status(device)
        if status is not None and status.model is not None and status.model.version == version:
            return True
        reports = self.link.reports(device)
        return bool(reports) and reports[-1].state == "active" and reports[-1].version == version

    def _check(self, device: str) -> None:
        """Decide from the device's latest report that carries this rollout's id: ``active`` on the
        version decides a pending device; ``failed`` or ``rolled_back`` fails a pending or active one."""
        st = self.state
        for report in reversed(self.link.reports(device)):
            if report.rollout_id != st.rollout_id:
                continue
            if report.state == "failed":
                self._decide(device, "failed", report.detail or "failed")
            elif report.state == "rolled_back":
                self._decide(
                    device, "failed", f"rolled back: {report.detail}" if report.detail else "rolled back"
                )
            elif (
                report.state == "active"
                and report.version == st.bundle.version
                and st.devices[device].result == "pending"
            ):
                self._decide(device, "active", f"version {report.version}")
            return

    def _decide(self, device: str, result: str, detail: str) -> None:
        rec = self.state.devices[device]
        rec.result = result  # type: ignore[assignment]  # validated by the model
        rec.detail = detail
        rec.ts = now_text()
        self._save()
        self.view.event(f"{device}: {result} ({detail})")

    # -- rolling back -----------------------------------------------------------------------------
    def rollback(self, reason: Optional[str] = None) -> list[str]:
        """Give every moved device its previous desired state again; the devices rolled back now."""
        st = self.state
        if reason:
            st.halt_reason = reason
        st.status = "halted"
        self._save()
        done = []
        for device in st.moved():
            rec = st.devices[device]
            if rec.rolled_back:
                continue
            self.link.publish_desired(device, restore_payload(rec.previous))
            rec.rolled_back = True
            self._save()
            done.append(device)
            if rec.previous is None:
                self.view.event(f"{device}: desired state cleared (it had none; the agent keeps its model)")
            else:
                self.view.event(f"{device}: previous desired state restored")
        st.status = "rolled_back"
        self._save()
        self.view.update()
        return done

    def _save(self) -> None:
        self.state.save(self.path)


def restore_payload(previous: Optional[str]) -> bytes:
    """What rolls a device back: its previous desired payload, with ``rollback: true`` when the
    contract's ModelDesired has that field (unreadable payloads go back as they were); empty (clear
    the retained message) when it had none."""
    if previous is None:
        return b""
    if "rollback" in ModelDesired.model_fields:
        try:
            desired = ModelDesired.parse(previous)
        except ContractError as e:
            log.warning("previous desired state restored as it was (not readable here: %s)", e)
        else:
            return desired.model_copy(update={"rollback": True}).to_json_bytes()
    return previous.encode("utf-8")
