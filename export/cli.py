"""``binwatch export onnx|quantize|engine|bundle|verify`` and the top-level ``binwatch predict``.

Only typer, rich, the stdlib and :mod:`binwatch.cliutil` are imported at module level; torch, onnx
and onnxruntime load inside the commands. Exit codes: 0 ok, 1 a check failed (parity, INT8 accuracy
drop, verification), 2 bad input, 3 TensorRT missing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console

from binwatch.cliutil import err_console, fail

app = typer.Typer(
    help="Turn a trained run into what the edge runs: parity-checked ONNX, INT8 models, TensorRT engines, "
    "bundles.",
    no_args_is_help=True,
)
predict_app = typer.Typer()

_out = Console()


@contextmanager
def _errors() -> Iterator[None]:
    """Turn user-facing errors into a message and an exit code (no traceback)."""
    from contract.base import ContractError
    from export.errors import ExportError

    try:
        yield
    except ExportError as e:
        raise fail(str(e), e.exit_code) from e
    except ContractError as e:
        raise fail(str(e), 2) from e


@contextmanager
def _progress(enabled: bool = True) -> Iterator[Callable[[str, Optional[int]], Callable[[int], None]]]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    if not enabled:
        yield lambda desc, total=None: lambda n=1: None
        return
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    ) as bar:

        def hook(desc: str, total: Optional[int] = None) -> Callable[[int], None]:
            task = bar.add_task(desc, total=total)
            return lambda n=1: bar.advance(task, n)

        yield hook


def _print_json(obj: Any) -> None:
    typer.echo(json.dumps(obj, indent=2, default=str))


@app.command("onnx")
def onnx_cmd(
    run: Path = typer.Argument(..., help="Run folder from `binwatch train` (card.json + weights.pt)."),
    out: Optional[Path] = typer.Option(
        None, "--out", "-o", help="ONNX file to write [default: RUN/model.fp32.onnx]."
    ),
    opset: int = typer.Option(18, "--opset", help="ONNX opset (17 or newer).", min=17),
    atol: float = typer.Option(1e-3, "--atol", help="Largest allowed logit difference vs PyTorch.", min=0),
    images: Optional[Path] = typer.Option(
        None,
        "--images",
        help="Images for the parity check [default: the data the card was trained on, else random].",
    ),
    n: int = typer.Option(16, "--n", help="How many inputs the parity check uses.", min=1),
    as_json: bool = typer.Option(False, "--json", help="Print the parity report as JSON."),
) -> None:
    """Export a run to FP32 ONNX (dynamic batch, card tensor names) and check parity with PyTorch.

    Exits 1 when the largest logit difference is above --atol or any argmax differs; on success
    the file is recorded in RUN/card.json.
    """
    with _errors():
        from export.artifacts import read_card
        from export.calib import find_images
        from export.onnx_export import export_run

        card = read_card(run)
        source = images
        if (
            source is None
            and card.trained_from
            and card.trained_from.data
            and Path(card.trained_from.data).is_dir()
        ):
            source = Path(card.trained_from.data)
        files = find_images(source)[:n] if source is not None else None
        path, report = export_run(run, out, opset=opset, atol=atol, images=files, n_parity=n)
        if as_json:
            _print_json({"onnx": str(path), **report.to_dict()})
        else:
            _out.print(f"wrote {path}", highlight=False)
            _out.print(report.summary(), highlight=False)


@app.command("quantize")
def quantize_cmd(
    run: Path = typer.Argument(..., help="Run folder (exports model.fp32.onnx first if it is missing)."),
    calib: Path = typer.Option(
        ..., "--calib", help="Folder of calibration images (ABID layout or plain images)."
    ),
    n: int = typer.Option(512, "--n", help="Calibration images to use.", min=1),
    target: str = typer.Option("both", "--target", help="tensorrt, cpu or both."),
    eval_dir: Optional[Path] = typer.Option(
        None, "--eval", help="Labelled held-out images (ABID layout) [default: unused images of --calib]."
    ),
    eval_n: int = typer.Option(500, "--eval-n", help="Evaluation images.", min=1),
    max_drop: float = typer.Option(
        1.0, "--max-drop", help="Largest allowed accuracy drop vs FP32, in points.", min=0
    ),
    force: bool = typer.Option(
        False, "--force", help="Keep the INT8 models even when the drop is too large."
    ),
    method: str = typer.Option("minmax", "--method", help="Calibration: minmax, entropy or percentile."),
    seed: int = typer.Option(0, "--seed", help="Seed for picking calibration/evaluation images."),
    threads: Optional[int] = typer.Option(
        None, "--threads", help="ONNX Runtime threads for evaluation.", min=1
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Quantize to INT8 Q/DQ models for TensorRT (signed symmetric) and the CPU (U8S8).

    Calibrates on --calib images preprocessed exactly as the agent does, scores each INT8 model
    against FP32 on held-out labelled images and exits 1 when a model loses more than --max-drop
    points (nothing is written then, unless --force). Results go into RUN/card.json.
    """
    with _errors():
        from export.quantize import quantize_run

        with _progress(not as_json) as hook:
            report = quantize_run(
                run,
                calib,
                n=n,
                target=target,
                eval_dir=eval_dir,
                eval_n=eval_n,
                max_drop=max_drop,
                force=force,
                method=method,
                seed=seed,
                threads=threads,
                progress=hook,
            )
        if as_json:
            _print_json(report.to_dict())
            return
        from rich.table import Table

        where = "calibration images (IN-SAMPLE)" if report.in_sample else "held-out images"
        table = Table(title=f"INT8 vs FP32 on {report.n_eval} {where} (calibrated on {report.n_calib})")
        for col in ("model", "accuracy", "drop (points)", "agrees with FP32", "check"):
            table.add_column(col)
        table.add_row("fp32", f"{100 * report.fp32_accuracy:.2f}%", "", "", "")
        for r in report.results:
            check = "[green]ok[/green]" if r.passed else "[yellow]over limit (--force)[/yellow]"
            acc, drop, agree = (
                f"{100 * r.accuracy:.2f}%",
                f"{r.accuracy_drop:+.2f}",
                f"{100 * r.agreement:.1f}%",
            )
            table.add_row(r.path.name, acc, drop, agree, check)
        _out.print(table)
        if report.skipped_images:
            err_console.print(
                f"[yellow]{len(report.skipped_images)} calibration images did not decode "
                "and were skipped[/yellow]"
            )


