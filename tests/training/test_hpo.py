"""binwatch hpo: Optuna trials calling training in-process, SQLite storage, pruning, best.yaml."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import optuna
import pytest
import torch
import yaml

from training.data.synth import synthesize
from training.hpo import HpoError, HpoOptions, default_storage, run_hpo

TINY_TRAIN = ["--img-size", "32", "--max-count", "2", "--workers", "0", "--no-tensorboard"]


@pytest.fixture(autouse=True)
def one_thread():
    # On a shared 2-core box, two torch threads contend badly with other processes.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_bins(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bins") / "syn"
    synthesize(out, 30, 2, seed=7, size=(64, 64), workers=1, progress=False)
    return out


def test_trials_train_in_process_and_share_one_sqlite_study(tiny_bins, tmp_path):
    out = tmp_path / "hpo"
    opts = HpoOptions(
        data=tiny_bins,
        trials=1,
        out=out,
        epochs=2,
        batch_sizes=(8,),
        seed=0,
        prune=False,
        train_args=TINY_TRAIN,
    )
    seen: list[tuple[int, str]] = []
    run_hpo(opts, on_trial=lambda n, state, v: seen.append((n, state)))
    # a second worker (same storage, same study name) adds its trial to the same study
    best = run_hpo(opts, on_trial=lambda n, state, v: seen.append((n, state)))
    assert seen == [(0, "COMPLETE"), (1, "COMPLETE")]

    study = optuna.load_study(study_name="binwatch", storage=default_storage(out))
    assert len(study.trials) == 2
    for t in study.trials:
        assert sorted(t.intermediate_values) == [0, 1]  # reported after every epoch
        assert {"arch", "lr", "batch_size", "weight_decay", "optimizer", "loss"} <= set(t.params)
    with sqlite3.connect(out / "hpo.db") as db:
        assert db.execute("select count(*) from trials").fetchone()[0] == 2

    saved = yaml.safe_load((out / "best.yaml").read_text())
    assert saved["trial"] == study.best_trial.number == best["trial"]
    assert saved["value"] == pytest.approx(study.best_value)
    assert saved["params"] == study.best_trial.params
    assert "--lr" in saved["train_args"] and saved["command"].startswith("binwatch train")
    # the best trial's run is kept (without its optimizer checkpoint), the other is removed
    best_run = out / f"trial-{saved['trial']:04d}"
    assert (best_run / "card.json").is_file() and (best_run / "weights.pt").is_file()
    assert not (best_run / "checkpoint.pt").exists()
    other = out / f"trial-{1 - saved['trial']:04d}"
    assert not other.exists()
    rows = (out / "trials.csv").read_text().splitlines()
    assert len(rows) == 3 and rows[0].startswith("number,state,value")


def test_median_pruner_stops_a_bad_trial(tmp_path):
    """The pruning path with a stand-in for training (the seam is ``train_main``)."""
    data = tmp_path / "data"
    data.mkdir()
    epochs_run: list[int] = []

    def fake_main(args, epoch_callback=None):
        run = Path(args.out)
        run.mkdir(parents=True, exist_ok=True)
        (run / "checkpoint.pt").write_bytes(b"x")
        good = len(epochs_run) < 2  # the first two trials learn, the third does not
        done = 0
        for epoch in range(args.epochs):
            acc = 0.5 + 0.1 * epoch if good else 0.1
            done = epoch + 1
            try:
                epoch_callback(epoch, {"epoch": epoch, "val": {"accuracy": acc}})
            except optuna.TrialPruned:
                epochs_run.append(done)
                raise
        epochs_run.append(done)
        return {"val": {"accuracy": acc, "rmse": 1.0, "mae": 1.0, "n": 10}}

    opts = HpoOptions(
        data=data,
        trials=3,
        out=tmp_path / "hpo",
        epochs=4,
        seed=0,
        prune_startup_trials=2,
        prune_warmup_epochs=1,
        keep="all",
    )
    best = run_hpo(opts, train_main=fake_main)
    study = optuna.load_study(study_name="binwatch", storage=default_storage(tmp_path / "hpo"))
    states = [t.state for t in study.trials]
    assert states[:2] == [optuna.trial.TrialState.COMPLETE] * 2
    assert states[2] == optuna.trial.TrialState.PRUNED
    assert epochs_run == [4, 4, 2]  # pruned at the first epoch past the warm-up
    assert best["trials"] == {"COMPLETE": 2, "PRUNED": 1, "FAIL": 0}
    assert not (tmp_path / "hpo" / "trial-0002" / "checkpoint.pt").exists()


def test_bad_options_are_user_errors(tiny_bins, tmp_path):
    with pytest.raises(HpoError, match="unknown architecture"):
        run_hpo(HpoOptions(data=tiny_bins, trials=1, out=tmp_path, archs=("resnet999",)))
    with pytest.raises(HpoError, match="set by hpo itself"):
        run_hpo(HpoOptions(data=tiny_bins, trials=1, out=tmp_path, train_args=["--lr", "0.1"]))
    with pytest.raises(HpoError, match="SQLAlchemy URL"):
        run_hpo(HpoOptions(data=tiny_bins, trials=1, out=tmp_path, storage="not-a-url"))
    with pytest.raises(HpoError, match="no such folder"):
        run_hpo(HpoOptions(data=tmp_path / "missing", trials=1, out=tmp_path))
