"""The count classifier: any torchvision classification model with a head for counts 0..K.

``build_model("resnet18", 6)`` gives a ResNet18 whose last layer has 6 outputs (counts 0..5, or 0..4
plus an overflow class "5 or more", as the card's ``output`` says). ``pretrained`` names torchvision
weights ("DEFAULT", "IMAGENET1K_V1" or "ResNet18_Weights.IMAGENET1K_V1"); the backbone is loaded with
them and the head is replaced (a fresh, randomly initialised layer).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from contract.card import ModelCard, load_card

__all__ = [
    "PretrainedWeightsError",
    "available_archs",
    "build_model",
    "freeze_backbone",
    "head_module",
    "load_run",
    "load_state_dict_flexible",
    "resolve_weights",
]

log = logging.getLogger(__name__)


class PretrainedWeightsError(RuntimeError):
    """Pretrained weights that are unknown or cannot be fetched (e.g. offline)."""


def available_archs() -> list[str]:
    """Names of torchvision's image classification models (``torchvision.models.list_models``)."""
    import torchvision.models as tvm

    return sorted(tvm.list_models(module=tvm))


def _check_arch(arch: str) -> None:
    names = available_archs()
    if arch not in names:
        raise ValueError(
            f"unknown architecture {arch!r}; torchvision classification models are: {', '.join(names)}"
        )


def resolve_weights(arch: str, pretrained: str):  # -> torchvision.models.WeightsEnum
    """Map ``DEFAULT`` / ``IMAGENET1K_V1`` / ``ResNet18_Weights.IMAGENET1K_V1`` to a weights enum."""
    import torchvision.models as tvm

    _check_arch(arch)
    enum = tvm.get_model_weights(arch)
    name = pretrained.split(".", 1)[1] if "." in pretrained else pretrained
    if "." in pretrained and pretrained.split(".", 1)[0] != enum.__name__:
        raise PretrainedWeightsError(
            f"weights {pretrained!r} are not for {arch} (its weights are {enum.__name__})"
        )
    try:
        return enum[name]
    except KeyError:
        valid = ", ".join(["DEFAULT", *(w.name for w in enum)])
        raise PretrainedWeightsError(f"{arch} has no weights {name!r}; valid: {valid}") from None


def _fetch_error(weights, e: Exception) -> PretrainedWeightsError:
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    fname = weights.url.rsplit("/", 1)[-1]
    return PretrainedWeightsError(
        f"cannot fetch pretrained weights {type(weights).__name__}.{weights.name} from {weights.url}: {e}. "
        f"Offline? Download that file on a connected machine and place it at {hub / fname} "
        f"(set TORCH_HOME to choose the folder; torchvision looks in $TORCH_HOME/hub/checkpoints), "
        f"or train without --pretrained."
    )


def head_module(model: nn.Module) -> tuple[str, nn.Module]:
    """The qualified name and module of the classifier's last layer (its last Linear, or last Conv2d)."""
    last: Optional[tuple[str, nn.Module]] = None
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear):
            last = (name, m)
    if last is None:
        for name, m in model.named_modules():
            if isinstance(m, nn.Conv2d):
                last = (name, m)
    if last is None:
        raise ValueError(f"cannot find the classifier head of {type(model).__name__}")
    return last


def _set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, new)


def build_model(arch: str, num_classes: int, pretrained: Optional[str] = None) -> nn.Module:
    """A torchvision classifier ``arch`` with ``num_classes`` outputs.

    Raises ValueError for an unknown ``arch`` (the message lists the valid names) and
    :class:`PretrainedWeightsError` when ``pretrained`` weights are unknown or cannot be fetched.
    """
    import torchvision.models as tvm

    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    _check_arch(arch)
    if not pretrained:
        return tvm.get_model(arch, weights=None, num_classes=num_classes)
    weights = resolve_weights(arch, pretrained)
    try:
        model = tvm.get_model(arch, weights=weights)
    except (OSError, RuntimeError) as e:  # URLError is an OSError; hub raises RuntimeError on bad files
        raise _fetch_error(weights, e) from e
    name, old = head_module(model)
    if isinstance(old, nn.Linear):
        new: nn.Module = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
    else:
        assert isinstance(old, nn.Conv2d)
        new = nn.Conv2d(old.in_channels, num_classes, kernel_size=old.kernel_size, stride=old.stride)
    _set_module(model, name, new)
    log.info("built %s with %s weights, new %d-class head at %s", arch, weights.name, num_classes, name)
    return model


def freeze_backbone(model: nn.Module) -> list[str]:
    """Train only the head: every other parameter gets ``requires_grad=False``. Returns the head's names.

    Batch-norm statistics of the frozen backbone are still updated in ``train()`` mode; call
    :func:`set_backbone_eval` after ``model.train()`` to keep them fixed.
    """
    name, _ = head_module(model)
    trainable = []
    for pname, p in model.named_parameters():
        keep = pname == name or pname.startswith(name + ".")
        p.requires_grad_(keep)
        if keep:
            trainable.append(pname)
    return trainable


def set_backbone_eval(model: nn.Module) -> None:
    """Put batch-norm layers whose parameters are frozen into eval mode (fixed running stats)."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and not any(
            p.requires_grad for p in m.parameters()
        ):
            m.eval()


def load_state_dict_flexible(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load weights saved from a DDP-wrapped or ``torch.compile``d model too (prefixes stripped)."""
    cleaned = {}
    for k, v in state.items():
        for prefix in ("module.", "_orig_mod."):
            while k.startswith(prefix):
                k = k[len(prefix) :]
        cleaned[k] = v
    model.load_state_dict(cleaned)


def load_run(run_dir: Path | str) -> tuple[nn.Module, ModelCard]:
    """The trained model of a run folder (eval mode, on CPU) and its card.

    Reads ``card.json`` for the architecture and head size and ``weights.pt`` (a state dict).
    """
    run = Path(run_dir)
    card = load_card(run)
    weights = run / "weights.pt"
    if not weights.is_file():
        raise FileNotFoundError(f"no weights at {weights}: is {run} a finished training run?")
    model = build_model(card.model.arch, card.model.num_classes, pretrained=None)
    state = torch.load(weights, map_location="cpu", weights_only=True)
    load_state_dict_flexible(model, state)
    model.eval()
    return model, card
