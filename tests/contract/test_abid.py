from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from contract.abid import (
    BAD_METADATA,
    EMPTY_IMAGE,
    MISSING_IMAGE,
    MISSING_METADATA,
    AbidError,
    SkipReport,
    expected_quantity,
    iter_dataset,
    list_keys,
    load_file_list,
    load_split,
    read_metadata,
)
from tests.hw import ABID_SAMPLE, ABID_SPLITS, requires_shared_data

JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 60 + b"\xff\xd9"  # the reader never decodes: bytes suffice


def _write(root: Path, key: str, meta: object | str | None, image: bytes | None = JPEG) -> None:
    (root / "bin-images").mkdir(parents=True, exist_ok=True)
    (root / "metadata").mkdir(parents=True, exist_ok=True)
    if image is not None:
        (root / "bin-images" / f"{key}.jpg").write_bytes(image)
    if meta is not None:
        text = meta if isinstance(meta, str) else json.dumps(meta)
        (root / "metadata" / f"{key}.json").write_text(text)


def _meta(n: int) -> dict:
    return {"BIN_FCSKU_DATA": {"B0": {"asin": "B0", "quantity": n}}, "EXPECTED_QUANTITY": n}


# --- the real sample -------------------------------------------------------------------------


@requires_shared_data
def test_reads_all_real_sample_images_with_their_histogram() -> None:
    items = list(iter_dataset(ABID_SAMPLE))
    assert len(items) == 578
    padded = [i for i in items if len(i.key) == 5]
    unpadded = [i for i in items if len(i.key) != 5]
    assert len(padded) == 528 and len(unpadded) == 50
    hist = Counter(i.count for i in padded)
    # Measured on the data. The data README's 1:47 2:68 3:89 4:87 5:75 do not add up to its own
    # 528 images; these do (336 + 192 = 528), and they equal the official split's labels.
    assert {c: hist[c] for c in range(6)} == {0: 5, 1: 43, 2: 64, 3: 78, 4: 80, 5: 66}
    assert sum(n for c, n in hist.items() if c > 5) == 192
    assert max(hist) == 47
    assert Counter(i.count for i in unpadded) == {0: 10, 1: 20, 2: 20}
    for item in items:
        assert item.image == ABID_SAMPLE / "bin-images" / f"{item.key}.jpg"
        assert item.metadata == ABID_SAMPLE / "metadata" / f"{item.key}.json"
        assert item.size is None


@requires_shared_data
def test_padded_and_unpadded_keys_are_distinct_items() -> None:
    both = {i.key: i for i in iter_dataset(ABID_SAMPLE, keys=["00121", "121"])}
    assert set(both) == {"00121", "121"}
    assert both["121"].image.name == "121.jpg" and both["00121"].image.name == "00121.jpg"
    digest = {k: hashlib.sha256(i.image.read_bytes()).hexdigest() for k, i in both.items()}
    assert digest["121"] != digest["00121"]
    assert (both["00121"].count, both["121"].count) == (3, 0)
    keys = list_keys(ABID_SAMPLE)
    assert "121" in keys and "00121" in keys
    assert keys.index("00121") < keys.index("121")  # natural order, ties by name
    with pytest.raises(AbidError, match=r"0121\.jpg"):  # never re-padded nor stripped
        list(iter_dataset(ABID_SAMPLE, keys=["0121"]))


@requires_shared_data
def test_max_count_filters_and_is_reported() -> None:
    report = SkipReport()
    items = list(iter_dataset(ABID_SAMPLE, max_count=5, report=report))
    assert len(items) == 336 + 50
    assert max(i.count for i in items) == 5
    assert report.over_max_count == 192 and report.total == 0


@requires_shared_data
def test_official_split_maps_index0_to_padded_keys_and_agrees_with_metadata() -> None:
    train = load_split(ABID_SPLITS / "counting_train.json")
    assert len(train) == 324_735
    assert train[0] == ("00005", 4)  # the file starts with [4, 4]: image '%05d.jpg' % (4 + 1)
    assert all(0 <= c <= 5 for _, c in train)
    labels = dict(train)
    sample = {i.key: i.count for i in iter_dataset(ABID_SAMPLE)}
    shared = [k for k in sample if k in labels]
    assert len(shared) == 336
    assert all(labels[k] == sample[k] for k in shared)
    assert len(load_split(ABID_SPLITS / "counting_val.json")) == 36_032