@app.command("engine")
def engine_cmd(
    model: Path = typer.Argument(
        ..., help="ONNX file, or a bundle folder (picks the model for --precision)."
    ),
    precision: str = typer.Option("int8", "--precision", help="int8 (Q/DQ model), fp16 or fp32."),
    max_batch: int = typer.Option(8, "--max-batch", help="Largest batch of the optimization profile.", min=1),
    min_batch: int = typer.Option(1, "--min-batch", help="Smallest batch of the profile.", min=1),
    opt_batch: Optional[int] = typer.Option(
        None, "--opt-batch", help="Batch TensorRT tunes for [default: max/2].", min=1
    ),
    workspace: int = typer.Option(1024, "--workspace", help="Builder workspace limit in MiB.", min=16),
    dla_core: Optional[int] = typer.Option(
        None, "--dla-core", help="Run on this DLA core (Jetson), GPU fallback.", min=0
    ),
    timing_cache: Optional[Path] = typer.Option(
        None, "--timing-cache", help="Timing cache file [default: beside the engine]."
    ),
    out: Optional[Path] = typer.Option(
        None, "--out", "-o", help="Engine file [default: engines/<cache key>.engine]."
    ),
    typed: Optional[bool] = typer.Option(
        None,
        "--strongly-typed/--builder-flags",
        help="Force the network mode [default: by TensorRT version].",
    ),
    verbose_trt: bool = typer.Option(False, "--trt-verbose", help="TensorRT's verbose builder log."),
) -> None:
    """Build a TensorRT engine (TensorRT 10) and its sidecar JSON, on the GPU that will run it.

    Needs TensorRT: on a Jetson it comes with JetPack 6; on x86 `pip install tensorrt` from NVIDIA's
    index. Exit code 3 when it is missing.
    """
    with _errors():
        from contextlib import nullcontext

        from export.bundle import is_tar, open_bundle
        from export.engine import build_engine

        def phase(msg: str) -> None:
            err_console.print(f"[dim]TensorRT:[/dim] {msg}", highlight=False)

        with open_bundle(model) if is_tar(model) else nullcontext(model) as src:
            path, sidecar = build_engine(
                src,
                out,
                precision=precision,
                max_batch=max_batch,
                min_batch=min_batch,
                opt_batch=opt_batch,
                workspace_mib=workspace,
                dla_core=dla_core,
                timing_cache=timing_cache,
                strongly_typed=typed,
                verbose=verbose_trt,
                on_phase=phase,
            )
        _out.print(f"wrote {path} (+ {path.name}.json)", highlight=False)
        _out.print(
            f"TensorRT {sidecar.trt_version}, sm {sidecar.compute_capability}, {sidecar.precision}, batch "
            f"{sidecar.batch_profile.min}-{sidecar.batch_profile.max}, key {sidecar.cache_key}",
            highlight=False,
        )


