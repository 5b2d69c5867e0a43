"""``binwatch train --init RUN``: fine-tune from another run. The parent's card must agree on the
architecture and the classes (each mismatch named), its weights load strictly, the optimizer and
schedule start fresh, and the new card's ``trained_from.parent`` names the parent."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from contract.card import ParentRun, load_card
from contract.files import sha256_file
from training.train import TrainError, main

ARGS = [
    "--arch", "resnet18",
    "--img-size", "32",
    "--batch-size", "16",
    "--optimizer", "adamw",
    "--sched", "constant",
    "--max-count", "5",
    "--workers", "0",
    "--seed", "3",
    "--no-progress",
    "--no-tensorboard",
]  # fmt: skip


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from training.data.synth import synthesize

    out = tmp_path_factory.mktemp("init") / "synth"
    synthesize(out, 64, 5, 13, workers=1, progress=False, size=(64, 64))
    return out


@pytest.fixture(scope="module")
def parent(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-epoch run to fine-tune from."""
    run = tmp_path_factory.mktemp("parent-runs") / "parent"
    main(
        [
            *ARGS,
            "--data",
            str(tiny_data),
            "--epochs",
            "2",
            "--lr",
            "1e-3",
            "--name",
            "bins-tiny",
            "--out",
            str(run),
        ]
    )
    return run


def _params(path: Path) -> dict[str, torch.Tensor]:
    """The learned tensors of a weights.pt (batch-norm running statistics move in any training)."""
    state = torch.load(path, weights_only=True)
    return {
        k: v
        for k, v in state.items()
        if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))
    }


def _steps(run: Path) -> int:
    return int(torch.load(run / "checkpoint.pt", weights_only=True)["optimizer"]["state"][0]["step"])


def test_init_starts_from_the_parents_weights_with_a_fresh_optimizer_and_names_the_parent(
    parent: Path, tiny_data: Path, tmp_path: Path
) -> None:
    # a parent from before card version 2 serves as well
    card = json.loads((parent / "card.json").read_text())
    card["schema_version"] = 1
    (parent / "card.json").write_text(json.dumps(card))
    # lr 0: whatever the child's weights are after training, they are the ones it started from
    child, scratch = tmp_path / "child", tmp_path / "scratch"
    argv = [*ARGS, "--data", str(tiny_data), "--epochs", "1", "--lr", "0"]
    main([*argv, "--init", str(parent), "--pretrained", "--out", str(child)])
    main([*argv, "--out", str(scratch)])

    loaded, theirs, fresh = (
        _params(child / "weights.pt"),
        _params(parent / "weights.pt"),
        _params(scratch / "weights.pt"),
    )
    assert loaded.keys() == theirs.keys()
    for name, tensor in theirs.items():
        assert torch.equal(loaded[name], tensor), name
    assert not torch.equal(fresh["fc.weight"], theirs["fc.weight"])  # without --init: not the parent's

    # a fresh optimizer and schedule: one epoch's steps, not the parent's two plus one
    assert _steps(parent) == 2 * _steps(child)
    ckpt = torch.load(child / "checkpoint.pt", weights_only=True)
    assert ckpt["epoch"] == 0 and ckpt["scheduler"]["last_epoch"] == _steps(child)
    with (child / "metrics.csv").open() as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [0]

    made = load_card(child)
    assert made.schema_version == 2 and made.trained_from is not None
    assert made.trained_from.parent == ParentRun(
        run_id="parent", name="bins-tiny", version=1, weights_sha256=sha256_file(parent / "weights.pt")
    )
    assert load_card(scratch).trained_from.parent is None  # type: ignore[union-attr]
    recorded = yaml.safe_load((child / "args.yaml").read_text())
    assert recorded["init"] == str(parent) and recorded["pretrained"] is None  # --init wins: nothing fetched


def test_init_names_each_mismatch_with_the_parents_card(
    parent: Path, tiny_data: Path, tmp_path: Path
) -> None:
    argv = [
        *ARGS,
        "--data",
        str(tiny_data),
        "--epochs",
        "1",
        "--init",
        str(parent),
        "--out",
        str(tmp_path / "c"),
    ]

    def refused(*extra: str) -> str:
        with pytest.raises(TrainError) as e:
            main([*argv, *extra])
        return str(e.value)

    msg = refused("--arch", "resnet34")
    assert "architecture resnet18 (this run: --arch resnet34)" in msg and "counts" not in msg
    assert "counts 0..5 (this run: --max-count 3, counts 0..3)" in refused("--max-count", "3")
    assert "its last class is an exact count (this run: --overflow)" in refused("--overflow")
    both = refused("--arch", "resnet34", "--max-count", "7")
    assert "--arch resnet34" in both and "--max-count 7" in both
    assert "not a run folder" in refused("--init", str(tmp_path / "nowhere"))
    assert "needs a folder of its own" in refused("--out", str(parent))
    assert not (tmp_path / "c").exists()  # refused before anything was written


def test_init_loads_the_weights_strictly_and_checks_them_against_the_card(
    parent: Path, tiny_data: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(parent, broken)
    state = torch.load(broken / "weights.pt", weights_only=True)
    del state["fc.bias"]
    torch.save(state, broken / "weights.pt")
    argv = [
        *ARGS,
        "--data",
        str(tiny_data),
        "--epochs",
        "1",
        "--init",
        str(broken),
        "--out",
        str(tmp_path / "c"),
    ]
    with pytest.raises(TrainError, match=r"weights\.pt is not the file its card names"):
        main(argv)
    card = json.loads((broken / "card.json").read_text())
    for artifact in card["artifacts"]:
        if artifact["kind"] == "pytorch":
            artifact["sha256"] = sha256_file(broken / "weights.pt")
    (broken / "card.json").write_text(json.dumps(card))
    with pytest.raises(
        TrainError,
        match=r'does not load into resnet18 with 6 classes: .*Missing key\(s\) in state_dict: "fc\.bias"',
    ):
        main(argv)
