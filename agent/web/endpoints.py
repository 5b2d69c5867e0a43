"""What the local HTTP server answers (:class:`agent.web.server.HttpBackend`): health, readiness,
metrics and ``/v1/count``, from the parts of a running agent it is given."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Optional

from agent.inference.decision import decide, distribution_by_count
from agent.inference.preprocess import preprocess
from agent.intake.decode import DecodeError, decode_jpeg
from agent.web.server import CountError

if TYPE_CHECKING:
    from agent.inference.model_store import ModelStore
    from agent.intake.capture import CaptureManager
    from agent.metrics import AgentMetrics

__all__ = ["AgentEndpoints"]


class AgentEndpoints:
    """``health``: ``alive()`` says whether the agent's loops run (name -> alive) and ``running()``
    whether it is started and not stopping; ``readiness`` adds the model and the cameras;
    ``connected()``, ``outbox_depth()`` (cheap, for every ``/metrics`` scrape) and ``delivery()``
    (for ``/readyz``: outbox depth, refusals waiting and the broker's reason, bin events without an
    outcome yet: :func:`agent.delivery.status.delivery_state`) come from the delivery side."""

    def __init__(
        self,
        *,
        store: ModelStore,
        capture: CaptureManager,
        metrics: AgentMetrics,
        alive: Callable[[], dict[str, bool]],
        running: Callable[[], bool],
        connected: Callable[[], bool],
        outbox_depth: Callable[[], int],
        delivery: Callable[[], dict[str, Any]],
    ) -> None:
        self.store = store
        self.capture = capture
        self.metrics = metrics
        self.alive = alive
        self.running = running
        self.connected = connected
        self.outbox_depth = outbox_depth
        self.delivery = delivery

    def health(self) -> tuple[bool, dict[str, Any]]:
        alive = self.alive()
        ok = self.running() and all(alive.values())
        return ok, {"status": "ok" if ok else "failing", "threads": alive}

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        reasons = []
        model = self.store.current
        if model is None:
            reasons.append(
                "model not loaded" + (f" ({self.store.last_error})" if self.store.last_error else "")
            )
        for name, st in self.capture.states.items():
            if st.state not in ("live", "finished"):
                reasons.append(
                    f"camera {name} is {st.state}" + (f": {st.last_error}" if st.last_error else "")
                )
        ok = not reasons and self.running()
        return ok, {
            "ready": ok,
            "reasons": reasons,
            "model": model.describe() if model else None,
            "cameras": {n: s.state for n, s in self.capture.states.items()},
            "mqtt_connected": self.connected(),
            "delivery": self.delivery(),
        }

    def metrics_text(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        self.metrics.outbox_depth.set(self.outbox_depth())
        return generate_latest(self.metrics.registry), CONTENT_TYPE_LATEST

    def count_image(self, data: bytes, expected: Optional[int]) -> dict[str, Any]:
        try:
            img = decode_jpeg(data)
        except DecodeError as e:
            raise CountError(f"{e}: POST JPEG or PNG bytes as the body") from e
        if not self.store.ready:
            raise CountError("no model loaded yet", status=503)
        with self.store.use() as model:
            x = preprocess(img, model.card.input)[None]
            t0 = time.perf_counter()
            logits = model.backend.infer(x)
            ms = (time.perf_counter() - t0) * 1000
            d = decide(logits, model.card.output, expected, model.thresholds)
            out = d.to_dict()
            out["distribution"] = distribution_by_count(d, model.card.output.overflow)
            out.update(model=model.ref.model_dump(mode="json"), infer_ms=round(ms, 3))
            if expected is None:
                out.pop("verdict")
                out.pop("reason", None)
            return out