@requires_shared_data
def test_capstone_file_list_keeps_keys_verbatim() -> None:
    entries = load_file_list(ABID_SPLITS / "file_list.json")
    assert len(entries) == 10_441
    assert entries[0] == ("100313", 1)
    assert Counter(c for _, c in entries) == {1: 1228, 2: 2299, 3: 2666, 4: 2373, 5: 1875}
    assert sum(len(k) < 5 for k, _ in entries) == 52  # the unpadded family, e.g. '1000'
    sample = {i.key: i.count for i in iter_dataset(ABID_SAMPLE)}
    shared = [(k, c) for k, c in entries if k in sample]
    assert len(shared) == 331
    assert all(sample[k] == c for k, c in shared)


# --- split file formats ------------------------------------------------------------------------


def test_load_split_small(tmp_path: Path) -> None:
    path = tmp_path / "split.json"
    path.write_text("[[0, 3], [120, 1], [99999, 0], [123455, 5]]")
    assert load_split(path) == [("00001", 3), ("00121", 1), ("100000", 0), ("123456", 5)]


@pytest.mark.parametrize(
    "text", ["{}", "[[1]]", "[[1, -2]]", '[["1", 2]]', "[[1, 2.5]]", "[[true, 1]]", "[1,"]
)
def test_load_split_rejects_malformed(tmp_path: Path, text: str) -> None:
    path = tmp_path / "bad_split.json"
    path.write_text(text)
    with pytest.raises(AbidError, match=r"bad_split\.json"):
        load_split(path)


def test_load_file_list_small_and_malformed(tmp_path: Path) -> None:
    path = tmp_path / "file_list.json"
    path.write_text(
        json.dumps({"10": ["data/metadata/7.json"], "2": ["data/metadata/00007.json", "x/121.json"]})
    )
    assert load_file_list(path) == [("00007", 2), ("121", 2), ("7", 10)]
    for bad in ({"a": []}, {"1": "x.json"}, {"1": ["data/metadata/x.jpg"]}, {"1": ["../.json"]}, []):
        path.write_text(json.dumps(bad))
        with pytest.raises(AbidError, match=r"file_list\.json"):
            load_file_list(path)
    with pytest.raises(AbidError, match="not found"):
        load_file_list(tmp_path / "absent.json")


# --- metadata ------------------------------------------------------------------------------------


def test_expected_quantity_prefers_field_then_sums_skus() -> None:
    assert expected_quantity({"EXPECTED_QUANTITY": 4, "BIN_FCSKU_DATA": {}}) == 4
    skus = {"A": {"quantity": 2}, "B": {"quantity": 5}}
    assert expected_quantity({"BIN_FCSKU_DATA": skus}) == 7
    assert expected_quantity({"BIN_FCSKU_DATA": {}}) == 0
    for bad in ({}, {"EXPECTED_QUANTITY": -1}, {"EXPECTED_QUANTITY": "3"}, {"EXPECTED_QUANTITY": True}):
        with pytest.raises(ValueError):
            expected_quantity(bad)
    with pytest.raises(ValueError, match="quantity"):
        expected_quantity({"BIN_FCSKU_DATA": {"A": {"name": "no quantity"}}})


def test_read_metadata_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    path.write_text("[1, 2]")
    with pytest.raises(AbidError, match=r"m\.json: metadata must be a JSON object"):
        read_metadata(path)
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(AbidError, match=r"m\.json") as e:
        read_metadata(path)
    assert e.value.reason == BAD_METADATA and e.value.path == path


def test_size_from_metadata_when_present(tmp_path: Path) -> None:
    _write(tmp_path, "a", {**_meta(1), "image_width": 64, "image_height": 48})
    _write(tmp_path, "b", {**_meta(2), "image_width": 0, "image_height": 48})
    sizes = {i.key: i.size for i in iter_dataset(tmp_path)}
    assert sizes == {"a": (64, 48), "b": None}


# --- missing and corrupt files --------------------------------------------------------------------


@pytest.fixture()
def damaged(tmp_path: Path) -> Path:
    root = tmp_path / "abid"
    _write(root, "00001", _meta(1))
    _write(root, "00002", "{not json")  # invalid JSON
    _write(root, "00003", _meta(3), image=None)  # missing image
    _write(root, "00004", _meta(4), image=b"")  # zero-byte image
    _write(root, "00005", None)  # missing metadata
    _write(root, "00006", {"EXPECTED_QUANTITY": -3})  # invalid label
    _write(root, "00007", _meta(7))
    (root / "metadata" / "00008.json").mkdir()  # unreadable metadata
    _write(root, "00008", None)
    (root / "bin-images" / "00009.jpg.part").write_bytes(JPEG)  # an unfinished download: ignored
    return root


