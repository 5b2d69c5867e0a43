"""What the local HTTP server asks of a running agent: health, readiness, metrics and
``/v1/count`` (mixed into :class:`agent.runtime.Runtime`)."""

from __future__ import annotations

import time
from typing import Any, Optional

from agent.inference.decision import decide
from agent.inference.preprocess import DecodeError, decode_jpeg, preprocess
from agent.web.server import CountError

__all__ = ["HttpEndpoints"]


class HttpEndpoints:
    """Endpoint logic; expects the runtime's ``store``, ``capture``, ``link``, ``metrics``,
    ``outbox``, ``delivery``, ``stop_event``, ``_threads`` and ``_started``."""

    def health(self) -> tuple[bool, dict[str, Any]]:
        alive = {t.name: t.is_alive() for t in self._threads}
        ok = self._started and not self.stop_event.is_set() and all(alive.values())
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
        ok = not reasons and self._started and not self.stop_event.is_set()
        return ok, {
            "ready": ok,
            "reasons": reasons,
            "model": model.describe() if model else None,
            "cameras": {n: s.state for n, s in self.capture.states.items()},
            "mqtt_connected": self.link.connected,
        }

    def metrics_text(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        self.metrics.outbox_depth.set(self.outbox.depth())
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
            out["distribution"] = self.delivery.distribution(d, model.card.output.overflow)
            out.update(model=model.ref.model_dump(mode="json"), infer_ms=round(ms, 3))
            if expected is None:
                out.pop("verdict")
                out.pop("reason", None)
            return out
