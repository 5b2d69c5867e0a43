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
3. keeps the last ``update.keep_versions`` bundles on disk;
4. watches the new model for ``update.trial_s`` (:class:`TrialPolicy`): a failed health check or
   ``trial_max_errors`` inference errors roll it back to the previous bundle (``rolled_back``);
   so does a crash loop, caught at the next start (:mod:`agent.update.trial`). A desired state with
   ``rollback: true`` may name an older version; a bundle that was refused or rolled back is not
   tried again for the same rollout.

A desired state it cannot act on (not newer, a version that does not match the bundle, an
unreachable server, a full disk, a bad signature) is reported as ``failed`` with the reason; fetch
failures are retried with exponential backoff. Counting never stops.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Protocol

from agent.inference.model_store import LoadedModel, ModelLoadError, ModelStore
from agent.update.fetch import FetchError, fetch_bundle
from agent.update.trial import Installed, UpdateState
from contract.base import ContractError
from contract.messages import ModelDesired

log = logging.getLogger(__name__)

__all__ = ["TrialPolicy", "Updater"]


@dataclass(frozen=True)
class TrialPolicy:
    """How a new model is watched after the switch: ``seconds`` of trial, the agent's health
    (``healthy``), inference errors so far (``errors``; ``max_errors`` new ones fail the trial), and
    ``restarts`` starts within a trial that mean a crash loop."""

    seconds: float
    healthy: Callable[[], bool]
    errors: Callable[[], int]
    max_errors: int = 3
    restarts: int = 2


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
        state: UpdateState,
        trial: TrialPolicy,
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
        self.state = state
        self.trial = trial
        self._trial_errors = trial.errors()
        self._boot_rollback: Optional[tuple[int, str, Optional[str]]] = None
        self._cond = threading.Condition()
        self._desired: dict[str, ModelDesired] = {}
        self._done: Optional[tuple[int, str, Optional[str]]] = None  # last desired acted on
        self._failures = 0
        self.applied = 0
        self.failed = 0

    @classmethod
    def from_section(
        cls,
        u: Any,
        *,
        store: ModelStore,
        report: UpdateReporter,
        state_dir: Path,
        stop_event: threading.Event,
        healthy: Callable[[], bool],
        errors: Callable[[], int],
        refuse: Optional[Callable[[str, str, str, str], None]] = None,
    ) -> Updater:
        """An updater configured by the agent's ``update:`` section ``u``, keeping its files under
        ``<state_dir>/updates``."""
        return cls(
            store=store,
            report=report,
            staging=state_dir / "updates",
            max_bytes=u.max_bytes,
            timeout_s=u.timeout_s,
            keep_versions=u.keep_versions,
            retry_min_s=u.retry_min_s,
            retry_max_s=u.retry_max_s,
            stop_event=stop_event,
            state=UpdateState(state_dir / "updates" / "state.json"),
            trial=TrialPolicy(u.trial_s, healthy, errors, u.trial_max_errors, u.trial_restarts),
            refuse=refuse,
        )

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
            self.check_trial()
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
                self._retrying(desired, f"download failed: {e} (retry in {delay:.1f} s)")
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
        if (desired.sha256, desired.rollout_id) in self.state.refused:
            self._done = self._identity(desired)  # refused or rolled back before: reported then
            return False
        if desired.version < running and not desired.rollback:
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
        previous = self._installed(current)
        try:
            model = self.store.load(path, expect_version=desired.version, expect_signature=desired.signature)
        except ModelLoadError as e:
            self.failed += 1
            self.state.refuse((desired.sha256, desired.rollout_id))
            log.error("update to version %d refused: %s", desired.version, e)
            self.prune()
            return False
        new = Installed(str(path), desired.version, desired.rollout_id)
        self.state.switched(new, None if desired.rollback else previous, self.trial.seconds)
        self._trial_errors = self.trial.errors()
        self.applied += 1
        log.info("updated to %s v%d (rollout %s)", model.card.name, model.card.version, desired.rollout_id)
        self.prune()
        return True

    @staticmethod
    def _installed(model: Optional[LoadedModel]) -> Optional[Installed]:
        if model is None or model.source is None:
            return None
        return Installed(str(model.source), model.card.version)

    # -- the trial after a switch -----------------------------------------------------------------
    def check_trial(self) -> None:
        """Roll back a model in its trial window that fails a health check; close the trial when
        the window has passed."""
        trial = self.state.trial
        if trial is None:
            return
        errors = self.trial.errors() - self._trial_errors
        if not self.trial.healthy():
            self.rollback("the agent failed its health check (/healthz) during the trial")
        elif errors >= self.trial.max_errors:
            self.rollback(f"{errors} inference errors during the trial")
        elif time.time() >= trial.until:
            self.state.confirm()
            log.info("model version %d passed its trial", trial.version)

    def rollback(self, reason: str) -> bool:
        """Go back to the previous bundle; report ``rolled_back`` for the failed version."""
        failed, previous = self.state.current, self.state.previous
        if failed is None or previous is None:
            self.state.confirm()
            return False
        self.report.rollout_id = failed.rollout_id
        try:
            self.store.load(Path(previous.source))
        except ModelLoadError as e:
            log.error(
                "rollback to version %d failed (%s); keeping version %d", previous.version, e, failed.version
            )
            self.state.confirm()
            return False
        self.state.rolled_back(failed.refusal)
        self.report(failed.version, "rolled_back", f"{reason}; version {previous.version} is running again")
        log.error("rolled back from version %d to %d: %s", failed.version, previous.version, reason)
        return True

    def boot(self, configured: Optional[Path]) -> Optional[Path]:
        """The bundle to load at start: the one the updater installed last, or the configured one;
        after a crash loop in a trial, the previous one (reported once the model is loaded)."""
        bundle, self._boot_rollback = self.state.boot(configured, self.trial.restarts)
        return bundle

    def report_boot(self) -> None:
        """After the start's model load: report a crash-loop rollback decided by :meth:`boot`."""
        if self._boot_rollback is not None:
            version, reason, rollout_id = self._boot_rollback
            self.report.rollout_id = rollout_id
            self.report(version, "rolled_back", reason)
            self._boot_rollback = None

    def _retrying(self, desired: ModelDesired, reason: str) -> None:
        """A fetch that failed and will be tried again: still ``downloading`` (a rollout waits for it
        until its stage times out), not ``failed``, which would fail the device in a rollout at once."""
        log.warning("desired model version %d: %s", desired.version, reason)
        self.report.rollout_id = desired.rollout_id
        self.report(desired.version, "downloading", reason)

    def _fail(self, desired: ModelDesired, reason: str) -> None:
        self.failed += 1
        log.warning("desired model version %d not applied: %s", desired.version, reason)
        self.report.rollout_id = desired.rollout_id
        self.report(desired.version, "failed", reason)

    def prune(self) -> None:
        """At most ``keep_versions`` bundles on disk (downloads and their unpacked folders): the
        running one and the one a rollback would go back to first, then the newest others."""
        current = self.store.current
        first = [Path(i.source) for i in (self.state.current, self.state.previous) if i is not None]
        if current is not None and current.source is not None:
            first.insert(0, current.source)
        _keep_newest(list(self.staging.glob("*.tar")), first, self.keep_versions, Path.unlink)
        wanted = self.effective()
        for part in self.staging.glob("*.part"):
            if wanted is None or part.stem != wanted.sha256:
                part.unlink(missing_ok=True)
        models = self.store.models_dir
        if models.is_dir():
            dirs = [d for d in models.iterdir() if d.is_dir() and not d.name.startswith(".")]
            running = [current.bundle] if current is not None else []
            _keep_newest(dirs, running, self.keep_versions, lambda d: shutil.rmtree(d, ignore_errors=True))


def _keep_newest(paths: list[Path], first: list[Path], n: int, remove: Callable[[Path], object]) -> None:
    """Remove all but ``n`` of ``paths``: those in ``first`` (in order) come before the newest."""
    ranked = sorted(
        paths, key=lambda p: (p not in first, first.index(p) if p in first else 0, -p.stat().st_mtime)
    )
    for old in ranked[n:]:
        remove(old)
        log.info("removed old bundle %s", old.name)
