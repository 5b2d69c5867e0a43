"""The agent runtime: builds the stages, wires them together, starts and stops them.

The flow (docs/architecture.md has the whole route of a frame)::

    intake/     capture threads (one per camera) -> FrameHub;  MQTT bin events, manifests, commands
    inference/  pipeline thread: hub -> presentations -> backend -> decision
    delivery/   delivery thread: snapshot, alert -> SQLite outbox -> MQTT link (publisher thread)
    update/     model-update thread: desired model -> fetch -> verify, build, warm, golden -> switch
    web/        local HTTP: /healthz /readyz /metrics /v1/count

Each part gets its collaborators here, as constructor arguments; none of them holds the runtime.
Every loop waits on the stop event with a timeout.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Optional

from agent.commands import Commands
from agent.config import AgentConfig
from agent.delivery.deliver import Delivery
from agent.delivery.link import MqttLink
from agent.delivery.outbox import Outbox
from agent.delivery.records import ReplayCursors, VerdictLog
from agent.delivery.replies import CommandReplier
from agent.delivery.snapshots import SnapshotStore
from agent.delivery.state import AgentState
from agent.delivery.status import ModelStateReporter, StatusReporter, delivery_state
from agent.housekeeping import Housekeeper
from agent.inference.backends.base import Backend
from agent.inference.bundle_checks import BundleChecks
from agent.inference.model_store import ModelLoadError, ModelStore
from agent.inference.pipeline import InferencePipeline
from agent.intake.capture import CaptureManager
from agent.intake.hub import FrameHub
from agent.intake.inbound import MessageHandler, Refusals
from agent.intake.journal import EventJournal
from agent.intake.manifests import ManifestStore
from agent.intake.sources import FrameSource, make_source
from agent.metrics import AgentMetrics
from agent.systemd import SystemdNotifier
from agent.update.updater import Updater
from agent.web.endpoints import AgentEndpoints
from agent.web.server import AgentHttpServer
from contract.topics import Topics

log = logging.getLogger(__name__)

__all__ = ["Runtime"]


class Runtime:
    """One running agent. ``start()`` then ``run()`` (blocks) or ``stop()`` from elsewhere."""

    def __init__(
        self,
        cfg: AgentConfig,
        *,
        backend_factory: Optional[Callable[[], Backend]] = None,
        source_factory: Callable[..., FrameSource] = make_source,
        max_frames: Optional[int] = None,
        exit_when_done: bool = False,
    ) -> None:
        self.cfg = cfg
        self.max_frames = max_frames
        self.exit_when_done = exit_when_done
        self.stop_event = threading.Event()
        self.metrics = AgentMetrics()
        self.notifier = SystemdNotifier()  # a no-op outside a systemd unit with Type=notify
        a = cfg.agent
        self.site, self.device = a.site, a.device
        self.topics = Topics(a.site, a.device, prefix=cfg.mqtt.prefix)
        self.state_dir = Path(a.state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._build_storage(cfg)
        self._build_link(cfg)
        self._build_stages(cfg, backend_factory, source_factory)
        self.http: Optional[AgentHttpServer] = None
        self._threads: list[threading.Thread] = []
        self._started = False
        self._stopped = False
        self.exit_code = 0
        self.final_outbox_depth = 0

    # -- construction ------------------------------------------------------------------------------
    def _build_storage(self, cfg: AgentConfig) -> None:
        """What lives in the state dir: session/seq, outbox, replay cursors, verdict log, snapshots."""
        self.state = AgentState(self.state_dir)
        o, s = cfg.outbox, cfg.snapshots
        self.outbox = Outbox(
            self.state_dir, max_rows=o.max_rows, max_bytes=o.max_bytes, snapshot_max_bytes=s.outbox_max_bytes
        )
        self.cursors = ReplayCursors(self.state_dir / "replay")
        self.journal = EventJournal(self.state_dir)
        a = cfg.agent
        self.verdict_log = (
            VerdictLog(self.state_dir / "verdicts.jsonl", a.verdict_log_max_bytes) if a.verdict_log else None
        )
        self.snapshots: Optional[SnapshotStore] = None
        if s.enabled:
            self.snapshots = SnapshotStore(
                cfg.snapshot_dir,
                max_files=s.max_files,
                max_bytes=s.max_bytes,
                retention_days=s.retention_days,
            )
        self.manifests = ManifestStore(
            folder=cfg.manifest.dir,
            csv_path=cfg.manifest.csv,
            use_mqtt=cfg.manifest.mqtt,
            max_entries=cfg.manifest.max_entries,
        )

    def _build_link(self, cfg: AgentConfig) -> None:
        """The MQTT link; what it asks for (status, stats, incoming messages) is built next."""
        topics = self.topics.subscriptions(
            cfg.update.groups, manifests=cfg.manifest.mqtt, desired=cfg.update.enabled
        )
        subs = [(t, 1) for t in topics]
        self.link = MqttLink(
            cfg.mqtt,
            self.topics,
            self.outbox,
            self.state,
            status_provider=lambda state: self.status.status(state),
            on_message=lambda topic, payload: self.inbound.handle(topic, payload),
            subscriptions=subs,
            stats_provider=lambda: self.status.stats(),
        )

    def _build_stages(
        self,
        cfg: AgentConfig,
        backend_factory: Optional[Callable[[], Backend]],
        source_factory: Callable[..., FrameSource],
    ) -> None:
        self._build_store(cfg, backend_factory)
        self.replies = CommandReplier(self.link)
        self.delivery = Delivery(
            site=self.site,
            device=self.device,
            sink=self.link,
            replies=self.replies,
            metrics=self.metrics,
            cursors=self.cursors,
            verdict_log=self.verdict_log,
            snapshots=self.snapshots,
            snapshot_quality=cfg.snapshots.quality,
            publish_results=cfg.mqtt.publish_results,
            queue_size=max(64, 8 * cfg.model.batch),
            journal=self.journal,
            publish_snapshots=cfg.snapshots.publish,
        )
        replays = [c for c in cfg.cameras if c.resolved_kind == "replay"]
        run_ids, positions = self.cursors.begin_all(
            [(c.name, str(Path(str(c.source)).resolve()), c.resume) for c in replays]
        )
        self.hub = FrameHub()
        self.pipeline = InferencePipeline(
            cameras=cfg.cameras,
            decision=cfg.decision,
            batch=cfg.model.batch,
            store=self.store,
            hub=self.hub,
            manifests=self.manifests,
            metrics=self.metrics,
            sink=self.delivery,
            stop_event=self.stop_event,
            run_ids=run_ids,
            max_frames=self.max_frames,
        )
        self.tracker = self.pipeline.tracker
        self.capture = CaptureManager(
            cfg.cameras,
            self.hub,
            self.stop_event,
            source_factory=source_factory,
            prepare=self.pipeline.prepare,
            positions=positions,
            batch=cfg.model.batch,
        )
        self.status = StatusReporter(
            capture=self.capture, store=self.store, metrics=self.metrics, manifests=self.manifests
        )
        self._build_inbound(cfg)
        self.endpoints = AgentEndpoints(
            store=self.store,
            capture=self.capture,
            metrics=self.metrics,
            alive=lambda: {t.name: t.is_alive() for t in self._threads},
            running=lambda: self._started and not self.stop_event.is_set(),
            connected=lambda: self.link.connected,
            outbox_depth=self.outbox.depth,
            delivery=lambda: delivery_state(self.outbox, self.journal),
        )
        self.housekeeper = Housekeeper(
            capture=self.capture,
            status=self.status,
            publish_status=self.link.publish_status,
            connected=lambda: self.link.connected,
            store=self.store,
            outbox=self.outbox,
            metrics=self.metrics,
            cursors=self.cursors,
            snapshots=self.snapshots,
            stop_event=self.stop_event,
            healthy=lambda: self.endpoints.health()[0],
            watchdog=self.notifier.watchdog,
        )

    def _build_store(self, cfg: AgentConfig, backend_factory: Optional[Callable[[], Backend]]) -> None:
        """The model store, with the checks a bundle passes and the reporter of its states."""
        self.model_state = ModelStateReporter(self.link, self.metrics, lambda: self.store.current)
        self.store = ModelStore(
            backend_factory or self._default_backend,
            models_dir=self.state_dir / "models",
            verify=cfg.model.verify,
            warmup=cfg.model.warmup,
            mismatch_threshold=cfg.decision.mismatch_threshold,
            match_threshold=cfg.decision.match_threshold,
            on_state=self.model_state,
            checks=BundleChecks(
                verify=cfg.model.verify,
                trusted_keys=cfg.model.trusted_keys,
                allow_unsigned=cfg.model.allow_unsigned,
                golden=cfg.model.golden_check,
            ),
        )

    def _build_inbound(self, cfg: AgentConfig) -> None:
        cameras = [c.name for c in cfg.cameras]
        refuse = Refusals(self.metrics)
        u = cfg.update
        self.updater: Optional[Updater] = (
            Updater.from_section(
                u,
                store=self.store,
                report=self.model_state,
                state_dir=self.state_dir,
                stop_event=self.stop_event,
                healthy=lambda: self.endpoints.health()[0],
                errors=lambda: self.metrics.counts.get("error:inference", 0),
                refuse=refuse,
            )
            if u.enabled
            else None
        )
        self.commands = Commands(
            store=self.store,
            bundle=cfg.model.bundle,
            cameras=cameras,
            frames_per_event=cfg.decision.frames_per_event,
            start_presentation=self.pipeline.start_presentation,
            publish_status=self.link.publish_status,
            model_state=self.model_state,
            replies=self.replies,
            refuse=refuse,
        )
        self.inbound = MessageHandler(
            prefix=self.topics.prefix,
            site=self.site,
            cameras=cameras,
            frames_per_event=cfg.decision.frames_per_event,
            manifests=self.manifests,
            start_presentation=self.pipeline.start_presentation,
            on_command=self.commands,
            refuse=refuse,
            on_desired=self.updater.on_desired if self.updater is not None else None,
            journal=self.journal,
            fail_event=self.delivery.fail,
            max_age_s=cfg.decision.event_max_age_s,
        )

    def _default_backend(self) -> Backend:
        from agent.inference.backends.registry import create_backend

        m = self.cfg.model
        return create_backend(
            m.backend,
            precision=m.precision,
            threads=m.threads,
            inter_threads=m.inter_threads,
            engine_cache=self.cfg.engine_cache_dir,
            batch=m.batch,
        )

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the link and HTTP, load the model (raises ModelLoadError), then capture."""
        self._started = True
        self.link.start()
        if self.cfg.http.enabled:
            h = self.cfg.http
            self.http = AgentHttpServer(self.endpoints, h.host, h.port, h.max_body_bytes)
            self.http.start()
            (self.state_dir / "http.url").write_text(self.http.url + "\n")
        bundle = self.cfg.model.bundle
        if self.updater is not None:
            bundle = self.updater.boot(
                bundle
            )  # the last installed update, or the previous after a crash loop
        if bundle is not None:
            self.store.load(bundle)
            if self.updater is not None:
                self.updater.report_boot()
        elif self.cfg.model.backend == "fake":
            raise ModelLoadError("the fake backend needs a bundle folder with card.json (model.bundle)")
        self.metrics.model_ready.set(1)
        for target, name in (
            (self.pipeline.loop, "inference"),
            (self.delivery.loop, "delivery"),
            (self.housekeeper.loop, "housekeeping"),
            *(((self.updater.loop, "model-update"),) if self.updater is not None else ()),
        ):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        self.inbound.resume_pending()
        if self.cfg.model.watch and self.cfg.model.bundle is not None:
            self.store.watch(self.cfg.model.bundle, self.stop_event, self.cfg.model.watch_interval_s)
        self._wait_for_broker()
        self.capture.start()
        self.notifier.ready("counting")
        log.info(
            "agent %s/%s running: %d camera(s), model %s, broker %s",
            self.site,
            self.device,
            len(self.cfg.cameras),
            self.store.current.describe() if self.store.current else None,
            self.cfg.mqtt.broker,
        )

    def _wait_for_broker(self) -> None:
        """Give the broker connection a moment, so that the first alerts go out live rather than
        as a backlog; with the broker down the agent starts counting anyway."""
        deadline = time.monotonic() + min(3.0, self.cfg.mqtt.connect_timeout_s)
        while not self.link.connected and time.monotonic() < deadline and not self.stop_event.is_set():
            time.sleep(0.02)
        if not self.link.connected:
            log.warning("broker %s not reachable yet: counting and buffering alerts", self.cfg.mqtt.broker)

    def request_stop(self) -> None:
        self.stop_event.set()

    def run(self) -> int:
        """Block until stopped (signal, ``request_stop``) or, with ``exit_when_done`` /
        ``max_frames``, until the work is done; then stop cleanly."""
        try:
            while not self.stop_event.wait(0.2):
                if self._done():
                    log.info("all frames processed; stopping")
                    break
        finally:
            self.stop()
        return self.exit_code

    def _done(self) -> bool:
        if not (self.exit_when_done or self.max_frames is not None):
            return False
        if self.pipeline.taking and not (self.exit_when_done and self.capture.finished()):
            return False
        return self.pipeline.drained() and self.delivery.pending() == 0

    def _join(self, name: str, timeout: float) -> None:
        for t in self._threads:
            if t.name == name:
                t.join(timeout)

    def stop(self) -> None:
        """Stop everything; decided verdicts are delivered to the outbox first, the outbox is kept."""
        if self._stopped:
            return
        self._stopped = True
        self.notifier.stopping("delivering decided verdicts to the outbox")
        self.stop_event.set()
        self.capture.join(5)
        self._join("inference", 10)
        self.pipeline.close_all("the agent is stopping")
        self.delivery.close()
        self._join("delivery", 30)
        self.cursors.flush()
        for name, st in self.capture.states.items():
            if st.state == "finished" and self.cursors.position(name) is not None:
                self.cursors.finish(name)
        self.link.stop(clean=True)
        if self.http is not None:
            self.http.stop()
        self.store.close()
        if self.verdict_log is not None:
            self.verdict_log.close()
        self.final_outbox_depth = self.outbox.depth()
        self.outbox.close()
        self.journal.close()
        self.state.close()
        log.info("agent stopped (%s)", self.metrics.snapshot())
