"""``binwatch hpo``: an Optuna study over training settings, each trial a ``training.train.main``
call in this process.

Searched: learning rate (log), batch size, weight decay (log), optimizer (SGD / AdamW),
architecture (from a list) and loss (plain cross-entropy, cross-entropy + ordinal penalty, label
smoothing, with their strength). Every epoch a trial reports its validation metric; Optuna's
MedianPruner stops trials that fall below the median of earlier trials at the same epoch.

Storage is any SQLAlchemy URL Optuna accepts: ``sqlite:///OUT/hpo.db`` by default (one machine),
or a server database (``postgresql+psycopg2://user:pass@host/db``) so that many GPU workers, each
running ``binwatch hpo`` with the same ``--storage`` and ``--study-name``, share one study.
Workers send heartbeats; a trial whose worker died is marked failed and retried once.

Outputs in ``--out``: one run folder per trial (``trial-0007/``: weights, card, metrics.csv; the
optimizer checkpoint is removed when the trial ends), ``trials.csv`` and ``best.yaml`` with the best
trial's settings and the ``binwatch train`` command that repeats it.
"""

from __future__ import annotations

import csv
import logging
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from contract.files import atomic_writer, write_atomic

log = logging.getLogger(__name__)

__all__ = ["LOSSES", "HpoError", "HpoOptions", "default_storage", "run_hpo", "suggest_train_args"]

LOSSES = ("ce", "ordinal", "label_smoothing")


class HpoError(ValueError):
    """A bad option; the message names the cause and the fix."""


@dataclass
class HpoOptions:
    data: Path
    trials: int
    out: Path = Path("hpo")
    storage: Optional[str] = None
    study_name: str = "binwatch"
    epochs: int = 10
    metric: str = "accuracy"  # or rmse
    archs: Sequence[str] = ("resnet18",)
    batch_sizes: Sequence[int] = (32, 64, 128)
    optimizers: Sequence[str] = ("sgd", "adamw")
    losses: Sequence[str] = LOSSES
    lr_range: tuple[float, float] = (1e-4, 0.2)
    weight_decay_range: tuple[float, float] = (1e-6, 1e-2)
    seed: Optional[int] = None
    timeout: Optional[float] = None
    prune: bool = True
    prune_startup_trials: int = 3
    prune_warmup_epochs: int = 1
    keep: str = "best"  # best | all
    train_args: Sequence[str] = field(default_factory=list)  # passed through to binwatch train


def default_storage(out: Path) -> str:
    return f"sqlite:///{Path(out).resolve() / 'hpo.db'}"


def _redact(url: str) -> str:
    """The storage URL without its password (for logs and best.yaml)."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1] if "@" in url else url


def _storage(url: str):
    """RDB storage with heartbeats: a trial whose worker died is marked failed and retried once."""
    import warnings

    import optuna
    from optuna import storages
    from sqlalchemy.exc import SQLAlchemyError

    kw: dict[str, Any] = {"heartbeat_interval": 60, "grace_period": 180}
    if url.startswith("sqlite"):
        kw["engine_kwargs"] = {"connect_args": {"timeout": 60}}
    if hasattr(storages, "RetryHeartbeatStaleTrialCallback"):  # optuna >= 4.9
        retry_cls, retry_kw = storages.RetryHeartbeatStaleTrialCallback, "heartbeat_stale_trial_callback"
    else:
        retry_cls, retry_kw = storages.RetryFailedTrialCallback, "failed_trial_callback"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            kw[retry_kw] = retry_cls(max_retry=1)
            return storages.RDBStorage(url, **kw)
    except ImportError as e:
        raise HpoError(
            f"--storage {_redact(url)}: its database driver is missing ({e}); e.g. "
            "pip install psycopg2-binary for postgresql+psycopg2://"
        ) from e
    except (optuna.exceptions.StorageInternalError, SQLAlchemyError, ValueError) as e:
        raise HpoError(
            f"--storage {_redact(url)}: {e} (use an SQLAlchemy URL such as sqlite:///hpo.db or "
            "postgresql+psycopg2://user:password@host/db)"
        ) from e


def suggest_train_args(trial, opts: HpoOptions) -> list[str]:
    """The trial's sampled settings as ``binwatch train`` flags."""
    arch = trial.suggest_categorical("arch", list(opts.archs))
    optimizer = trial.suggest_categorical("optimizer", list(opts.optimizers))
    lr = trial.suggest_float("lr", *opts.lr_range, log=True)
    batch = trial.suggest_categorical("batch_size", list(opts.batch_sizes))
    wd = trial.suggest_float("weight_decay", *opts.weight_decay_range, log=True)
    loss = trial.suggest_categorical("loss", list(opts.losses))
    args = [
        "--arch",
        arch,
        "--optimizer",
        optimizer,
        "--lr",
        f"{lr:.6g}",
        "--batch-size",
        str(batch),
        "--weight-decay",
        f"{wd:.6g}",
    ]
    if loss == "ordinal":
        args += ["--ordinal-lambda", f"{trial.suggest_float('ordinal_lambda', 0.02, 1.0, log=True):.6g}"]
    elif loss == "label_smoothing":
        args += ["--label-smoothing", f"{trial.suggest_float('label_smoothing', 0.02, 0.2):.6g}"]
    return args


