"""``binwatch agent``: run the edge agent, check its config.

Module level imports only typer, rich and the stdlib; the runtime (numpy, OpenCV, paho, ONNX
Runtime) is imported inside the commands.
"""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console

from binwatch.cliutil import fail, setup_logging

app = typer.Typer(
    help="Run the edge agent: camera frames -> counts -> mismatch alerts over MQTT.",
    no_args_is_help=True,
)

__all__ = ["app", "build_overrides"]

_err = Console(stderr=True)
log = logging.getLogger(__name__)


def build_overrides(
    *,
    model: Optional[Path] = None,
    replay: Optional[Path] = None,
    manifest: Optional[Path] = None,
    broker: Optional[str] = None,
    site: Optional[str] = None,
    device: Optional[str] = None,
    state_dir: Optional[Path] = None,
    backend: Optional[str] = None,
    precision: Optional[str] = None,
    threads: Optional[int] = None,
    batch: Optional[int] = None,
    http_port: Optional[int] = None,
    no_http: bool = False,
    replay_rate: Optional[float] = None,
    loop: bool = False,
    results: bool = False,
    log_level: Optional[str] = None,
) -> dict[str, Any]:
    """Command-line flags as a nested dict that overrides the config file (docs/agent.md, "Command line")."""
    o: dict[str, dict[str, Any]] = {}

    def put(section: str, key: str, value: Any) -> None:
        if value is not None:
            o.setdefault(section, {})[key] = value

    put("model", "bundle", str(model) if model else None)
    put("model", "backend", backend)
    put("model", "precision", precision)
    put("model", "threads", threads)
    put("model", "batch", batch)
    if manifest is not None:
        key = (
            "csv"
            if manifest.suffix.lower() == ".csv" or (manifest.is_file() and not manifest.is_dir())
            else "dir"
        )
        put("manifest", key, str(manifest))
    put("mqtt", "broker", broker)
    if results:
        put("mqtt", "publish_results", True)
    put("agent", "site", site)
    put("agent", "device", device)
    put("agent", "state_dir", str(state_dir) if state_dir else None)
    put("agent", "log_level", log_level.upper() if log_level else None)
    put("http", "port", http_port)
    if no_http:
        put("http", "enabled", False)
    out: dict[str, Any] = dict(o)
    if replay is not None:
        cam: dict[str, Any] = {"name": "replay", "source": str(replay), "kind": "replay", "loop": loop}
        if replay_rate is not None:
            cam["replay_rate"] = replay_rate
        out["cameras"] = [cam]
    return out


@app.command("run")
def run_cmd(
    config: Optional[Path] = typer.Option(
        None, "--config", "-c", help="Agent config YAML (see agent/configs/)."
    ),
    model: Optional[Path] = typer.Option(None, "--model", "-m", help="Model bundle folder or .tar."),
    replay: Optional[Path] = typer.Option(
        None, "--replay", help="Replay an ABID-layout folder as the only camera (bin id = image key)."
    ),
    manifest: Optional[Path] = typer.Option(
        None,
        "--manifest",
        help="Expected quantities: a folder of <bin_id>.json or a CSV bin_id,expected_qty.",
    ),
    broker: Optional[str] = typer.Option(None, "--broker", help="mqtt://host:port or mqtts://host:port"),
    site: Optional[str] = typer.Option(None, "--site", help="Site id."),
    device: Optional[str] = typer.Option(None, "--device", help="Device id (default: host name)."),
    state_dir: Optional[Path] = typer.Option(
        None, "--state-dir", help="Outbox, seq/session, snapshots, replay position, engine cache."
    ),
    backend: Optional[str] = typer.Option(
        None,
        "--backend",
        help="auto | tensorrt | onnxruntime (fake: tests and demos only; see docs/agent.md)",
    ),
    precision: Optional[str] = typer.Option(None, "--precision", help="auto | fp32 | fp16 | int8"),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="Inference threads (intra-op)."),
    batch: Optional[int] = typer.Option(None, "--batch", min=1, max=64, help="Most frames per inference."),
    http_port: Optional[int] = typer.Option(
        None, "--http-port", min=0, max=65535, help="Local HTTP port (0: any)."
    ),
    no_http: bool = typer.Option(
        False, "--no-http", help="Do not serve /healthz /readyz /metrics /v1/count."
    ),
    replay_rate: Optional[float] = typer.Option(
        None, "--replay-rate", min=0.001, help="Replay frames per second."
    ),
    loop: bool = typer.Option(False, "--loop", help="Replay: start again at the end."),
    results: bool = typer.Option(False, "--results", help="Also publish every verdict on <root>/result."),
    max_frames: Optional[int] = typer.Option(
        None, "--max-frames", min=1, help="Stop after this many frames."
    ),
    exit_when_done: bool = typer.Option(
        False, "--exit-when-done", help="Stop when every replay/video source is finished and delivered."
    ),
    log_level: Optional[str] = typer.Option(None, "--log-level", help="DEBUG | INFO | WARNING | ERROR"),
) -> None:
    """Run the agent until SIGTERM/SIGINT (or, for replays, --exit-when-done / --max-frames).

    Flags override the config file, so
    `binwatch agent run --model B --replay D --broker mqtt://127.0.0.1:1883` runs without one.
    A clean stop publishes status `stopped` and keeps undelivered alerts in the outbox.
    """
    overrides = build_overrides(
        model=model,
        replay=replay,
        manifest=manifest,
        broker=broker,
        site=site,
        device=device,
        state_dir=state_dir,
        backend=backend,
        precision=precision,
        threads=threads,
        batch=batch,
        http_port=http_port,
        no_http=no_http,
        replay_rate=replay_rate,
        loop=loop,
        results=results,
        log_level=log_level,
    )
    code = _run_agent(_run_config(config, overrides), max_frames=max_frames, exit_when_done=exit_when_done)
    if code:
        raise typer.Exit(code=code)


