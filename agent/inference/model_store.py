"""Model bundles on the device: load, verify, warm up, and swap without stopping capture.

- ``load(bundle)`` reads ``card.json``, runs the checks of :mod:`agent.inference.bundle_checks`
  (every sha256 of ``MANIFEST.json``, the signature against the trust list), builds the backend,
  warms it up, checks the golden set, and only then makes it the current model. The old model keeps
  serving until that moment; a failed load leaves it running.
- A ``.tar`` bundle is unpacked (safely) under ``<state_dir>/models/``.
- ``watch`` polls the bundle path and reloads when its card or manifest changes.
- Users of the model take it with ``with store.use() as m:``; a replaced model is closed when its
  last user is done.
"""

from __future__ import annotations

import logging
import os
import shutil
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from agent.inference.backends.base import Backend, BackendError
from agent.inference.bundle_checks import BundleChecks
from agent.inference.decision import Thresholds, resolve_thresholds
from contract.base import ContractError
from contract.card import ModelCard, load_card
from contract.files import UnsafeArchiveError, safe_extract_tar, sha256_file
from contract.messages import ModelRef

log = logging.getLogger(__name__)

__all__ = ["LoadedModel", "ModelLoadError", "ModelStore", "unpack_bundle"]


class ModelLoadError(RuntimeError):
    """A bundle that could not be loaded; the current model (if any) keeps serving."""


@dataclass
class LoadedModel:
    card: ModelCard
    backend: Backend
    bundle: Path
    thresholds: Thresholds
    loaded_at: float = field(default_factory=time.time)
    users: int = 0
    retired: bool = False
    source: Optional[Path] = None  # what load() was given (a folder, or the .tar it unpacked)

    @property
    def ref(self) -> ModelRef:
        b = self.backend
        backend_name = b.name if b.name != "onnxruntime" else f"onnxruntime-{b.device}"
        return ModelRef(
            name=self.card.name,
            version=self.card.version,
            sha256=b.model_sha256 or "0" * 64,
            precision=b.precision,  # type: ignore[arg-type]
            backend=backend_name,
        )

    def describe(self) -> dict[str, Any]:
        d = {"name": self.card.name, "version": self.card.version, "bundle": str(self.bundle)}
        d.update(self.backend.describe())
        return d