def test_first_bad_file_raises_with_its_path(damaged: Path) -> None:
    with pytest.raises(AbidError) as e:
        list(iter_dataset(damaged))
    assert e.value.path == damaged / "metadata" / "00002.json"
    assert str(damaged / "metadata" / "00002.json") in str(e.value)
    assert "invalid metadata JSON" in str(e.value)


def test_skip_bad_counts_what_was_skipped(damaged: Path) -> None:
    report = SkipReport()
    items = list(iter_dataset(damaged, skip_bad=True, report=report))
    assert [(i.key, i.count) for i in items] == [("00001", 1), ("00007", 7)]
    assert report.counts() == {BAD_METADATA: 3, EMPTY_IMAGE: 1, MISSING_IMAGE: 1, MISSING_METADATA: 1}
    assert report.total == 6
    assert sorted(p.name for p in report.by_reason[BAD_METADATA]) == [
        "00002.json",
        "00006.json",
        "00008.json",
    ]
    assert report.by_reason[MISSING_IMAGE] == [damaged / "bin-images" / "00003.jpg"]
    assert report.by_reason[EMPTY_IMAGE] == [damaged / "bin-images" / "00004.jpg"]
    assert report.by_reason[MISSING_METADATA] == [damaged / "metadata" / "00005.json"]
    assert "3 bad-metadata" in report.summary()


def test_one_corrupt_file_in_a_copy_of_real_data_is_skipped_and_counted(tmp_path: Path) -> None:
    if not ABID_SAMPLE.is_dir():
        pytest.skip(f"real ABID sample not found at {ABID_SAMPLE}")
    root = tmp_path / "abid"
    keys = ["00001", "00002", "00121", "121"]
    for key in keys:
        _write(root, key, (ABID_SAMPLE / "metadata" / f"{key}.json").read_text())
        (root / "bin-images" / f"{key}.jpg").write_bytes(
            (ABID_SAMPLE / "bin-images" / f"{key}.jpg").read_bytes()
        )
    (root / "metadata" / "00121.json").write_text('{"BIN_FCSKU_DATA": {')  # cut short
    report = SkipReport()
    assert [i.key for i in iter_dataset(root, skip_bad=True, report=report)] == ["00001", "00002", "121"]
    assert report.counts() == {BAD_METADATA: 1}
    assert report.by_reason[BAD_METADATA] == [root / "metadata" / "00121.json"]


def test_keys_are_checked_and_folder_must_exist(tmp_path: Path) -> None:
    _write(tmp_path, "1", _meta(1))
    with pytest.raises(ValueError, match="invalid bin key"):
        list(iter_dataset(tmp_path, keys=["../1"]))
    with pytest.raises(AbidError, match="not an ABID folder"):
        list(iter_dataset(tmp_path / "nowhere"))


# --- junk files never raise anything but AbidError ------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
junk = (
    st.binary(max_size=200)
    | json_values.map(lambda v: json.dumps(v).encode())
    | st.dictionaries(st.text(max_size=3), st.lists(st.text(max_size=20), max_size=3)).map(
        lambda d: json.dumps(d).encode()  # file_list-shaped
    )
    | st.lists(st.lists(st.integers(-3, 10**6) | st.booleans(), max_size=3), max_size=4).map(
        lambda v: json.dumps(v).encode()  # split-shaped
    )
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=junk)
@example(data='{"\u00b2": ["data/metadata/1.json"]}'.encode())  # a digit that int() refuses
def test_junk_files_raise_only_abid_errors(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "junk.json"
    path.write_bytes(data)
    for read in (read_metadata, load_split, load_file_list):
        try:
            read(path)
        except AbidError as e:
            assert e.path == path
    root = tmp_path / "abid"
    _write(root, "00001", None)
    (root / "metadata" / "00001.json").write_bytes(data)
    report = SkipReport()
    items = list(iter_dataset(root, skip_bad=True, report=report))
    assert len(items) + report.total == 1


def test_absurdly_nested_json_is_bad_metadata(tmp_path: Path) -> None:
    path = tmp_path / "deep.json"
    path.write_text("[" * 200_000 + "]" * 200_000)
    with pytest.raises(AbidError, match=r"deep\.json: invalid metadata JSON") as e:
        read_metadata(path)
    assert e.value.reason == BAD_METADATA
    with pytest.raises(AbidError, match=r"deep\.json: invalid JSON"):
        load_split(path)
