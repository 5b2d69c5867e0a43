"""Train/val/test splits (:mod:`training.splits`): the seeded random split and official split files."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from training.dataset import Sample
from training.splits import parse_split_files, random_split, split_items


def test_random_split_is_seeded_stratified_and_disjoint() -> None:
    items = [Sample(key=f"{i:05d}", image=Path("x"), count=i % 4) for i in range(200)]
    a = random_split(items, (0.6, 0.2, 0.2), seed=5)
    b = random_split(list(reversed(items)), (0.6, 0.2, 0.2), seed=5)
    assert [it.key for it in a["val"]] == [it.key for it in b["val"]]
    assert (len(a["train"]), len(a["val"]), len(a["test"])) == (120, 40, 40)
    assert Counter(it.count for it in a["val"]) == {0: 10, 1: 10, 2: 10, 3: 10}
    keys = [set(it.key for it in a[s]) for s in ("train", "val", "test")]
    assert not (keys[0] & keys[1] or keys[0] & keys[2] or keys[1] & keys[2])
    with pytest.raises(ValueError, match="sum"):
        random_split(items, (0.5, 0.2, 0.2))


def test_official_split_files_map_to_keys_verbatim(tmp_path: Path) -> None:
    items = [Sample(key=k, image=Path("x"), count=1) for k in ("00001", "00002", "00121", "121")]
    (tmp_path / "counting_train.json").write_text(json.dumps([[0, 1], [120, 1], [999, 3]]))
    (tmp_path / "counting_val.json").write_text(json.dumps([[1, 1]]))
    files = parse_split_files([tmp_path / "counting_train.json", f"val={tmp_path / 'counting_val.json'}"])
    splits, how = split_items(items, split_files=files)
    assert [it.key for it in splits["train"]] == ["00001", "00121"]  # never the unpadded "121"
    assert [it.key for it in splits["val"]] == ["00002"] and splits["test"] == []
    assert "counting_train.json" in how
