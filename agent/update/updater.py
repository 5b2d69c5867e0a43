"""The agent's updater: follows the retained desired model and switches to it safely.

Desired states arrive on three topics (the device's own, its groups', the fleet's); the most
specific one that is present applies (device > group > fleet). For a desired version newer than the
running model, the ``model-update`` thread:

1. reports ``downloading`` and fetches the bundle to staging (:mod:`agent.update.fetch`: size limit,
   timeout, resume, sha256 against the desired state);
2. hands the file to the model store, which verifies every sha256 and the signature against the
   trust list, builds or loads the engine, warms up, checks the golden set, and only then switches
   (the old model serves until that moment; a failed load leaves it running). Each of those steps
   is reported on ``model/reported`` by the store, with the rollout id;
3. keeps the last ``update.keep_versions`` bundles on disk.

A desired state it cannot act on (not newer, a version that does not match the bundle, an
unreachable server, a full disk, a bad signature) is reported as ``failed`` with the reason; fetch
failures are retried with exponential backoff. Counting never stops.
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Optional, Protocol

from agent.inference.model_store import ModelLoadError, ModelStore
from agent.update.fetch import FetchError, fetch_bundle
from contract.base import ContractError
from contract.messages import ModelDesired

log = logging.getLogger(__name__)

__all__ = ["Updater"]


class UpdateReporter(Protocol):
    """``model/reported`` (:class:`agent.delivery.status.ModelStateReporter`)."""

    rollout_id: Optional[str]

    def __call__(self, version: int, state: str, detail: str) -> None: ...


class Updater:
    """``on_desired(scope, payload)`` takes each desired-state message (``scope``: ``device``,
    ``group:<name>`` or ``fleet``); ``loop()`` is the ``model-update`` thread."""

    def __init__(
        self,
        *,
        store: ModelStore,
        report: UpdateReporter,
        staging: Path,
        max_bytes: int,
        timeout_s: float,
        keep_versions: int,
        retry_min_s: float,
        retry_max_s: float,
        stop_event: threading.Event,
        refuse: Optional[Callable[[str, str, str, str], None]] = None,
    ) -> None:
        self.store = store
        self.report = report
        self.staging = staging
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.keep_versions = keep_versions
        self.retry_min_s, self.retry_max_s = retry_min_s, retry_max_s
        self.stop_event = stop_event
        self.refuse = refuse
        self._cond = threading.Condition()
        self._desired: dict[str, ModelDesired] = {}
        self._done: Optional[tuple[int, str, Optional[str]]] = None  # last desired acted on
        self._failures = 0
        self.applied = 0
        self.failed = 0

    # -- MQTT dispatcher thread -------------------------------------------------------------------
    def on_desired(self, scope: str, topic: str, payload: bytes) -> None:
        """Remember a desired state (an empty retained payload clears it) and wake the worker."""
        if not payload:
            with self._cond:
                self._desired.pop(scope, None)
                self._cond.notify_all()
            return
        try:
            desired = ModelDesired.parse(payload)
        except ContractError as e:
            if self.refuse is not None:
                self.refuse("model_desired", "invalid", topic, str(e))
            return
        with self._cond:
            self._desired[scope] = desired
            self._failures = 0
            self._cond.notify_all()

    def effective(self) -> Optional[ModelDesired]:
        """The desired state that applies: the device's, else a group's (the highest version), else
        the fleet's."""
        with self._cond:
            if "device" in self._desired:
                return self._desired["device"]
            groups = [d for s, d in self._desired.items() if s.startswith("group:")]
            if groups:
                return max(groups, key=lambda d: d.version)
            return self._desired.get("fleet")

    # -- the model-update thread ------------------------------------------------------------------
    def loop(self) -> None:
        delay = 0.0
        while not self.stop_event.is_set():
            with self._cond:
                self._cond.wait(timeout=max(0.2, delay) if delay else 0.5)
            if self.stop_event.is_set():
                return
            desired = self.effective()
            if desired is None or self._identity(desired) == self._done:
                delay = 0.0
                continue
            try:
                self.apply(desired)
                delay = 0.0
            except FetchError as e:
                self._failures += 1
                delay = min(self.retry_max_s, self.retry_min_s * 2 ** (self._failures - 1))
                self._fail(desired, f"{e} (retry in {delay:.0f} s)")
                self.stop_event.wait(delay)
            except Exception:
                log.exception("model update failed unexpectedly; the running model stays")
                self._done = self._identity(desired)

    @staticmethod
    def _identity(d: ModelDesired) -> tuple[int, str, Optional[str]]:
        return (d.version, d.sha256, d.rollout_id)

    def apply(self, desired: ModelDesired) -> bool:
        """Act on one desired state; True when it is now the running model. Raises FetchError
        (to be retried); every other refusal is reported and final for that desired state."""
        current = self.store.current
        running = current.card.version if current is not None else 0
        if current is not None and desired.version == running:
            self._done = self._identity(desired)
            return True
        if desired.version < running:
            self._done = self._identity(desired)
            self._fail(desired, f"version {desired.version} is not newer than the running version {running}")
            return False
        self.report.rollout_id = desired.rollout_id
        self.report(desired.version, "downloading", desired.bundle_url[:500])
        path = fetch_bundle(
            desired.bundle_url,
            self.staging,
            sha256=desired.sha256,
            max_bytes=self.max_bytes,
            timeout_s=self.timeout_s,
        )
        self._done = self._identity(desired)
        try:
            model = self.store.load(path, expect_version=desired.version, expect_signature=desired.signature)
        except ModelLoadError as e:
            self.failed += 1
            log.error("update to version %d refused: %s", desired.version, e)
            return False
        self.applied += 1
        log.info("updated to %s v%d (rollout %s)", model.card.name, model.card.version, desired.rollout_id)
        self.prune()
        return True

    def _fail(self, desired: ModelDesired, reason: str) -> None:
        self.failed += 1
        log.warning("desired model version %d not applied: %s", desired.version, reason)
        self.report.rollout_id = desired.rollout_id
        self.report(desired.version, "failed", reason)

    def prune(self) -> None:
        """Keep the newest ``keep_versions`` downloaded bundles (the running one always)."""
        current = self.store.current
        keep = {current.source} if current is not None and current.source is not None else set()
        tars = sorted(self.staging.glob("*.tar"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in tars[self.keep_versions :]:
            if old not in keep:
                old.unlink(missing_ok=True)
                log.info("removed old bundle %s", old.name)
        wanted = self.effective()
        for part in self.staging.glob("*.part"):
            if wanted is None or part.stem != wanted.sha256:
                part.unlink(missing_ok=True)
        models = self.store.models_dir
        if models.is_dir():
            dirs = sorted(
                (d for d in models.iterdir() if d.is_dir() and not d.name.startswith(".")),
                key=lambda d: d.stat().st_mtime,
                reverse=True,
            )
            running = current.bundle if current is not None else None
            for old in dirs[self.keep_versions :]:
                if old != running:
                    shutil.rmtree(old, ignore_errors=True)
