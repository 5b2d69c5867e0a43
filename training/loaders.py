"""Data for a training run: items from --data or --cache, the split, the datasets and loaders."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from training.args import TrainError

__all__ = ["load_items", "make_loaders", "make_splits"]

log = logging.getLogger(__name__)


def load_items(args: argparse.Namespace):
    """(items, input spec defaults, dataset name, synthetic?)."""
    from contract.card import InputSpec, ResizeSpec
    from training.cache import load_index
    from training.dataset import is_synthetic, items_from_cache, items_from_dir

    resize = ResizeSpec(method=args.resize, interpolation=args.interp)
    if args.cache is not None:
        try:
            index = load_index(args.cache)
        except (FileNotFoundError, ValueError) as e:
            raise TrainError(str(e)) from e
        if args.img_size is None:
            args.img_size = (index.height, index.width)
        if (index.height, index.width) != tuple(args.img_size) or index.resize != resize:
            log.warning(
                "cache %s holds %dx%d %s/%s images but the model input is %dx%d %s/%s: they are resized "
                "twice, so training-time metrics differ slightly from what the agent computes",
                args.cache,
                index.height,
                index.width,
                index.resize.method,
                index.resize.interpolation,
                *args.img_size,
                resize.method,
                resize.interpolation,
            )
        items = items_from_cache(args.cache)
        dataset, synthetic = index.source, index.synthetic
    else:
        from contract.abid import AbidError

        try:
            items, _report = items_from_dir(args.data)
        except AbidError as e:
            raise TrainError(str(e)) from e
        dataset, synthetic = str(Path(args.data).resolve()), is_synthetic(args.data, items)
    if args.img_size is None:
        args.img_size = (224, 224)
    spec = InputSpec(height=args.img_size[0], width=args.img_size[1], resize=resize)
    return items, spec, dataset, synthetic


def make_splits(args: argparse.Namespace, items, run: Path, resuming: bool):
    from training.dataset import filter_counts
    from training.splits import load_splits_json, parse_split_files, split_items

    items, dropped = filter_counts(items, args.max_count, args.overflow)
    if dropped:
        log.info(
            "left out %d images with more than %d items (add --overflow to keep them)",
            dropped,
            args.max_count,
        )
    if args.limit:
        items = sorted(items, key=lambda it: it.key)[: args.limit]
    saved = run / "splits.json"
    if resuming and saved.is_file():
        return load_splits_json(saved, items)
    try:
        files = parse_split_files(args.split_file)
        return split_items(items, split_files=files or None, ratios=args.split_ratios, seed=args.split_seed)
    except (ValueError, OSError) as e:
        raise TrainError(str(e)) from e


def make_loaders(args, splits, spec, counts, info, device):
    from torch.utils.data import DataLoader, DistributedSampler

    from training.dataset import BalancedSampler, CountDataset, ShardSampler
    from training.transforms import AugmentConfig, eval_transform, train_transform

    # workers deliver uint8 images; they are normalized per batch on the device (BatchNormalizer)
    if args.no_augment:
        ttf = eval_transform(spec, normalize=False)
    else:
        cj = args.color_jitter
        ttf = train_transform(
            spec,
            AugmentConfig(
                hflip=not args.no_hflip,
                vflip=args.vflip,
                degrees=args.affine_degrees,
                translate=args.translate,
                scale=(1 - args.scale_jitter, 1 + args.scale_jitter),
                brightness=cj,
                contrast=cj,
                saturation=cj,
                hue=min(0.5, cj / 10),
            ),
            normalize=False,
        )
    train_ds = CountDataset(splits["train"], ttf, counts=counts, overflow=args.overflow)
    if len(train_ds) == 0 or not splits["val"]:
        raise TrainError(
            f"need training and validation images, got train={len(splits['train'])} "
            f"val={len(splits['val'])}: check --data / --split-file (keys are matched verbatim)"
        )
    if args.balanced:
        sampler = BalancedSampler(
            train_ds.targets, len(counts), num_replicas=info.world_size, rank=info.rank, seed=args.seed
        )
    else:  # also in one process: the order depends on (seed, epoch) only, so a resumed run sees the same
        sampler = DistributedSampler(train_ds, info.world_size, info.rank, shuffle=True, seed=args.seed)
    common = {
        "num_workers": args.workers,
        "pin_memory": device.type == "cuda",
        "persistent_workers": args.workers > 0,
    }
    per_rank = len(sampler)  # type: ignore[arg-type]
    train_dl = DataLoader(
        train_ds, batch_size=args.batch_size, sampler=sampler, drop_last=per_rank > args.batch_size, **common
    )
    eval_dls = {}
    for name in ("val", "test"):
        if splits[name]:
            ds = CountDataset(
                splits[name], eval_transform(spec, normalize=False), counts=counts, overflow=args.overflow
            )
            eval_dls[name] = DataLoader(
                ds,
                batch_size=args.batch_size,
                sampler=ShardSampler(len(ds), info.world_size, info.rank),
                **common,
            )
    return train_ds, train_dl, sampler, eval_dls