def _check(opts: HpoOptions) -> None:
    if opts.trials < 1:
        raise HpoError("--trials must be >= 1")
    if opts.epochs < 1:
        raise HpoError("--epochs must be >= 1")
    if opts.metric not in ("accuracy", "rmse"):
        raise HpoError(f"--metric {opts.metric!r}: choose accuracy or rmse")
    if opts.keep not in ("best", "all"):
        raise HpoError(f"--keep {opts.keep!r}: choose best or all")
    bad = [loss for loss in opts.losses if loss not in LOSSES]
    if bad:
        raise HpoError(f"unknown loss {bad[0]!r}; choose from {', '.join(LOSSES)}")
    from training.model import available_archs

    names = set(available_archs())
    bad = [a for a in opts.archs if a not in names]
    if bad:
        raise HpoError(
            f"unknown architecture {bad[0]!r}: use torchvision classification model names (e.g. resnet18)"
        )
    if not Path(opts.data).is_dir():
        raise HpoError(f"--data {opts.data}: no such folder")
    reserved = {
        "--data",
        "--cache",
        "--out",
        "--epochs",
        "--arch",
        "--lr",
        "--batch-size",
        "--weight-decay",
        "--optimizer",
        "--select-by",
        "--resume",
    }
    clash = [a for a in opts.train_args if a.split("=", 1)[0] in reserved]
    if clash:
        raise HpoError(
            f"train option {clash[0]} is set by hpo itself; leave it out of the pass-through options"
        )


def _data_flag(data: Path) -> list[str]:
    return ["--cache", str(data)] if (Path(data) / "index.json").is_file() else ["--data", str(data)]


def _write_trials_csv(study, path: Path) -> None:
    names = sorted({k for t in study.trials for k in t.params})
    with atomic_writer(path, mode=0o644, text=True) as f:
        w = csv.writer(f)
        w.writerow(["number", "state", "value", "epochs_reported", *names])
        for t in study.trials:
            w.writerow(
                [
                    t.number,
                    t.state.name,
                    "" if t.value is None else t.value,
                    len(t.intermediate_values),
                    *[t.params.get(k, "") for k in names],
                ]
            )


def _create_study(opts: HpoOptions, url: str, direction: str):
    """Create the study in the storage at ``url``, or join it when it exists."""
    import optuna

    pruner = (
        optuna.pruners.MedianPruner(
            n_startup_trials=opts.prune_startup_trials, n_warmup_steps=opts.prune_warmup_epochs
        )
        if opts.prune
        else optuna.pruners.NopPruner()
    )
    try:
        return optuna.create_study(
            study_name=opts.study_name,
            storage=_storage(url),
            direction=direction,
            pruner=pruner,
            sampler=optuna.samplers.TPESampler(seed=opts.seed),
            load_if_exists=True,
        )
    except ValueError as e:  # e.g. an existing study with the other direction
        raise HpoError(f"study {opts.study_name!r} in {_redact(url)}: {e}") from e


