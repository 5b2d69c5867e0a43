"""What the updater remembers across restarts (``<state_dir>/updates/state.json``): the bundle it
installed, the one before it, the open trial of a new model, and the desired states it refused.

The trial makes a crash loop recoverable: every start of the agent while a trial is open counts;
after ``max_starts`` starts (the process died again and again right after a switch) the next start
goes back to the previous bundle instead (:meth:`UpdateState.boot`). A trial that survives its
window without a failed health check is confirmed and closed.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

from contract.files import write_atomic

log = logging.getLogger(__name__)

__all__ = ["Installed", "Trial", "UpdateState"]


@dataclass(frozen=True)
class Installed:
    source: str  # the bundle file or folder the model store loaded
    version: int
    rollout_id: Optional[str] = None

    @property
    def refusal(self) -> tuple[str, Optional[str]]:
        """``(sha256, rollout id)`` as :attr:`UpdateState.refused` lists it: a downloaded bundle is
        ``<staging>/<sha256>.tar``."""
        return Path(self.source).stem, self.rollout_id


@dataclass(frozen=True)
class Trial:
    version: int
    until: float  # wall clock (epoch seconds): the end of the trial window
    starts: int = 0  # agent starts since the switch


class UpdateState:
    """The file and its three parts; every change is written atomically before it returns."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.current: Optional[Installed] = None
        self.previous: Optional[Installed] = None
        self.trial: Optional[Trial] = None
        self.refused: list[tuple[str, Optional[str]]] = []  # (sha256, rollout id) not to retry
        self._load()

    def _load(self) -> None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            self.current = Installed(**data["current"]) if data.get("current") else None
            self.previous = Installed(**data["previous"]) if data.get("previous") else None
            self.trial = Trial(**data["trial"]) if data.get("trial") else None
            self.refused = [(str(s), r) for s, r in data.get("refused", [])]
        except FileNotFoundError:
            return
        except (OSError, ValueError, TypeError, KeyError) as e:
            log.error("%s is unreadable (%s): starting from the configured bundle", self.path, e)

    def _save(self) -> None:
        data: dict[str, Any] = {
            "current": asdict(self.current) if self.current else None,
            "previous": asdict(self.previous) if self.previous else None,
            "trial": asdict(self.trial) if self.trial else None,
            "refused": [list(r) for r in self.refused[-50:]],
        }
        write_atomic(self.path, json.dumps(data, indent=1) + "\n")

    # -- changes -----------------------------------------------------------------------------------
    def switched(self, new: Installed, previous: Optional[Installed], trial_s: float) -> None:
        self.current, self.previous = new, previous
        self.trial = Trial(version=new.version, until=time.time() + trial_s) if previous else None
        self._save()

    def confirm(self) -> None:
        self.trial = None
        self._save()

    def rolled_back(self, refused: tuple[str, Optional[str]]) -> None:
        """The previous bundle is running again; the one that failed is not tried again."""
        self.current, self.previous, self.trial = self.previous, None, None
        self.refuse(refused)

    def refuse(self, refused: tuple[str, Optional[str]]) -> None:
        if refused not in self.refused:
            self.refused.append(refused)
        self._save()

    # -- start -------------------------------------------------------------------------------------
    def boot(
        self, configured: Optional[Path], max_starts: int
    ) -> tuple[Optional[Path], Optional[tuple[int, str, Optional[str]]]]:
        """The bundle to load at start, and ``(failed version, reason, its rollout id)`` when that
        is a rollback of a crash loop."""
        if self.trial is not None and self.current is not None:
            starts = self.trial.starts + 1
            if starts >= max_starts and self.previous is not None:
                failed = self.current
                reason = (
                    f"crash loop: the agent started {starts} times within the trial window of version "
                    f"{failed.version}; going back to version {self.previous.version}"
                )
                self.rolled_back(failed.refusal)
                return self._existing(configured), (failed.version, reason, failed.rollout_id)
            self.trial = Trial(self.trial.version, self.trial.until, starts)
            self._save()
        return self._existing(configured), None

    def _existing(self, configured: Optional[Path]) -> Optional[Path]:
        if self.current is not None and Path(self.current.source).exists():
            return Path(self.current.source)
        return configured
