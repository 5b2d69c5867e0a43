"""``binwatch demo``: one command that shows binwatch catching wrong manifests, end to end.

Module level imports only typer, rich and the stdlib (``binwatch --help`` stays light); the demo
drives every other part as a ``python -m binwatch ...`` process.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from pathlib import Path
from typing import Optional

import typer

from binwatch.cliutil import err_console, fail

log = logging.getLogger(__name__)

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.command("demo")
def demo_cmd(
    out: Path = typer.Option(Path("demo-out"), "--out", "-o", help="Folder for everything the demo makes."),
    reuse: bool = typer.Option(
        True, "--reuse/--fresh", help="Reuse what an earlier run with these options made."
    ),
    model: Optional[Path] = typer.Option(
        None, "--model", help="Use this bundle (or training run folder) instead of training one."
    ),
    broker: Optional[str] = typer.Option(
        None, "--broker", help="A running broker, mqtt://host:port (default: start one)."
    ),
    images: Optional[Path] = typer.Option(
        None, "--images", help="Replay real images in ABID layout instead (bin-images/, metadata/)."
    ),
    console_on: bool = typer.Option(True, "--console/--no-console", help="Start the operator console."),
    port: int = typer.Option(0, "--port", help="Port of the local broker (0: a free one).", min=0, max=65535),
    console_port: int = typer.Option(
        0, "--console-port", help="Port of the console (0: a free one).", min=0, max=65535
    ),
    count: int = typer.Option(2400, "--count", help="Synthetic training bins.", min=20),
    eval_count: int = typer.Option(300, "--eval-count", help="Held-out bins shown to the agent.", min=5),
    val_count: int = typer.Option(
        300, "--val-count", help="Validation bins that fit the fused-view alert threshold.", min=5
    ),
    views: int = typer.Option(
        3, "--views", help="Pictures per held-out bin, fused by the agent.", min=1, max=16
    ),
    epochs: int = typer.Option(12, "--epochs", help="Training epochs.", min=1),
    img: int = typer.Option(64, "--img", help="Model input size in pixels.", min=32),
    max_items: int = typer.Option(
        4, "--max-items", help="Most items in a synthetic bin (the model's classes 0..K).", min=1
    ),
    min_visible: float = typer.Option(
        0.35,
        "--min-visible",
        help="Least visible part of each synthetic item (more: less occlusion).",
        min=0.05,
        max=1.0,
    ),
    cameras: int = typer.Option(
        6, "--cameras", help="Stand-in cameras presenting bins side by side.", min=1, max=16
    ),
    hold: Optional[bool] = typer.Option(
        None,
        "--hold/--no-hold",
        help="Keep broker and console running after the summary until Ctrl-C, to review the alerts "
        "(default: when run from a terminal).",
    ),
) -> None:
    """Synthesize bins, train, evaluate, export INT8, start a broker, the console and an agent, show it
    held-out bins (several views each) whose manifests carry injected errors, and score its alerts.

    Everything goes under --out; a second run reuses what the first made (--fresh: start over).
    Synthetic bins make this a pipeline check, not an ABID accuracy figure. docs/demo.md has more."""
    try:
        from demo.model import Recipe
        from demo.run import Settings, run_demo
        from demo.steps import DemoError
    except ImportError as e:
        raise fail(f"the demo needs {e.name!r}: pip install 'binwatch[all]'") from None
    recipe = Recipe(count=count, eval_count=eval_count, val_count=val_count, views=views, epochs=epochs)
    recipe = dataclasses.replace(recipe, img=img, max_items=max_items, min_visible=min_visible)
    settings = Settings(
        out=out, reuse=reuse, broker=broker, console=console_on, cameras=cameras, recipe=recipe
    )
    settings.model = model.expanduser().resolve() if model else None
    settings.images = images.expanduser().resolve() if images else None
    settings.port, settings.console_port = port, console_port
    settings.hold = sys.stdin.isatty() if hold is None else hold
    try:
        run_demo(settings, err_console)
    except DemoError as e:
        raise fail(f"{e.cause}. Fix: {e.fix}", e.code) from None
    except KeyboardInterrupt:
        raise fail("interrupted; everything started was stopped", 130) from None
    except OSError as e:
        raise fail(f"{e}; check the disk and permissions of --out {out}", 1) from None
