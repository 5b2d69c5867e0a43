"""Fleet rollout: ``binwatch deploy push`` against N simulated devices on one real mosquitto.

Each device is the agent's real updater (``agent.update.updater.Updater``) with its real model store
and bundle checks (sha256s, ed25519 signature against its trust list) around a fake backend (no
inference: the bench measures the rollout, not the model); the devices live in this process and
share one MQTT connection for their messages. Bundles are served by ``binwatch deploy serve``.

Two runs, each with a fresh fleet:

1. every device healthy: the time from ``deploy push`` (canary 1, then 10%, 50%, 100%) until the
   whole fleet is active on the new version, against the time to transfer the bundle to each
   device once (the same HTTP server, one fetch per device, one after another) measured in the
   same run;
2. ``--fail-fraction`` of the devices have a download limit smaller than the bundle, so they refuse
   it: the rollout must halt at the failure threshold (``--max-failures``) and roll back the
   devices it moved.

    python bench/fleet.py [--devices 100] [--fail-fraction 0.1] [--max-failures 5%] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Optional

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


class SimDevice:
    """One device: the real updater and model store with a fake backend; reports on MQTT."""

    def __init__(
        self, name: str, work: Path, trusted: Path, publish: Any, first: Path, max_bytes: int
    ) -> None:
        from agent.inference.backends.fake import FakeBackend
        from agent.inference.bundle_checks import BundleChecks
        from agent.inference.model_store import ModelStore
        from agent.update.trial import UpdateState
        from agent.update.updater import TrialPolicy, Updater

        self.name = name
        self.rollout_id: Optional[str] = None
        self._publish = publish
        self.store = ModelStore(
            FakeBackend,
            models_dir=work / "models",
            warmup=0,
            on_state=self,
            checks=BundleChecks(trusted_keys=[trusted]),
        )
        self.store.load(first)
        self.updater = Updater(
            store=self.store,
            report=self,
            staging=work / "updates",
            max_bytes=max_bytes,
            timeout_s=30,
            keep_versions=2,
            retry_min_s=0.5,
            retry_max_s=2.0,
            stop_event=threading.Event(),
            state=UpdateState(work / "updates" / "state.json"),
            trial=TrialPolicy(seconds=0.0, healthy=lambda: True, errors=lambda: 0),
        )
        self.thread = threading.Thread(target=self.updater.loop, name=f"update-{name}", daemon=True)
        self.thread.start()

    def __call__(self, version: int, state: str, detail: str) -> None:  # the model/reported seam
        from contract.base import utcnow
        from contract.messages import ModelReported

        msg = ModelReported(
            version=version, state=state, detail=detail[:4000], ts=utcnow(), rollout_id=self.rollout_id
        )  # type: ignore[arg-type]
        self._publish(f"binwatch/v1/s1/{self.name}/model/reported", msg.to_json_bytes())

    @property
    def version(self) -> int:
        return self.store.current.card.version if self.store.current else 0

    def stop(self) -> None:
        self.updater.stop_event.set()
        self.thread.join(5)


class Fleet:
    """N devices behind one MQTT connection that routes each desired state to its device."""

    def __init__(
        self,
        broker_port: int,
        work: Path,
        names: list[str],
        trusted: Path,
        first: Path,
        limits: dict[str, int],
    ) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"fleet-{work.name}", protocol=mqtt.MQTTv5
        )
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", broker_port)
        self.client.loop_start()
        self.devices = {
            n: SimDevice(
                n,
                work / n,
                trusted,
                lambda t, p: self.client.publish(t, p, qos=1, retain=True),
                first,
                limits[n],
            )
            for n in names
        }
        self.client.subscribe("binwatch/v1/s1/+/model/desired", qos=1)

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        device = self.devices.get(msg.topic.split("/")[3])
        if device is not None:
            device.updater.on_desired("device", msg.topic, msg.payload)

    def versions(self) -> dict[int, int]:
        out: dict[int, int] = {}
        for d in self.devices.values():
            out[d.version] = out.get(d.version, 0) + 1
        return out

    def close(self) -> None:
        for d in self.devices.values():
            d.stop()
        self.client.loop_stop()
        self.client.disconnect()


def _bundles(work: Path, filler_mb: float) -> dict[str, Path]:
    import tarfile

    from contract.bundle import build_manifest, write_manifest
    from contract.signing import generate_keypair, sign_bundle
    from tests.agent.bundles import make_tiny_bundle

    keys = {}
    for name in ("fleet", "other"):
        private, public = generate_keypair()
        (work / f"{name}.key").write_bytes(private)
        (work / f"{name}.pub").write_bytes(public)
        keys[name] = work / f"{name}.pub"
    out = dict(keys)
    for version in (1, 2):
        folder = make_tiny_bundle(work / f"v{version}", version=version, size=224)
        # stand-in for model weights, so the transfer is the size of a real bundle (listed, signed)
        (folder / "weights.bin").write_bytes(os.urandom(int(filler_mb * 1e6)))
        write_manifest(folder, build_manifest(folder, model_name="tiny-count", model_version=version))
        sign_bundle(folder, work / "fleet.key")
        tar = work / "www" / f"v{version}.tar"
        tar.parent.mkdir(exist_ok=True)
        with tarfile.open(tar, "w") as t:
            for p in sorted(folder.rglob("*")):
                t.add(p, arcname=str(p.relative_to(folder)), recursive=False)
        out[f"v{version}"], out[f"v{version}.tar"] = folder, tar
    return out


def _serve(www: Path) -> tuple[subprocess.Popen, str]:
    from tests.broker import free_port

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "binwatch", "deploy", "serve", str(www), "--listen", f"127.0.0.1:{port}"],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    import urllib.request

    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{url}/v1.tar", timeout=1).close()
            return proc, url
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("binwatch deploy serve did not come up")


def seed_desired(broker: str, names: list[str], url: str, tar: Path) -> None:
    """Retained desired v1 for each device (as an earlier rollout would have left it)."""
    import paho.mqtt.publish as publish

    from contract.files import sha256_file
    from contract.messages import ModelDesired
    from contract.signing import signature_of

    d = ModelDesired(
        version=1,
        bundle_url=url,
        sha256=sha256_file(tar),
        signature=signature_of(tar.parent.parent / "v1") or "",
        rollout_id="seed",
    )
    host, port = broker.removeprefix("mqtt://").split(":")
    msgs = [(f"binwatch/v1/s1/{n}/model/desired", d.to_json_bytes(), 1, True) for n in names]
    publish.multiple(msgs, hostname=host, port=int(port))


def transfer_baseline(url: str, tar: Path, n: int, work: Path) -> float:
    """Seconds to fetch the bundle once per device, one after another (the agent's fetch code)."""
    from agent.update.fetch import fetch_bundle
    from contract.files import sha256_file

    sha = sha256_file(tar)
    t0 = time.perf_counter()
    for i in range(n):
        fetch_bundle(url, work / f"xfer-{i}", sha256=sha, max_bytes=64 << 20)
    return time.perf_counter() - t0


def push(
    bundle: Path, url: str, broker: str, names: list[str], state: Path, max_failures: str
) -> tuple[int, float, str]:
    cmd = [
        sys.executable, "-m", "binwatch", "deploy", "push", str(bundle), "--site", "s1",
        "--devices", ",".join(names), "--bundle-url", url, "--canary", "1", "--stages", "10%,50%,100%",
        "--max-failures", max_failures, "--stage-timeout", "120", "--broker", broker, "--state", str(state),
    ]  # fmt: skip
    t0 = time.perf_counter()
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    return out.returncode, time.perf_counter() - t0, (out.stdout + out.stderr)[-2000:]


def run(args: argparse.Namespace) -> dict[str, Any]:
    from tests.broker import Mosquitto

    work = Path(tempfile.mkdtemp(prefix="bench-fleet-"))
    b = _bundles(work, args.bundle_mb)
    broker = Mosquitto(work / "broker")
    broker.start()
    server, base = _serve(work / "www")
    names = [f"a{i:03d}" for i in range(args.devices)]
    result: dict[str, Any] = {"devices": args.devices, "bundle_bytes": b["v2.tar"].stat().st_size}
    try:
        result["transfer_each_once_s"] = round(
            transfer_baseline(f"{base}/v2.tar", b["v2.tar"], args.devices, work), 3
        )
        roomy = {n: 64 << 20 for n in names}
        fleet = Fleet(broker.port, work / "fleet-a", names, b["fleet"], b["v1"], roomy)
        rc, secs, tail = push(b["v2.tar"], f"{base}/v2.tar", broker.url, names, work / "a.json", "0")
        result["healthy"] = {"exit": rc, "push_to_all_active_s": round(secs, 3), "versions": fleet.versions()}
        result["healthy"]["ratio_to_transfer"] = round(secs / max(result["transfer_each_once_s"], 1e-9), 2)
        if rc != 0:
            result["healthy"]["log"] = tail
        fleet.close()
        names = [f"b{i:03d}" for i in range(args.devices)]  # a fresh fleet: no retained state of run 1
        step = max(1, round(1 / args.fail_fraction))
        bad = set(
            names[step // 2 :: step][: round(args.devices * args.fail_fraction)]
        )  # spread, not the canary
        limits = {n: 1024 if n in bad else 64 << 20 for n in names}  # these refuse: bundle over their limit
        fleet = Fleet(broker.port, work / "fleet-b", names, b["fleet"], b["v1"], limits)
        seed_desired(broker.url, names, f"{base}/v1.tar", b["v1.tar"])  # what a rollback goes back to
        rc, secs, tail = push(
            b["v2.tar"], f"{base}/v2.tar", broker.url, names, work / "b.json", args.max_failures
        )
        time.sleep(2)  # let rolled-back devices settle
        state = json.loads((work / "b.json").read_text())
        result["failing"] = {
            "exit": rc,
            "seconds": round(secs, 3),
            "refusing_devices": len(bad),
            "max_failures": args.max_failures,
            "state": {k: state.get(k) for k in ("status", "stage")},
            "versions_after": fleet.versions(),
            "log": tail.splitlines()[-6:],
        }
        fleet.close()
    finally:
        server.terminate()
        server.wait(10)
        broker.stop()
    return result


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", type=int, default=100, help="simulated devices (default 100)")
    ap.add_argument("--fail-fraction", type=float, default=0.1, help="devices that refuse in run 2")
    ap.add_argument("--max-failures", default="5%", help="the push's failure threshold in run 2")
    ap.add_argument("--bundle-mb", type=float, default=2.0, help="bundle size (weights stand-in), MB")
    ap.add_argument("--json", action="store_true", help="print JSON")
    args = ap.parse_args(argv)
    result = run(args)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    h, f = result["healthy"], result["failing"]
    print(f"{result['devices']} devices, bundle {result['bundle_bytes']} bytes")
    print(f"  transfer to each device once: {result['transfer_each_once_s']:.2f} s")
    print(
        f"  push to the whole fleet active: {h['push_to_all_active_s']:.2f} s "
        f"({h['ratio_to_transfer']:.2f}x the transfer time), exit {h['exit']}, versions {h['versions']}"
    )
    print(
        f"  with {f['refusing_devices']} refusing devices and --max-failures {f['max_failures']}: exit "
        f"{f['exit']} after {f['seconds']:.2f} s, rollout {f['state']}, versions after {f['versions_after']}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
