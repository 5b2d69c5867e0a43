"""bench/run_all.py: each bench's output becomes rows against its same-run baseline (no bench runs)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def run_all() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_run_all", REPO / "bench" / "run_all.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def test_every_bench_is_listed(run_all: ModuleType) -> None:
    listed = {b.name for b in run_all.BENCHES} | {b.name for b in run_all._extra_benches()}
    on_disk = {p.stem for p in (REPO / "bench").glob("*.py")} - {
        "run_all",
        "soak",
        "soak_mqtt",
        "soak_report",
    }
    assert on_disk <= listed


def test_parsers(run_all: ModuleType, tmp_path: Path) -> None:
    synth = (
        "  generate + encode:  20.0 images/s  (50 ms)\n  baseline (encode a blank only):  1000.0 images/s\n"
    )
    assert run_all.parse_synth(synth, tmp_path)[0][1:] == ("20.0", "1000.0", 0.02)
    table = "naive: PIL  200  1.00x\ncache (npy)  600  3.00x\n"
    assert [r[3] for r in run_all.parse_ratio_table(table, tmp_path)] == [1.0, 3.0]
    fmt = "ort-fp32  40.0  30.0  1.00  1.00\nqdq-u8s8-pc  10.0  8.0  4.00  3.75\n"
    assert run_all.parse_int8_formats(fmt, tmp_path)[1][1:] == ("10.0", "40.0", 4.0)
    pipe = {
        "precision": "int8",
        "batch": 4,
        "frames": 40,
        "pipeline_fps": 9.0,
        "bare_fps": 10.0,
        "ratio": 0.9,
    }
    assert run_all.parse_agent_pipeline("log line\n" + json.dumps(pipe), tmp_path)[0][3] == 0.9
    res = {
        "archs": {
            "resnet18": {
                n: {"b1_median_ms": ms, "b8_img_per_s": 8 / ms}
                for n, ms in (("pytorch-fp32", 100.0), ("ort-int8-cpu", 10.0))
            }
        }
    }
    (tmp_path / "infer.json").write_text(json.dumps(res))
    assert [r[3] for r in run_all.parse_infer("", tmp_path)] == [1.0, 10.0, 1.0, 10.0]


def test_report_has_the_machine_and_a_table(run_all: ModuleType) -> None:
    bench = run_all.BENCHES[0]
    result = run_all.Result(bench, "ok", 1.0, [("m", "2", "1", 2.0)], "", "python bench/synth.py")
    text = run_all.report([result], True, "load average: 1", "load average: 1")
    assert "INT8-relevant instruction sets" in text and "| m | 2 | 1 | 2.00x |" in text