def _run_config(config: Optional[Path], overrides: dict[str, Any]) -> Any:
    """The config to run with (file < environment < flags), checked for running; logging set up."""
    from agent.config import ConfigError, load_config

    try:
        cfg = load_config(config, overrides=overrides)
    except ConfigError as e:
        raise fail(
            f"{e}\n(fix the key named above in the file, the BINWATCH_* environment or the flag)"
        ) from None
    problems = cfg.validate_for_run()
    if problems:
        raise fail("cannot run the agent:\n  " + "\n  ".join(problems))
    setup_logging(cfg.agent.log_level, configured=True)
    return cfg


def _run_agent(cfg: Any, *, max_frames: Optional[int], exit_when_done: bool) -> int:
    """Start the runtime, stop it on SIGTERM/SIGINT, print the totals; returns its exit code."""
    from agent.inference.backends.base import BackendError
    from agent.inference.model_store import ModelLoadError
    from agent.runtime import Runtime

    try:
        rt = Runtime(cfg, max_frames=max_frames, exit_when_done=exit_when_done)
    except (ValueError, OSError) as e:
        raise fail(f"cannot start the agent: {e}") from None
    stops = {"n": 0}

    def on_signal(signum: int, _frame: Any) -> None:
        stops["n"] += 1
        log.warning(
            "received %s: stopping%s", signal.Signals(signum).name, " (again)" if stops["n"] > 1 else ""
        )
        rt.request_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        rt.start()
    except (ModelLoadError, BackendError) as e:
        rt.stop()
        raise fail(f"{e}\n(check --model / model.bundle and --backend)") from None
    code = rt.run()
    snap = rt.metrics.snapshot()
    verdicts = ", ".join(f"{k} {v}" for k, v in sorted(snap["verdicts"].items())) or "none"  # type: ignore[union-attr]
    _err.print(
        f"agent stopped: {snap['counts'].get('frames', 0)} frames, verdicts: {verdicts}, "  # type: ignore[union-attr]
        f"alerts stored {snap['counts'].get('alerts', 0)}, undelivered in the outbox {rt.final_outbox_depth}",
        highlight=False,
        soft_wrap=True,
    )
    return code


@app.command("check-config")
def check_config_cmd(
    file: Path = typer.Argument(..., help="Agent config YAML to check."),
    show: bool = typer.Option(False, "--show", help="Print the resolved config (secrets masked) as JSON."),
) -> None:
    """Validate an agent config (with BINWATCH_* environment overrides); name any offending key."""
    from agent.config import ConfigError, load_config
    from agent.config_check import fake_backend_problem
    from agent.intake.sources import display_source

    try:
        cfg = load_config(file)
    except ConfigError as e:
        raise fail(str(e)) from None
    console = Console()
    console.print(
        f"[green]ok[/green] {file}: site {cfg.agent.site}, device {cfg.agent.device}", highlight=False
    )
    for cam in cfg.cameras:
        console.print(
            f"  camera {cam.name}: {cam.resolved_kind} {display_source(cam.source)} "
            f"(trigger {cam.resolved_trigger})",
            highlight=False,
        )
    console.print(
        f"  model: {cfg.model.bundle} (backend {cfg.model.backend}, precision {cfg.model.precision})"
    )
    console.print(f"  broker: {cfg.mqtt.broker}; state dir: {cfg.agent.state_dir}", highlight=False)
    refusal = fake_backend_problem(cfg.model.backend)
    for p in cfg.validate_for_run():
        if p != refusal:
            _err.print(f"[yellow]warning:[/yellow] {p}", highlight=False)
    if show:
        typer.echo(cfg.model_dump_json(indent=2))
    if refusal:
        raise fail(refusal)
