"""The pieces of training: model registry and pretrained weights, loss, metrics, samplers,
schedules and the ``binwatch train`` command line (splits: test_splits.py)."""

from __future__ import annotations

import math
import urllib.error
from collections import Counter
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from binwatch.cli import app
from training.dataset import BalancedSampler, ShardSampler
from training.engine import CountLoss, evaluate, metrics_from_confusion
from training.model import PretrainedWeightsError, build_model, freeze_backbone, head_module
from training.optim import SCHEDULES, build_optimizer, build_scheduler

# -- model -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v3_small"])
def test_build_model_any_torchvision_classifier(arch: str) -> None:
    model = build_model(arch, 7).eval()
    with torch.no_grad():
        assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 7)


def test_unknown_arch_lists_valid_names() -> None:
    with pytest.raises(ValueError, match=r"resnet18.*resnet50|resnet50.*resnet18"):
        build_model("resnet17", 6)


def test_pretrained_offline_error_names_weights_and_where_to_put_them(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(url, *a, **k):
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(PretrainedWeightsError) as e:
        build_model("resnet18", 6, "DEFAULT")
    msg = str(e.value)
    assert "ResNet18_Weights.IMAGENET1K_V1" in msg
    assert str(tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth") in msg
    with pytest.raises(PretrainedWeightsError, match="valid: DEFAULT, IMAGENET1K_V1"):
        build_model("resnet18", 6, "IMAGENET9K")


def test_pretrained_weights_placed_in_torch_home_are_used(monkeypatch, tmp_path: Path) -> None:
    """What the offline error tells a user to do works: no network needed."""
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    torch.manual_seed(42)
    reference = torchvision.models.resnet18()
    ckpt = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    ckpt.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), ckpt)
    model = build_model("resnet18", 6, "ResNet18_Weights.IMAGENET1K_V1")
    assert torch.equal(model.conv1.weight, reference.conv1.weight)
    assert model.fc.out_features == 6
    trainable = freeze_backbone(model)
    assert trainable == ["fc.weight", "fc.bias"] and head_module(model)[0] == "fc"
    assert [n for n, p in model.named_parameters() if p.requires_grad] == trainable


# -- loss and metrics ------------------------------------------------------------------------------


def test_ordinal_loss_penalises_far_misses_more() -> None:
    counts = torch.arange(6, dtype=torch.float32)
    target = torch.tensor([2])
    near = torch.full((1, 6), -5.0)
    near[0, 3] = 5.0
    far = torch.full((1, 6), -5.0)
    far[0, 5] = 5.0
    plain, ordinal = CountLoss(counts), CountLoss(counts, ordinal_lambda=0.5)
    assert plain(near, target) == pytest.approx(float(plain(far, target)), rel=1e-5)
    assert ordinal(far, target) > ordinal(near, target) + 1.0


def test_metrics_follow_abid_challenge_definitions() -> None:
    # rows = true class, cols = predicted: 3 right, one 0->2 (err 2), one 2->1 (err 1)
    conf = torch.tensor([[1, 0, 1], [0, 1, 0], [0, 1, 1]])
    m = metrics_from_confusion(conf, torch.tensor([0.0, 1.0, 2.0]))
    assert m["n"] == 5 and m["accuracy"] == pytest.approx(3 / 5)
    assert m["rmse"] == pytest.approx(math.sqrt((4 + 1) / 5)) and m["mae"] == pytest.approx(3 / 5)
    assert m["per_class_accuracy"] == {"0": 0.5, "1": 1.0, "2": 0.5}


def test_evaluate_over_a_loader() -> None:
    class Fixed(torch.nn.Module):
        def forward(self, x):  # predicts class = first pixel value
            return torch.nn.functional.one_hot(x[:, 0, 0, 0].long(), 3).float()

    xs = torch.tensor([0, 1, 2, 2]).float().view(4, 1, 1, 1)
    ys = torch.tensor([0, 1, 1, 2])
    m = evaluate(Fixed(), [(xs[:2], ys[:2]), (xs[2:], ys[2:])], count_values=torch.tensor([0.0, 1, 2]))
    assert m["accuracy"] == 0.75 and m["rmse"] == pytest.approx(0.5) and m["confusion"][1] == [0, 1, 1]


# -- samplers, schedules ---------------------------------------------------------------------------


def test_balanced_sampler_evens_out_classes_and_shards_ranks() -> None:
    targets = [0] * 900 + [1] * 90 + [2] * 10
    ranks = [BalancedSampler(targets, 3, num_replicas=2, rank=r, seed=1) for r in range(2)]
    drawn = [targets[i] for s in ranks for i in s]
    hist = Counter(drawn)
    assert len(drawn) == 1000 and all(250 < hist[c] < 420 for c in range(3))
    ranks[0].set_epoch(1)
    assert list(ranks[0]) != list(BalancedSampler(targets, 3, num_replicas=2, rank=0, seed=1))
    assert sorted(i for r in range(3) for i in ShardSampler(10, 3, r)) == list(range(10))


@pytest.mark.parametrize("name", SCHEDULES)
def test_schedules_warm_up_and_decay(name: str) -> None:
    model = torch.nn.Linear(2, 2)
    opt = build_optimizer(model, "sgd", 0.1)
    sched = build_scheduler(
        opt, name, epochs=4, steps_per_epoch=10, warmup_epochs=1, step_epochs=1, sgdr_t0=2
    )
    lrs = []
    for _ in range(40):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert max(lrs) <= 0.1 + 1e-9
    if name != "sgdr":
        assert lrs[0] < lrs[9]  # warm-up
    if name in ("cosine", "onecycle", "step"):
        assert lrs[-1] < 0.5 * max(lrs)
    if name == "sgdr":
        assert lrs[21] > lrs[19]  # restart after 2 epochs


# -- command line ----------------------------------------------------------------------------------


def test_train_help_lists_options() -> None:
    res = CliRunner().invoke(app, ["train", "--help"])
    assert res.exit_code == 0
    flags = ["--arch", "--pretrained", "--freeze-backbone", "--sched", "--ordinal-lambda", "--resume"]
    flags += ["--accum-steps", "--amp", "--compile", "--balanced", "--profile", "--split-file"]
    assert all(flag in res.output for flag in flags)


def test_train_bad_input_exits_2_with_the_cause(tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["train", "--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and "--data" in res.output
    res = runner.invoke(app, ["train", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and "no such folder" in res.output
    (tmp_path / "d" / "bin-images").mkdir(parents=True)
    (tmp_path / "d" / "metadata").mkdir()
    res = runner.invoke(app, ["train", "--data", str(tmp_path / "d"), "--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and "need training and validation images" in res.output
    res = runner.invoke(
        app, ["train", "--data", str(tmp_path / "d"), "--out", str(tmp_path / "r"), "--arch", "x"]
    )
    assert res.exit_code == 2 and "unknown architecture 'x'" in res.output and "resnet34" in res.output