@app.command("bundle")
def bundle_cmd(
    run: Path = typer.Argument(..., help="Run folder with card.json (ONNX files are produced if missing)."),
    out: Path = typer.Option(..., "--out", "-o", help="Bundle folder, or FILE.tar / FILE.tar.gz."),
    golden: Optional[Path] = typer.Option(
        None, "--golden", help="Images for the golden set [default: --calib, else training data]."
    ),
    n_golden: int = typer.Option(4, "--n-golden", help="Golden images.", min=1),
    calib: Optional[Path] = typer.Option(
        None, "--calib", help="Calibration images, when the INT8 models must be made."
    ),
    n: int = typer.Option(512, "--n", help="Calibration images (with --calib).", min=1),
    eval_dir: Optional[Path] = typer.Option(
        None, "--eval", help="Labelled evaluation images (with --calib)."
    ),
    force: bool = typer.Option(False, "--force", help="Keep INT8 models over the accuracy limit."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out."),
) -> None:
    """Package card, FP32 + both INT8 ONNX models, a golden set and MANIFEST.json into a bundle."""
    with _errors():
        from export.bundle import make_bundle

        with _progress() as hook:
            path = make_bundle(
                run,
                out,
                golden=golden,
                n_golden=n_golden,
                calib=calib,
                n_calib=n,
                eval_dir=eval_dir,
                force=force,
                overwrite=overwrite,
                progress=hook,
            )
        _out.print(f"wrote bundle {path}", highlight=False)


@app.command("verify")
def verify_cmd(
    bundle: Path = typer.Argument(..., help="Bundle folder or tar."),
    golden: bool = typer.Option(
        True, "--golden/--no-golden", help="Also run the golden images through every model."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Check a bundle: every sha256 in MANIFEST.json, the card and its artifact hashes, the golden set.

    Exits 1 naming each file that fails. (MANIFEST.sig is checked by `binwatch deploy verify`.)
    """
    with _errors():
        from export.bundle import verify_bundle

        problems = verify_bundle(bundle, run_golden=golden)
        if as_json:
            _print_json({"bundle": str(bundle), "ok": not problems, "problems": problems})
        elif not problems:
            extra = ", golden set reproduced" if golden else ""
            _out.print(f"{bundle}: OK (every file matches MANIFEST.json, card valid{extra})", highlight=False)
        else:
            for p in problems:
                err_console.print(f"[red]FAIL[/red] {p}", highlight=False, soft_wrap=True)
        if problems:
            raise typer.Exit(code=1)


def _expand(images: list[Path]) -> list[Path]:
    """Files as given; folders replaced by their images (``find_images``: ABID ``bin-images/`` when
    present). A folder without images adds nothing."""
    from export.calib import find_images
    from export.errors import ExportError

    files: list[Path] = []
    for p in images:
        if not p.is_dir():
            files.append(p)
            continue
        try:
            files.extend(find_images(p))
        except ExportError:
            continue
    return files


@predict_app.command("predict")
def predict_cmd(
    images: list[Path] = typer.Argument(..., help="Image files or folders of images."),
    model: Path = typer.Option(
        ..., "--model", "-m", help="Bundle (folder or .tar) or ONNX file (card.json beside it)."
    ),
    backend: str = typer.Option(
        "auto", "--backend", help="auto (INT8-CPU model on the CPU), onnx-cpu, onnx-cuda, onnx-tensorrt."
    ),
    precision: str = typer.Option("auto", "--precision", help="auto, fp32 or int8 (which bundle model)."),
    card: Optional[Path] = typer.Option(None, "--card", help="Model card for a bare ONNX file."),
    threads: Optional[int] = typer.Option(None, "--threads", help="ONNX Runtime threads.", min=1),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per image (JSON lines)."),
) -> None:
    """Predict item counts and calibrated count distributions for bin images.

    Exits 2 when an image cannot be read (the others are still predicted).
    """
    with _errors():
        from export.predict import open_predictor

        files = _expand(images)
        if not files:
            raise fail("no images given (folders held no .jpg/.png files)")
        with open_predictor(model, backend=backend, precision=precision, card=card, threads=threads) as pred:
            results = pred.predict_files(files)
            if as_json:
                for r in results:
                    typer.echo(
                        json.dumps({**r.to_dict(), "model": pred.model_file.name, "backend": pred.backend})
                    )
            else:
                from rich.table import Table

                table = Table(
                    title=f"{pred.card.name} v{pred.card.version} · {pred.model_file.name} · {pred.backend}"
                )
                table.add_column("image", overflow="fold")
                for col in ("count", "p", "distribution"):
                    table.add_column(col)
                for r in results:
                    if r.error:
                        table.add_row(r.file, "[red]error[/red]", "", r.error)
                    else:
                        dist = " ".join(f"{k}:{v:.2f}" for k, v in (r.distribution or {}).items())
                        table.add_row(r.file, r.label or "", f"{r.confidence:.2f}", dist)
                _out.print(table)
        failed = [r for r in results if r.error]
        if failed:
            raise fail(f"{len(failed)} of {len(results)} images could not be read", 2)
