"""Command-line arguments of ``binwatch train`` (also ``torchrun -m training.train``)."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

__all__ = ["TrainError", "check_args", "check_init", "get_args_parser", "parse_args", "resolve_args"]


class TrainError(ValueError):
    """A bad argument or dataset; the message names the cause and the fix."""


def _size(text: str) -> tuple[int, int]:
    parts = text.lower().replace("x", ",").split(",")
    try:
        hw = [int(p) for p in parts if p.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--img-size {text!r}: use S or HxW, e.g. 224 or 224x320") from None
    if len(hw) == 1:
        hw = hw * 2
    if len(hw) != 2 or min(hw) <= 0:
        raise argparse.ArgumentTypeError(f"--img-size {text!r}: use S or HxW, e.g. 224 or 224x320")
    return hw[0], hw[1]


def _ratios(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--split-ratios {text!r}: use e.g. 0.6,0.2,0.2") from None


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        "binwatch train", description="Train a bin item-count classifier.", add_help=True
    )
    _add_data_args(p)
    _add_model_args(p)
    _add_optimisation_args(p)
    _add_augmentation_args(p)
    _add_system_args(p)
    _add_run_args(p)
    return p


def _add_data_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--data", type=Path, help="ABID-layout folder (bin-images/ + metadata/)")
    g.add_argument(
        "--cache", type=Path, help="prepared cache (binwatch data prepare); read instead of --data"
    )
    g.add_argument(
        "--split-file",
        action="append",
        default=[],
        help="official split file(s): counting_train.json, counting_val.json (name from the file, "
        "or NAME=FILE); a file_list.json restricts the keys, then splits at random. Repeatable.",
    )
    g.add_argument(
        "--split-ratios", type=_ratios, default=[0.6, 0.2, 0.2], help="random train,val,test split"
    )
    g.add_argument("--split-seed", type=int, default=None, help="seed of the random split (default --seed)")
    g.add_argument("--max-count", type=int, default=5, help="largest count of the head (classes 0..K)")
    g.add_argument(
        "--overflow", action="store_true", help="the last class means 'K or more' (keeps every image)"
    )
    g.add_argument("--limit", type=int, default=None, help="use only the first N images (smoke runs)")
    g.add_argument("--workers", type=int, default=2, help="DataLoader worker processes per rank")


def _add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--arch", default="resnet18", help="any torchvision classification model name")
    g.add_argument(
        "--pretrained",
        nargs="?",
        const="DEFAULT",
        default=None,
        help="torchvision weights (DEFAULT, IMAGENET1K_V1, ResNet18_Weights.IMAGENET1K_V1)",
    )
    g.add_argument("--freeze-backbone", action="store_true", help="train only the head (transfer learning)")
    g.add_argument(
        "--img-size", type=_size, default=None, help="input S or HxW (default 224, or the cache's)"
    )
    g.add_argument("--resize", choices=["stretch", "letterbox"], default="stretch")
    g.add_argument("--interp", choices=["area", "linear", "cubic"], default="area")


def _add_optimisation_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, default=30)
    g.add_argument("--batch-size", type=int, default=64, help="per rank")
    g.add_argument("--accum-steps", type=int, default=1, help="gradient accumulation steps")
    g.add_argument("--optimizer", choices=["sgd", "adamw"], default="sgd")
    g.add_argument("--lr", type=float, default=None, help="peak learning rate (default 0.05 sgd, 1e-3 adamw)")
    g.add_argument("--momentum", type=float, default=0.9)
    g.add_argument("--nesterov", action="store_true")
    g.add_argument("--weight-decay", type=float, default=None, help="default 1e-4 sgd, 0.05 adamw")
    g.add_argument("--sched", choices=["cosine", "step", "onecycle", "sgdr", "constant"], default="cosine")
    g.add_argument("--warmup-epochs", type=float, default=0.0)
    g.add_argument("--min-lr-ratio", type=float, default=0.0, help="cosine/sgdr floor as a fraction of --lr")
    g.add_argument("--step-epochs", type=int, default=30, help="step schedule: decay every N epochs")
    g.add_argument("--gamma", type=float, default=0.1, help="step schedule: decay factor")
    g.add_argument("--sgdr-t0", type=int, default=10, help="SGDR: first restart period (epochs)")
    g.add_argument("--sgdr-tmult", type=int, default=1, help="SGDR: period multiplier")
    g.add_argument("--label-smoothing", type=float, default=0.0)
    g.add_argument("--ordinal-lambda", type=float, default=0.0, help="loss += lambda * (E[count] - y)^2")
    g.add_argument("--balanced", action="store_true", help="class-balanced sampling")
    g.add_argument("--clip-grad", type=float, default=None, help="max gradient norm")


def _add_augmentation_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("augmentation (no crops: they cut items out)")
    g.add_argument("--no-augment", action="store_true", help="train on the eval transform")
    g.add_argument("--no-hflip", action="store_true")
    g.add_argument("--vflip", action="store_true")
    g.add_argument("--affine-degrees", type=float, default=5.0)
    g.add_argument("--translate", type=float, default=0.03)
    g.add_argument("--scale-jitter", type=float, default=0.05)
    g.add_argument("--color-jitter", type=float, default=0.2)


def _add_system_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("system")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    g.add_argument(
        "--amp", choices=["auto", "none", "bf16", "fp16"], default="auto", help="auto: bf16 on CUDA"
    )
    g.add_argument(
        "--channels-last", action=argparse.BooleanOptionalAction, default=None, help="default: on CUDA"
    )
    g.add_argument("--compile", action="store_true", help="torch.compile the model")
    g.add_argument("--sync-bn", action="store_true", help="DDP on GPUs: synchronise batch-norm statistics")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--deterministic", action="store_true")


def _add_run_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("run")
    g.add_argument("--out", type=Path, required=False, help="run folder")
    g.add_argument(
        "--resume",
        nargs="?",
        const="auto",
        default=None,
        help="continue from RUN/checkpoint.pt (or the given checkpoint); --epochs is the new total",
    )
    g.add_argument(
        "--init",
        type=Path,
        default=None,
        metavar="RUN",
        help="fine-tune from RUN (weights.pt + card.json): same --arch, --max-count and --overflow as its "
        "card, its weights loaded, a fresh optimizer and schedule; the card records RUN as the parent",
    )
    g.add_argument("--exist-ok", action="store_true", help="overwrite a run folder that holds a run")
    g.add_argument(
        "--patience", type=int, default=0, help="early stopping after N epochs without improvement"
    )
    g.add_argument("--select-by", choices=["accuracy", "rmse", "loss"], default="accuracy")
    g.add_argument("--profile", action="store_true", help="write a torch.profiler trace to RUN/profile/")
    g.add_argument("--profile-steps", type=int, default=5)
    g.add_argument("--no-progress", action="store_true")
    g.add_argument("--no-tensorboard", action="store_true")
    g.add_argument("--name", default=None, help="model name in the card (default ARCH-count)")
    g.add_argument("--model-version", type=int, default=1)
    g.add_argument("--config", type=Path, default=None, help="YAML of defaults (e.g. a run's args.yaml)")


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parse ``argv``; a ``--config`` YAML supplies defaults that command-line flags override."""
    parser = get_args_parser()
    pre, _ = parser.parse_known_args(argv)
    if pre.config is not None:
        import yaml

        try:
            conf = yaml.safe_load(Path(pre.config).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as e:
            raise TrainError(f"cannot read --config {pre.config}: {e}") from e
        known = {a.dest for a in parser._actions}
        unknown = sorted(set(conf) - known)
        if unknown:
            raise TrainError(f"--config {pre.config}: unknown keys {unknown}")
        for key in ("img_size",):
            if isinstance(conf.get(key), list):
                conf[key] = tuple(conf[key])
        parser.set_defaults(**conf)
    return parser.parse_args(argv)


def resolve_args(args: argparse.Namespace, device_type: str) -> None:
    """Fill defaults that depend on other choices (done once; args.yaml records the result)."""
    import torch

    if args.lr is None:
        args.lr = 0.05 if args.optimizer == "sgd" else 1e-3
    if args.weight_decay is None:
        args.weight_decay = 1e-4 if args.optimizer == "sgd" else 0.05
    if args.split_seed is None:
        args.split_seed = args.seed
    if args.amp == "auto":
        if device_type == "cuda":
            args.amp = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            args.amp = "none"
    if args.channels_last is None:
        args.channels_last = device_type == "cuda"
    if args.init is not None and args.pretrained:
        logging.getLogger("training.train").info(
            "--pretrained %s not fetched: the weights come from --init %s", args.pretrained, args.init
        )
        args.pretrained = None


def check_args(args: argparse.Namespace) -> None:
    if args.data is None and args.cache is None:
        raise TrainError("give --data DIR (ABID layout) or --cache CACHE (binwatch data prepare)")
    if args.out is None:
        raise TrainError("give --out RUN: the run folder to write weights, card.json and logs into")
    if args.epochs < 1 or args.batch_size < 1 or args.accum_steps < 1:
        raise TrainError("--epochs, --batch-size and --accum-steps must be >= 1")
    if args.max_count < 1:
        raise TrainError("--max-count must be >= 1 (the head needs at least two classes)")
    for name in ("data", "cache"):
        path = getattr(args, name)
        if path is not None and not Path(path).is_dir():
            raise TrainError(f"--{name} {path}: no such folder")
    from training.model import available_archs

    if args.arch not in available_archs():
        raise TrainError(
            f"unknown architecture {args.arch!r}; torchvision classification models are: "
            + ", ".join(available_archs())
        )
    if args.init is not None:
        check_init(args)
    if args.resume is None and not args.exist_ok and (Path(args.out) / "checkpoint.pt").exists():
        raise TrainError(
            f"{args.out} already holds a run: pass --resume to continue it or --exist-ok to overwrite"
        )


def check_init(args: argparse.Namespace) -> None:
    """``--init RUN``: a run folder with weights.pt and a card whose architecture and classes are this
    run's (each mismatch named, with the flag that fixes it), other than ``--out``."""
    from contract.base import ContractError
    from contract.card import load_card

    run = Path(args.init)
    if not (run / "weights.pt").is_file() or not (run / "card.json").is_file():
        raise TrainError(f"--init {run}: not a run folder (it needs weights.pt and card.json)")
    if run.resolve() == Path(args.out).resolve():
        raise TrainError(f"--init {run} is the --out folder: the fine-tuned run needs a folder of its own")
    try:
        card = load_card(run / "card.json")
    except (ContractError, OSError) as e:
        raise TrainError(f"--init {run}: {e}") from e
    counts = list(range(args.max_count + 1))
    wrong = []
    if card.model.arch != args.arch:
        wrong.append(f"architecture {card.model.arch} (this run: --arch {args.arch})")
    if card.output.counts != counts:
        head, k = card.output.counts, args.max_count
        wrong.append(f"counts {head[0]}..{head[-1]} (this run: --max-count {k}, counts 0..{k})")
    if card.output.overflow != args.overflow:
        last = "means 'that many or more'" if card.output.overflow else "is an exact count"
        wrong.append(
            f"its last class {last} (this run: {'--overflow' if args.overflow else 'no --overflow'})"
        )
    if wrong:
        raise TrainError(
            f"--init {run}: its card does not match this run: {'; '.join(wrong)}. "
            "Fine-tuning keeps the parent's architecture and classes: pass the parent's values."
        )
