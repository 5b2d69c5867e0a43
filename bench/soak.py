"""Soak: the agent on a looped replay for a set time, the broker restarted every minute and the
inbound ``bin`` topic under a steady stream of bin events; samples resources and delivery, plots.

    python bench/soak.py --minutes 30 --out soak-out
    python bench/soak.py --minutes 3 --out /tmp/soak --broker-restart-s 60 --events-per-s 1
    python bench/soak.py --model resnet18 --size 64 --mismatch-threshold 0.9 --match-threshold 0.95 ...

What runs (all on this machine, CPU only, kept small: 1 inference thread, batch 2):

- its own mosquitto (persistence on, so QoS 1 messages queued for a persistent session survive a
  restart) on a free port, stopped at a fixed period of ``--broker-restart-s`` s (60, 120, ...),
  left down ``--broker-down-s`` s and started again on the same port;
- a model bundle built once (``--model tiny``: the tests' GAP+Gemm ONNX at 32x32, varied verdicts,
  almost no CPU; ``resnet18``: an untrained torchvision ResNet18 at ``--size``, whose verdicts are
  all alike: pick thresholds that turn them into alerts) and synthetic bins (``binwatch data synth``,
  30% of the manifests wrong, so alerts happen);
- the agent as a subprocess (``python -m binwatch agent run -c OUT/agent.yaml``, log in
  ``OUT/agent.log``, state dir ``OUT/state``) with two cameras on the same folder: ``line`` (replay,
  looped, ``trigger: per_frame``, ``--replay-rate`` fps, manifests from ``manifest-mismatch/``) and
  ``station`` (replay, looped, ``trigger: event``, latest frame wins) that takes the bin events;
- a publisher thread: a ``bin`` event (``contract.messages.BinEvent``, unique ``event_id``, random
  bin and ``expected_qty``, ``frames: --event-frames``) every ``1/--events-per-s`` s on
  ``<root>/bin``, QoS 1, also while the broker is down (queued, sent after the reconnect); sent =
  acknowledged by the broker;
- a subscriber with a persistent session (MQTT 5, fixed client id, ``clean_start`` false, session
  expiry 1 h, QoS 1) on ``alert/mismatch`` (counted by ``seq``, duplicates and seq gaps too),
  ``bin/outcome`` (by ``event_id``), ``stats`` and ``status``.

Every ``--sample-s`` s: the agent's RSS, open fds (and by kind: socket, .db, ...), threads, the
outbox depth and ``verdicts`` from its latest ``stats`` (QoS 0: none arrive while the broker is
down) and the rows in its ``agent.db`` outbox (read-only SQLite, seen during outages too), alerts
decided (``stats.verdicts.mismatch``) vs received, events sent vs outcomes received.

At the end: events stop, the run waits up to ``--drain-s`` for the outbox to empty and every sent
event to have its outcome, stops the agent (SIGTERM: it drains and publishes its final stats), and
compares the alerts in the agent's own verdict log (``seq``) with those received. Writes
``OUT/soak.json`` (samples + summary) and ``OUT/soak.png`` and prints a summary.

Exit status 1 when an alert or an outcome was lost, the agent's RSS grew more than 10% after
warm-up (the first 20% of the run, at most 3 min; ``--warmup-s``), or the agent died; the files
are written either way. Open fds growing after warm-up are a warning (``summary.warnings``, with
the fds by kind at warm-up end and at the end), not a failure. Until the agent publishes
``bin/outcome`` (no ``bin_outcome`` in ``agent/``), outcomes are reported as missing, not counted
as lost; bin events acknowledged by the broker that never reached the agent (not in its verdict
log) count as lost either way.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the checkout's packages (and tests.*) before anything in bench/

SITE, DEVICE, LINE, STATION = "soak", "d1", "line", "station"


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="See the module docstring (bench/soak.py) for what runs and what is compared.",
    )
    ap.add_argument(
        "--minutes", type=float, default=30.0, help="run time, after the agent is online (default 30)"
    )
    ap.add_argument(
        "--out", type=Path, required=True, help="output folder: soak.json, soak.png, agent.log, state/"
    )
    ap.add_argument(
        "--broker-restart-s", type=float, default=60.0, help="seconds between broker restarts (default 60)"
    )
    ap.add_argument(
        "--broker-down-s", type=float, default=3.0, help="seconds the broker stays down (default 3)"
    )
    ap.add_argument("--events-per-s", type=float, default=1.0, help="bin events per second (default 1)")
    ap.add_argument("--event-frames", type=int, default=1, help="frames each bin event asks for (default 1)")
    ap.add_argument(
        "--sample-s", type=float, default=5.0, help="seconds between samples; also the agent's stats interval"
    )
    ap.add_argument(
        "--drain-s", type=float, default=60.0, help="most seconds to wait for the drain at the end"
    )
    ap.add_argument(
        "--warmup-s", type=float, help="warm-up for the RSS/fd comparison (default 20%% of the run, <= 180 s)"
    )
    ap.add_argument(
        "--replay-rate", type=float, default=4.0, help="frames/s of each replay camera (default 4)"
    )
    ap.add_argument("--bins", type=int, default=40, help="synthetic bins in the looped replay (default 40)")
    ap.add_argument(
        "--model", choices=("tiny", "resnet18"), default="tiny", help="bundle to build (default tiny)"
    )
    ap.add_argument("--bundle", type=Path, help="use this bundle folder instead of building one")
    ap.add_argument("--size", type=int, default=64, help="input size of the resnet18 bundle (default 64)")
    ap.add_argument(
        "--mismatch-threshold", type=float, help="decision.mismatch_threshold (default: the card's)"
    )
    ap.add_argument("--match-threshold", type=float, help="decision.match_threshold (default: the card's)")
    ap.add_argument("--batch", type=int, default=2, help="model.batch (default 2); model.threads is 1")
    return ap


def build_inputs(args: argparse.Namespace, work: Path) -> tuple[Path, Path]:
    """(bundle, bins): the model bundle and the synthetic replay folder, built once."""
    from training.data.synth import synthesize

    bins = work / "bins"
    synthesize(bins, args.bins, 5, seed=3, mismatch=0.3, size=(160, 120), progress=False, overwrite=True)
    if args.bundle is not None:
        return args.bundle, bins
    if args.model == "tiny":
        from tests.agent.bundles import make_tiny_bundle

        return make_tiny_bundle(work / "bundle", size=32), bins
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "bench_agent_pipeline", REPO / "bench" / "agent_pipeline.py"
    )
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.build_resnet_bundle(work / "bundle", args.size), bins


def agent_config(
    args: argparse.Namespace, broker: str, bundle: Path, bins: Path, state: Path
) -> dict[str, Any]:
    replay = {
        "source": str(bins),
        "kind": "replay",
        "replay_rate": args.replay_rate,
        "loop": True,
        "resume": False,
    }
    decision: dict[str, Any] = {"event_timeout_s": 10.0}
    if args.mismatch_threshold is not None:
        decision["mismatch_threshold"] = args.mismatch_threshold
    if args.match_threshold is not None:
        decision["match_threshold"] = args.match_threshold
    return {
        "agent": {"site": SITE, "device": DEVICE, "state_dir": str(state), "log_level": "WARNING"},
        "mqtt": {"broker": broker, "stats_interval_s": args.sample_s, "stop_drain_s": 30},
        "cameras": [
            {"name": LINE, **replay, "trigger": "per_frame"},
            {"name": STATION, **replay, "trigger": "event", "drop_frames": True},
        ],
        "model": {
            "bundle": str(bundle),
            "backend": "onnxruntime",
            "threads": 1,
            "inter_threads": 1,
            "batch": args.batch,
        },
        "decision": decision,
        "manifest": {"dir": str(bins / "manifest-mismatch"), "mqtt": False},
        "snapshots": {"enabled": True, "max_files": 200},
        "http": {"enabled": False},
    }


def start_agent(config: Path, log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    with log.open("ab") as f:
        return subprocess.Popen(
            [sys.executable, "-m", "binwatch", "agent", "run", "-c", str(config)],
            cwd=REPO,
            env=env,
            stdout=f,
            stderr=subprocess.STDOUT,
        )


def proc_stats(pid: int) -> dict[str, Any]:
    """RSS (MiB), open fds and threads of ``pid`` (psutil when installed, else /proc)."""
    try:
        import psutil

        p = psutil.Process(pid)
        return {"rss_mib": p.memory_info().rss / 2**20, "fds": p.num_fds(), "threads": p.num_threads()}
    except ImportError:
        pass
    except Exception:  # the process is gone
        return {"rss_mib": None, "fds": None, "threads": None}
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        return {
            "rss_mib": int(fields["VmRSS"].split()[0]) / 1024,
            "fds": len(os.listdir(f"/proc/{pid}/fd")),
            "threads": int(fields["Threads"]),
        }
    except (OSError, KeyError, ValueError):
        return {"rss_mib": None, "fds": None, "threads": None}


def fd_kinds(pid: int) -> dict[str, int]:
    """Open fds of ``pid`` by kind (socket, pipe, anon_inode, or the file's suffix / folder name):
    enough to tell what leaks when the count grows."""
    kinds: dict[str, int] = {}
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return kinds
    for name in names:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
        kind = target.split(":", 1)[0] if ":" in target else (Path(target).suffix or Path(target).parent.name)
        kinds[kind] = kinds.get(kind, 0) + 1
    return dict(sorted(kinds.items()))


def outbox_rows(state: Path) -> Optional[int]:
    """Rows in the agent's outbox, read from its SQLite file (read-only): unlike ``stats``, this
    is seen while the broker is down."""
    import sqlite3

    try:
        with contextlib.closing(
            sqlite3.connect(f"file:{state / 'agent.db'}?mode=ro", uri=True, timeout=1)
        ) as db:
            return int(db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
    except sqlite3.Error:
        return None


def wait_until(pred: Callable[[], Any], timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
    return True


def outcomes_supported() -> bool:
    """Whether the checkout's agent publishes ``bin/outcome`` (mentions ``bin_outcome`` anywhere)."""
    return any("bin_outcome" in p.read_text(errors="replace") for p in (REPO / "agent").rglob("*.py"))


class Soak:
    """One run: the broker, the agent process, the publisher, the subscriber, the samples."""

    def __init__(self, args: argparse.Namespace) -> None:
        from soak_mqtt import RestartingBroker

        from contract.topics import Topics

        self.args = args
        self.out: Path = args.out
        self.out.mkdir(parents=True, exist_ok=True)
        self.work = self.out / "work"
        self.state = self.out / "state"
        self.topics = Topics(SITE, DEVICE)
        self.broker = RestartingBroker(self.work / "broker", args.broker_restart_s, args.broker_down_s)
        self.samples: list[dict[str, Any]] = []
        self.agent: Optional[subprocess.Popen[bytes]] = None
        self.sub: Any = None
        self.pub: Any = None
        self.t0 = 0.0
        self.died = False

    def setup(self) -> None:
        import yaml
        from soak_mqtt import EventPublisher, SoakSubscriber

        from contract.abid import list_keys

        bundle, bins = build_inputs(self.args, self.work)
        self.broker.start()
        self.sub = SoakSubscriber(self.broker.url, self.topics)
        cfg = agent_config(self.args, self.broker.url, bundle, bins, self.state)
        (self.out / "agent.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
        self.agent = start_agent(self.out / "agent.yaml", self.out / "agent.log")
        online = wait_until(
            lambda: (self.sub.status or {}).get("state") == "online" or self.agent.poll() is not None, 120
        )
        if not online or self.agent.poll() is not None:
            raise RuntimeError(f"the agent did not come online (see {self.out / 'agent.log'})")
        self.pub = EventPublisher(
            self.broker.url,
            self.topics,
            STATION,
            list_keys(bins),
            self.args.events_per_s,
            self.args.event_frames,
        )

    def sample(self) -> dict[str, Any]:
        assert self.agent is not None
        st = self.sub.stats or {}
        s: dict[str, Any] = {"t": round(time.time() - self.t0, 2), **proc_stats(self.agent.pid)}
        s.update(
            outbox_depth=st.get("outbox_depth"),
            outbox_rows_db=outbox_rows(self.state),
            fd_kinds=fd_kinds(self.agent.pid),
            stats_age_s=round(time.time() - self.sub.stats_at, 1) if self.sub.stats_at else None,
            verdicts=st.get("verdicts"),
            alerts_decided=(st.get("verdicts") or {}).get("mismatch"),
            alerts_received=len(self.sub.received_seqs()),
            events_generated=self.pub.generated,
            events_sent=len(self.pub.sent),
            outcomes_received=len(self.sub.outcome_ids()),
            broker_up=self.broker.up,
        )
        self.samples.append(s)
        return s

    def describe(self, s: dict[str, Any]) -> str:
        return (
            f"rss {s['rss_mib'] or 0:.0f} MiB, alerts {s['alerts_received']}/{s['alerts_decided']}, "
            f"events {s['outcomes_received']}/{s['events_sent']}, "
            f"restarts {len(self.broker.restarts)}"
        )

    def run(self) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        assert self.agent is not None
        duration = self.args.minutes * 60
        self.t0 = time.time()
        self.pub.start()
        self.broker.start_restarts()
        cols = (
            TextColumn("soak"),
            BarColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.description}"),
        )
        with Progress(*cols, transient=False) as bar:
            task = bar.add_task("", total=duration)
            next_sample = 0.0
            while (elapsed := time.time() - self.t0) < duration:
                if self.agent.poll() is not None:
                    self.died = True
                    break
                if elapsed >= next_sample:
                    s = self.sample()
                    next_sample += self.args.sample_s
                    desc = self.describe(s)
                    bar.update(task, description=desc)
                bar.update(task, completed=min(elapsed, duration))
                time.sleep(0.5)
            bar.update(task, completed=duration)

    def finish(self) -> dict[str, Any]:
        """Stop events and restarts, wait for the drain, stop the agent, read its verdict log."""
        from soak_report import verdicts

        from agent.delivery.records import read_verdicts

        assert self.agent is not None
        self.pub.stop_producing()
        self.broker.stop_restarts()
        t_drain, back = time.monotonic(), time.time()
        wait_until(self.pub.idle, 30)
        supported = outcomes_supported() or bool(self.sub.outcome_ids())

        last = {"n": -1, "at": time.monotonic()}

        def drained() -> bool:
            fresh = self.sub.stats_at > back and (self.sub.stats or {}).get("outbox_depth") == 0
            n = len(self.sub.outcome_ids())
            if n != last["n"]:
                last.update(n=n, at=time.monotonic())
            settled = time.monotonic() - last["at"] > 15  # events that never reached the agent
            return fresh and (not supported or settled or set(self.pub.sent) <= self.sub.outcome_ids())

        wait_until(drained, self.args.drain_s)
        drain_s = time.monotonic() - t_drain
        depth_end = (self.sub.stats or {}).get("outbox_depth")
        self.sample()
        rc = self.agent.poll()
        if rc is None:
            self.agent.send_signal(signal.SIGTERM)
            try:
                rc = self.agent.wait(timeout=90)
            except subprocess.TimeoutExpired:
                self.agent.kill()
                rc = self.agent.wait()
        logs = [self.state / "verdicts.jsonl.1", self.state / "verdicts.jsonl"]
        v = verdicts([r for p in logs if p.exists() for r in read_verdicts(p)], STATION)
        wait_until(lambda: v["alert_seqs"] <= self.sub.received_seqs(), 20)
        time.sleep(1.0)  # the final stats (QoS 0) of the clean stop
        return {"rc": rc, "supported": supported, "drain_s": drain_s, "depth_end": depth_end, **v}

    def summary(self, end: dict[str, Any]) -> dict[str, Any]:
        from soak_report import failures, resources, warmup_s, warnings

        duration = self.samples[-1]["t"] if self.samples else 0.0
        recv, sent = self.sub.received_seqs(), set(self.pub.sent)
        outcomes = self.sub.outcome_ids()
        s: dict[str, Any] = {
            "duration_s": duration,
            "samples": len(self.samples),
            "broker_restarts": len(self.broker.restarts),
            "resources": resources(self.samples, warmup_s(duration, self.args.warmup_s)),
            "alerts": {
                "decided": len(end["alert_seqs"]),
                "stats_mismatch": ((self.sub.stats or {}).get("verdicts") or {}).get("mismatch"),
                "received": len(recv),
                "duplicates": self.sub.alert_messages - len(recv),
                "lost": len(end["alert_seqs"] - recv),
                "seq_gaps": self.sub.seq_gaps(),
            },
            "events": {
                "generated": self.pub.generated,
                "sent": len(sent),
                "reached_agent": len(sent & end["event_ids"]),
                "never_reached_agent": len(sent - end["event_ids"]),
                "outcomes_supported": end["supported"],
                "outcomes": len(sent & outcomes),
                "outcome_messages": self.sub.outcome_messages,
                "outcome_kinds": dict(self.sub.outcome_kinds),
                "failed_reasons": dict(self.sub.failed_reasons),
                "lost": len(sent - outcomes) if end["supported"] else None,
                **self.missing_events(end["event_ids"], outcomes),
            },
            "agent": {"exit_code": end["rc"], "died": self.died},
            "outbox_depth_end": end["depth_end"],
            "drain_s": round(end["drain_s"], 1),
            "subscriber_connects": self.sub.connects,
            "publisher_connects": self.pub.connects,
        }
        s["failures"] = failures(s)
        s["warnings"] = warnings(s)
        return s

    def missing_events(self, reached: set[str], outcomes: set[str]) -> dict[str, Any]:
        """The first 100 events (id, when the broker acknowledged it, s since the start) that never
        reached the agent, and those without an outcome: to set beside the broker restarts."""

        def listing(ids: set[str]) -> list[list[Any]]:
            return [[e, round(self.pub.sent[e] - self.t0, 2)] for e in sorted(ids)[:100]]

        sent = set(self.pub.sent)
        return {
            "never_reached_agent_ids": listing(sent - reached),
            "without_outcome_ids": listing(sent - outcomes),
        }

    def close(self) -> None:
        for part in (self.pub, self.sub):
            if part is not None:
                part.close()
        if self.agent is not None and self.agent.poll() is None:
            self.agent.kill()
            self.agent.wait()
        self.broker.stop()


def main(argv: Optional[list[str]] = None) -> int:
    from soak_report import plot, print_summary

    args = _parser().parse_args(argv)
    soak = Soak(args)
    try:
        soak.setup()
        soak.run()
        end = soak.finish()
        summary = soak.summary(end)
    finally:
        soak.close()
    restarts = [r["down"] - soak.t0 for r in soak.broker.restarts]
    doc = {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "summary": summary,
        "restarts_s": restarts,
        "samples": soak.samples,
    }
    (args.out / "soak.json").write_text(json.dumps(doc, indent=1, default=str))
    title = (
        f"binwatch soak: {summary['duration_s'] / 60:.1f} min, restart every {args.broker_restart_s:.0f} s"
    )
    plot(soak.samples, restarts, args.out / "soak.png", title)
    print_summary(summary)
    print(f"  wrote {args.out / 'soak.json'}, {args.out / 'soak.png'}")
    return 1 if summary["failures"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
