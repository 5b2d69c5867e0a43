"""``binwatch data prepare``: the pre-resized cache, its index, resuming, and parity with the agent."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from agent.surface import decode_jpeg, preprocess, resize_frame
from binwatch.cli import app
from contract.card import InputSpec
from tests.hw import requires_shared_data
from training.dataset import CountDataset, items_from_cache, read_image
from training.prepare import load_index, prepare
from training.splits import split_items
from training.transforms import eval_transform


@pytest.fixture(scope="module")
def small_synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from training.data.synth import synthesize

    out = tmp_path_factory.mktemp("prep") / "synth"
    synthesize(out, 24, 5, 3, workers=1, progress=False, size=(120, 90))
    return out


def test_cli_prepares_cache_with_index(small_synth: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    res = CliRunner().invoke(
        app, ["data", "prepare", str(small_synth), "--out", str(cache), "--size", "32x48", "--workers", "2"]
    )
    assert res.exit_code == 0, res.output
    index = load_index(cache)
    assert (index.height, index.width, index.encoding, index.synthetic) == (32, 48, "npy", True)
    assert len(index.items) == 24
    meta = {
        p.stem: json.loads(p.read_text())["EXPECTED_QUANTITY"]
        for p in (small_synth / "metadata").glob("*.json")
    }
    for e in index.items:
        assert e.count == meta[e.key]
        assert (e.src_width, e.src_height) == (120, 90)
        img = read_image(cache / e.file)
        assert img.shape == (32, 48, 3) and img.dtype == np.uint8
    # 120x90 -> 48x32 is less than 4x, so at most a 2x DCT-scaled decode was used
    assert {e.reduce for e in index.items} <= {1, 2}


def test_cached_image_equals_agent_resize_without_reduced_decoding(small_synth: Path, tmp_path: Path) -> None:
    spec = InputSpec(height=30, width=40)
    index, failures = prepare(
        small_synth, tmp_path / "c", spec, encoding="png", reduce_margin=None, workers=1
    )
    assert not failures and all(e.reduce == 1 for e in index.items)
    for e in index.items:
        want = resize_frame(decode_jpeg((small_synth / "bin-images" / f"{e.key}.jpg").read_bytes()), spec)
        assert np.array_equal(read_image(tmp_path / "c" / e.file), want)


def test_resume_decodes_only_missing_images(small_synth: Path, tmp_path: Path) -> None:
    spec = InputSpec(height=16, width=16)
    cache = tmp_path / "c"
    prepare(small_synth, cache, spec, workers=1)
    index = load_index(cache)
    gone, kept = cache / index.items[3].file, cache / index.items[0].file
    gone.unlink()
    before = kept.stat().st_mtime_ns, kept.stat().st_ino
    seen: list[str] = []
    again, failures = prepare(small_synth, cache, spec, workers=1, on_item=lambda k, e: seen.append(k))
    assert not failures and gone.is_file() and len(seen) == 24
    assert (kept.stat().st_mtime_ns, kept.stat().st_ino) == before  # not decoded nor written again
    assert [e.key for e in again.items] == [e.key for e in index.items]


def test_other_settings_in_same_folder_are_refused(small_synth: Path, tmp_path: Path) -> None:
    prepare(small_synth, tmp_path / "c", InputSpec(height=16, width=16), workers=1)
    with pytest.raises(ValueError, match="other settings"):
        prepare(small_synth, tmp_path / "c", InputSpec(height=24, width=24), workers=1)


def test_split_files_are_recorded_and_used(small_synth: Path, tmp_path: Path) -> None:
    keys = sorted(p.stem for p in (small_synth / "metadata").glob("*.json"))
    # abid_challenge format: [index0, count], key = '%05d' % (index0 + 1)
    train = [[int(k) - 1, 0] for k in keys[:14]]
    val = [[int(k) - 1, 0] for k in keys[14:20]]
    (tmp_path / "counting_train.json").write_text(json.dumps(train))
    (tmp_path / "counting_val.json").write_text(json.dumps(val))
    res = CliRunner().invoke(
        app,
        ["data", "prepare", str(small_synth), "--out", str(tmp_path / "c"), "--size", "16", "--workers", "1",
         "--split-file", str(tmp_path / "counting_train.json"),
         "--split-file", str(tmp_path / "counting_val.json")],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    items = items_from_cache(tmp_path / "c")
    assert len(items) == 20  # only keys listed in the split files
    splits, how = split_items(items)
    assert [it.key for it in splits["train"]] == keys[:14]
    assert [it.key for it in splits["val"]] == keys[14:20]
    assert splits["test"] == [] and "cache" in how


def test_cli_bad_input_exits_2(tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["data", "prepare", str(tmp_path / "nope"), "--out", str(tmp_path / "c")])
    assert res.exit_code == 2 and "no such folder" in res.output
    res = runner.invoke(app, ["data", "prepare", str(tmp_path), "--out", str(tmp_path / "c"), "--size", "ab"])
    assert res.exit_code == 2 and "bad option" in res.output


@requires_shared_data
def test_real_sample_cache_is_close_to_agent_preprocessing(abid_sample: Path, tmp_path: Path) -> None:
    """Reduced (DCT-scaled) JPEG decoding on real images: small, bounded deviation from the agent."""
    keys = sorted(p.stem for p in (abid_sample / "bin-images").glob("*.jpg"))[::10]
    spec = InputSpec(height=96, width=96)
    index, failures = prepare(abid_sample, tmp_path / "c", spec, keys=keys, workers=2)
    assert not failures and len(index.items) == len(keys)
    assert sum(e.reduce > 1 for e in index.items) > len(keys) // 2  # ABID images are 240..1069 px
    tf = eval_transform(spec)
    ds = CountDataset(items_from_cache(tmp_path / "c"), tf, counts=list(range(200)))
    diffs = []
    for e, (x, _y) in zip(index.items, ds, strict=True):
        ref = preprocess(decode_jpeg((abid_sample / "bin-images" / f"{e.key}.jpg").read_bytes()), spec)
        diffs.append(float(np.abs(x.numpy() - ref).mean()) * 0.226 * 255)  # in grey levels
    assert np.mean(diffs) < 3.0, f"mean deviation {np.mean(diffs):.2f} grey levels"