def _objective(opts: HpoOptions, out: Path, train_main: Callable[..., dict[str, Any]]):
    """The Optuna objective: one ``binwatch train`` run in ``out/trial-NNNN`` with the trial's
    settings, reporting each epoch's validation metric (and pruned when Optuna says so)."""
    import optuna

    from training.train import parse_args

    def objective(trial: optuna.Trial) -> float:
        run = out / f"trial-{trial.number:04d}"
        sampled = suggest_train_args(trial, opts)
        argv = [
            *_data_flag(opts.data),
            "--out",
            str(run),
            "--epochs",
            str(opts.epochs),
            "--select-by",
            opts.metric,
            "--exist-ok",
            "--no-progress",
            *sampled,
            *opts.train_args,
        ]
        trial.set_user_attr("train_args", sampled + list(opts.train_args))
        trial.set_user_attr("run", str(run))

        def report(epoch: int, row: dict[str, Any]) -> None:
            value = float(row["val"][opts.metric])
            trial.report(value, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"epoch {epoch}: val {opts.metric} {value:.4f} below the median")

        try:
            result = train_main(parse_args(argv), epoch_callback=report)
        finally:
            (run / "checkpoint.pt").unlink(missing_ok=True)
        value = float(result["val"][opts.metric])
        trial.set_user_attr("val", {k: result["val"][k] for k in ("accuracy", "rmse", "mae", "n")})
        return value

    return objective


def _best_info(study, opts: HpoOptions, url: str, direction: str) -> dict[str, Any]:
    """What ``best.yaml`` holds: the best trial, its settings and the command that repeats it."""
    best = study.best_trial
    train_args = list(best.user_attrs.get("train_args", []))
    return {
        "study": opts.study_name,
        "storage": _redact(url),
        "metric": f"val {opts.metric}",
        "direction": direction,
        "value": best.value,
        "trial": best.number,
        "params": dict(best.params),
        "val": best.user_attrs.get("val"),
        "run": best.user_attrs.get("run"),
        "train_args": train_args,
        "command": " ".join(
            [
                "binwatch",
                "train",
                *_data_flag(opts.data),
                "--epochs",
                str(opts.epochs),
                "--select-by",
                opts.metric,
                *train_args,
                "--out",
                "RUN",
            ]
        ),
        "trials": {
            s: sum(1 for t in study.trials if t.state.name == s) for s in ("COMPLETE", "PRUNED", "FAIL")
        },
    }


def _remove_other_runs(study, best_number: int, out: Path) -> None:
    """``--keep best``: delete the run folders of the finished trials other than the best one."""
    for t in study.trials:
        run = t.user_attrs.get("run")
        done = t.state.is_finished()  # never touch a trial another worker is still running
        if (
            done
            and t.number != best_number
            and run
            and Path(run).parent.resolve() == out.resolve()
            and Path(run).is_dir()
        ):
            shutil.rmtree(run, ignore_errors=True)


def run_hpo(
    opts: HpoOptions,
    on_trial: Optional[Callable[[int, str, Optional[float]], None]] = None,
    train_main: Optional[Callable[..., dict[str, Any]]] = None,
) -> dict[str, Any]:
    """Run ``opts.trials`` trials (in this process) and write ``best.yaml``; returns its content.

    ``on_trial(number, state, value)`` is called after each trial. ``train_main`` defaults to
    :func:`training.train.main` (``main(args, epoch_callback=...)``).
    """
    import optuna
    import torch
    import yaml

    from training.train import TrainError

    _check(opts)
    if train_main is None:
        from training.train import main as train_main
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    url = opts.storage or default_storage(out)
    direction = "maximize" if opts.metric == "accuracy" else "minimize"
    study = _create_study(opts, url, direction)

    def callback(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        _write_trials_csv(study, out / "trials.csv")
        if on_trial is not None:
            on_trial(trial.number, trial.state.name, trial.value)

    study.optimize(
        _objective(opts, out, train_main),
        n_trials=opts.trials,
        timeout=opts.timeout,
        callbacks=[callback],
        catch=(TrainError, torch.OutOfMemoryError),
    )
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        raise HpoError(
            f"no trial of study {opts.study_name!r} completed ({len(study.trials)} tried): see the log for "
            "the errors, or raise --epochs / lower pruning (--no-prune)"
        )
    best_info = _best_info(study, opts, url, direction)
    write_atomic(out / "best.yaml", yaml.safe_dump(best_info, sort_keys=False), mode=0o644)
    _write_trials_csv(study, out / "trials.csv")
    if opts.keep == "best":
        _remove_other_runs(study, study.best_trial.number, out)
    best_info["out"] = str(out)
    return best_info
