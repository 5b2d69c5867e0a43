"""``binwatch data``: get and inspect bin image datasets in the ABID layout.

``download`` and ``stats`` are here; ``synth`` and ``prepare`` are in :mod:`training.data.synth_cli`
and :mod:`training.data.prepare_cli`, registered on :data:`app` below. Module level imports only
typer, rich and the stdlib-only ABID reader; the work modules are imported inside the commands.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from binwatch.cliutil import cannot_write, fail, missing_extra
from contract.abid import AbidError, list_keys
from training.data import prepare_cli, synth_cli
from training.data.cli_errors import not_abid
from training.data.download import DEFAULT_ENDPOINT  # stdlib-only module

app = typer.Typer(
    help="Get and inspect bin image datasets (ABID layout: bin-images/<key>.jpg + metadata/<key>.json).",
    no_args_is_help=True,
)

_err = Console(stderr=True)


@app.command("download")
def download_cmd(
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write bin-images/ and metadata/ into."),
    split: Optional[Path] = typer.Option(
        None, "--split", help="abid_challenge counting_*.json split: fetch its keys ('%05d' % (index0+1))."
    ),
    file_list: Optional[Path] = typer.Option(
        None, "--file-list", help="Capstone file_list.json (lists of metadata/NNNNN.json paths)."
    ),
    keys: Optional[str] = typer.Option(
        None, "--keys", help="Keys and inclusive ranges, verbatim: 00001-00100,121 (never re-padded)."
    ),
    limit: Optional[int] = typer.Option(
        None, "--limit", help="Only the first N selected keys; alone: keys 00001..N.", min=1
    ),
    endpoint: str = typer.Option(
        DEFAULT_ENDPOINT,
        "--endpoint",
        show_default=False,
        help="Base URL of the ABID bucket or a mirror (default: the public bucket aft-vbi-pds over HTTPS).",
    ),
    workers: int = typer.Option(16, "--workers", help="Keys fetched concurrently.", min=1),
    retries: int = typer.Option(5, "--retries", help="Retries per file on 5xx, timeouts, truncation.", min=0),
    backoff: float = typer.Option(1.0, "--backoff", help="First retry pause in seconds (doubles).", min=0),
    timeout: float = typer.Option(30.0, "--timeout", help="Socket timeout per request, seconds.", min=0.1),
) -> None:
    """Download ABID images and metadata over HTTPS (no credentials), resumably.

    Files already present are complete and skipped; unfinished *.part files are fetched again.

    Exits 1 if any key failed (e.g. HTTP 404), listing each with its reason.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from training.data.download import check_endpoint, download, select_keys

    try:
        selected = select_keys(split=split, file_list=file_list, keys=keys, limit=limit)
        endpoint = check_endpoint(endpoint)
    except (ValueError, AbidError) as e:
        raise fail(str(e)) from None
    try:
        for folder in ("bin-images", "metadata"):
            (out / folder).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise cannot_write(out, e) from None
    _err.print(f"Fetching {len(selected)} keys from {endpoint} into {out}", markup=False, highlight=False)
    columns = (TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, TimeRemainingColumn(), console=_err, transient=True) as progress:
        task = progress.add_task("download", total=len(selected))
        summary = download(
            selected,
            out,
            endpoint=endpoint,
            workers=workers,
            retries=retries,
            backoff=backoff,
            timeout=timeout,
            on_key=lambda _result: progress.advance(task),
        )
    console = Console()
    console.print(
        f"{summary.keys} keys: {summary.downloaded} files downloaded "
        f"({summary.nbytes / 1e6:.1f} MB), {summary.skipped} already complete, "
        f"{len(summary.failed)} keys failed",
        highlight=False,
    )
    if summary.failed:
        shown = sorted(summary.failed.items())
        for key, reason in shown[:50]:
            _err.print(f"[red]failed[/red] {escape(f'{key}: {reason}')}", highlight=False, soft_wrap=True)
        if len(shown) > 50:
            _err.print(f"... and {len(shown) - 50} more", highlight=False)
        _err.print("Run the same command again to retry the failed and unfinished keys.")
        raise typer.Exit(code=1)


@app.command("stats")
def stats_cmd(
    root: Path = typer.Argument(..., help="ABID-layout folder (bin-images/ and metadata/)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
    max_count: Optional[int] = typer.Option(
        None, "--max-count", help="Leave out images with more items than this.", min=0
    ),
    strict: bool = typer.Option(False, "--strict", help="Fail on the first missing or corrupt file."),
) -> None:
    """Image count, count histogram, mean quantity and image sizes of a dataset folder."""
    from rich.progress import Progress

    try:
        from training.data.stats import compute_stats
    except ImportError as e:
        raise missing_extra(e, "train") from None
    try:
        keys = list_keys(root)
    except AbidError as e:
        raise not_abid(e) from None
    try:
        with Progress(console=_err, transient=True, disable=as_json) as progress:
            stats = compute_stats(
                root,
                keys=progress.track(keys, description="reading"),
                max_count=max_count,
                strict=strict,
            )
    except AbidError as e:
        raise fail(f"{e} (drop --strict to skip and count bad files)") from None
    except OSError as e:
        raise fail(f"{e} (drop --strict to skip unreadable images)") from None
    if as_json:
        typer.echo(stats.model_dump_json(indent=2))
        return
    _print_stats(stats)


def _print_stats(stats) -> None:  # stats: training.data.stats.DatasetStats
    console = Console()
    summary = Table(title=f"Dataset {escape(stats.root)}", show_header=False)
    summary.add_column("", style="bold")
    summary.add_column("")
    summary.add_row("images", str(stats.images))
    if stats.mean_quantity is not None:
        counts = list(stats.histogram)
        summary.add_row("mean quantity", f"{stats.mean_quantity:.3f}")
        summary.add_row("count range", f"{counts[0]} .. {counts[-1]}")
    for name, rng in (("width", stats.width), ("height", stats.height)):
        if rng is not None:
            summary.add_row(f"{name} (px)", f"{rng.min} .. {rng.max}, mean {rng.mean:.1f}")
    if stats.max_count is not None:
        summary.add_row(f"over --max-count {stats.max_count}", str(stats.over_max_count))
    for reason, n in stats.skipped.items():
        summary.add_row(f"skipped: {reason}", f"[yellow]{n}[/yellow]")
    console.print(summary)
    if not stats.images:
        return
    hist = Table(title="Count histogram")
    hist.add_column("count", justify="right")
    hist.add_column("images", justify="right")
    hist.add_column("share", justify="right")
    hist.add_column("")
    peak = max(stats.histogram.values())
    for count, n in stats.histogram.items():
        hist.add_row(str(count), str(n), f"{100 * n / stats.images:.1f}%", "█" * max(1, round(30 * n / peak)))
    console.print(hist)


synth_cli.register(app)
prepare_cli.register(app)