def unpack_bundle(tar_path: Path, models_dir: Path) -> Path:
    """Extract a bundle ``.tar`` under ``models_dir/<sha256[:16]>`` (no absolute paths, no ``..``,
    no links); reuses an earlier extraction of the same file."""
    digest = sha256_file(tar_path)[:16]
    dest = models_dir / digest
    if (dest / "card.json").is_file():
        return dest
    tmp = models_dir / f".{digest}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        try:
            safe_extract_tar(tar_path, tmp)
        except UnsafeArchiveError as e:
            raise ModelLoadError(f"unsafe entry in bundle archive: {e}") from e
        roots = [p for p in tmp.iterdir()]
        inner = (
            roots[0] if len(roots) == 1 and roots[0].is_dir() and not (tmp / "card.json").exists() else tmp
        )
        if not (inner / "card.json").is_file():
            raise ModelLoadError(f"{tar_path}: no card.json in the archive")
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(inner, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


class ModelStore:
    """Holds the current model and swaps in new ones."""

    def __init__(
        self,
        backend_factory: Callable[[], Backend],
        *,
        models_dir: Path,
        verify: bool = True,
        warmup: int = 2,
        mismatch_threshold: Optional[float] = None,
        match_threshold: Optional[float] = None,
        on_state: Optional[Callable[[int, str, str], None]] = None,
        checks: Optional[BundleChecks] = None,
    ) -> None:
        self.backend_factory = backend_factory
        self.models_dir = Path(models_dir)
        self.verify = verify
        self.warmup_runs = warmup
        self.mismatch_threshold = mismatch_threshold
        self.match_threshold = match_threshold
        self.on_state = on_state
        self.checks = checks or BundleChecks(verify=verify)
        self._current: Optional[LoadedModel] = None
        self._cond = threading.Condition()
        self._load_lock = threading.Lock()
        self.loads = 0
        self.failed_loads = 0
        self.last_error: Optional[str] = None
        self._watch_thread: Optional[threading.Thread] = None

    # -- access --------------------------------------------------------------------------------
    @property
    def current(self) -> Optional[LoadedModel]:
        return self._current

    @property
    def ready(self) -> bool:
        return self._current is not None

    @contextmanager
    def use(self) -> Iterator[LoadedModel]:
        with self._cond:
            model = self._current
            if model is None:
                raise ModelLoadError("no model loaded")
            model.users += 1
        try:
            yield model
        finally:
            with self._cond:
                model.users -= 1
                if model.retired and model.users == 0:
                    self._close(model)
                self._cond.notify_all()

    @staticmethod
    def _close(model: LoadedModel) -> None:
        try:
            model.backend.close()
        except Exception as e:
            log.warning("closing the old model's backend failed: %s", e)

    def _report(self, version: int, state: str, detail: str = "") -> None:
        if self.on_state is not None:
            try:
                self.on_state(version, state, detail)
            except Exception as e:
                log.warning("model state report failed: %s", e)

    # -- loading -------------------------------------------------------------------------------
    def load(
        self,
        bundle: Path | str,
        *,
        expect_version: Optional[int] = None,
        expect_signature: Optional[str] = None,
    ) -> LoadedModel:
        """Load ``bundle`` and make it current once warm. Raises :class:`ModelLoadError`; on
        failure the previous model (if any) is still current."""
        with self._load_lock:
            return self._load(Path(bundle), expect_version, expect_signature)

    def _load(
        self, bundle: Path, expect_version: Optional[int] = None, expect_signature: Optional[str] = None
    ) -> LoadedModel:
        t0 = time.perf_counter()
        version = 0
        source = bundle
        try:
            if not bundle.exists():
                raise ModelLoadError(f"model bundle {bundle} not found")
            if bundle.is_file() and (bundle.suffix == ".tar" or tarfile.is_tarfile(bundle)):
                bundle = unpack_bundle(bundle, self.models_dir)
            try:
                card = load_card(bundle)
            except ContractError as e:
                raise ModelLoadError(str(e)) from e
            version = card.version if expect_version is None else expect_version  # what is reported
            if card.version != version:
                raise ModelLoadError(
                    f"bundle {source} holds model version {card.version}, the desired state says {version}"
                )
            self._report(version, "verifying")
            problems = self.checks.before_load(bundle, expect_signature)
            if problems:
                raise ModelLoadError(f"bundle {bundle} failed verification: " + "; ".join(problems[:5]))
            backend = self.backend_factory()
            self._report(version, "building" if backend.name == "tensorrt" else "warming")
            try:
                backend.load(bundle, card)
                self._report(version, "warming")
                if self.warmup_runs:
                    backend.warmup(self.warmup_runs)
                problems = self.checks.after_warmup(bundle, card, backend)
                if problems:
                    raise ModelLoadError(f"bundle {bundle} failed its check: " + "; ".join(problems[:5]))
            except ModelLoadError:
                backend.close()
                raise
            except BackendError as e:
                backend.close()
                raise ModelLoadError(str(e)) from e
            except Exception as e:  # a runtime's own exception types
                backend.close()
                raise ModelLoadError(f"{backend.name} failed on {bundle}: {type(e).__name__}: {e}") from e
            thresholds = resolve_thresholds(card.decision, self.mismatch_threshold, self.match_threshold)
        except ModelLoadError as e:
            self.failed_loads += 1
            self.last_error = str(e)
            self._report(version, "failed", str(e)[:4000])
            if self._current is not None:
                log.error(
                    "model load failed, keeping %s v%d: %s",
                    self._current.card.name,
                    self._current.card.version,
                    e,
                )
            else:
                log.error("model load failed: %s", e)
            raise
        new = LoadedModel(card=card, backend=backend, bundle=bundle, thresholds=thresholds, source=source)
        with self._cond:
            old, self._current = self._current, new
            if old is not None:
                old.retired = True
                if old.users == 0:
                    self._close(old)
        self.loads += 1
        self.last_error = None
        self._report(version, "active", f"{backend.name} {backend.precision}")
        log.info(
            "model %s v%d active (%s %s, thresholds mismatch<%.3f match>=%.3f from %s) in %.1fs",
            card.name,
            card.version,
            backend.name,
            backend.precision,
            thresholds.mismatch,
            thresholds.match,
            thresholds.source,
            time.perf_counter() - t0,
        )
        return new

    def set(self, model: LoadedModel) -> None:
        """Install an already-loaded model (tests, embedding)."""
        with self._cond:
            self._current = model

    # -- watching ------------------------------------------------------------------------------
    @staticmethod
    def _fingerprint(path: Path) -> Optional[tuple]:
        try:
            if path.is_dir():
                parts = []
                for name in ("card.json", "MANIFEST.json"):
                    p = path / name
                    if p.exists():
                        st = p.stat()
                        parts.append((name, st.st_mtime_ns, st.st_size))
                return tuple(parts)
            st = path.stat()
            return (st.st_mtime_ns, st.st_size)
        except OSError:
            return None

    def watch(self, path: Path, stop: threading.Event, interval_s: float = 5.0) -> threading.Thread:
        """Reload ``path`` whenever it changes (and has settled for one interval)."""
        path = Path(path)

        def loop() -> None:
            seen = self._fingerprint(path)
            pending: Optional[tuple] = None
            while not stop.wait(interval_s):
                fp = self._fingerprint(path)
                if fp is None or fp == seen:
                    pending = None
                    continue
                if fp != pending:  # changed: wait one more interval for the copy to finish
                    pending = fp
                    continue
                log.info("model bundle %s changed; reloading", path)
                try:
                    self.load(path)
                except ModelLoadError:
                    pass  # logged and reported; the old model serves
                seen, pending = fp, None

        t = threading.Thread(target=loop, name="model-watch", daemon=True)
        t.start()
        self._watch_thread = t
        return t

    def close(self) -> None:
        with self._cond:
            model, self._current = self._current, None
            if model is not None:
                deadline = time.monotonic() + 5.0
                while model.users and time.monotonic() < deadline:
                    self._cond.wait(0.1)
                self._close(model)
