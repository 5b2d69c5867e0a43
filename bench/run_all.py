"""Run every benchmark in bench/ and write one report: bench/results.md.

    python bench/run_all.py [--quick] [--out bench/results.md] [--only synth,infer] [--with-soak MIN]

Each bench runs as a subprocess, with small settings under ``--quick``; every ratio is against a
baseline the same bench measured in the same run. The report starts with the machine (CPU, cores,
memory, INT8-relevant instruction sets from /proc/cpuinfo, OS, Python, package versions) and the
load average before and after. bench/soak.py runs only with ``--with-soak MIN``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Optional

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
INT8_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16")
PACKAGES = ["torch", "onnxruntime", "numpy", "paho-mqtt", "opencv-python", "opencv-python-headless"]

_LOADS: list[float] = []  # 1-minute load average at the start and the end of the run
_NOTE: list[str] = []  # --note: what else ran

# One row of a bench's table: what, its value, the same-run baseline, value / baseline (None: no ratio).
Row = tuple[str, str, str, Optional[float]]


@dataclass
class Bench:
    name: str
    quick: list[str]
    full: list[str] = field(default_factory=list)
    parse: Callable[[str, Path], list[Row]] = lambda out, tmp: []
    baseline: str = ""  # what the ratios compare against
    json_file: bool = False  # the bench writes its JSON to ``--json PATH`` (infer.py)

    @property
    def script(self) -> Path:
        return BENCH / f"{self.name}.py"


def _num(pattern: str, text: str) -> float:
    m = re.search(pattern, text, re.MULTILINE)
    if m is None:
        raise ValueError(f"no match for {pattern!r}")
    return float(m.group(1))


def _json_stdout(out: str) -> dict[str, Any]:
    return json.loads(out[out.index("{") : out.rindex("}") + 1])


def parse_synth(out: str, tmp: Path) -> list[Row]:
    synth = _num(r"generate \+ encode:\s+([\d.]+) images/s", out)
    base = _num(r"baseline[^:]*:\s+([\d.]+) images/s", out)
    return [("synthetic bins, generate + encode (images/s)", f"{synth:.1f}", f"{base:.1f}", synth / base)]


def parse_ratio_table(out: str, tmp: Path) -> list[Row]:
    """Lines ``name  value [unit]  ratio x`` (data.py, train_amp.py); the first line is the baseline."""
    rows: list[Row] = []
    pat = re.compile(r"^(\S.*?)\s+([\d.]+)(?: images/s)?\s+([\d.]+)x$")
    matches = [m for m in (pat.match(line.strip()) for line in out.splitlines()) if m]
    for m in matches:
        rows.append((m.group(1), m.group(2), matches[0].group(2), float(m.group(3))))
    return rows


def parse_int8_formats(out: str, tmp: Path) -> list[Row]:
    pat = re.compile(r"^(\S+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)$")
    ms = [m for m in (pat.match(line.strip()) for line in out.splitlines()) if m]
    base = next((m[2] for m in ms if m[1] == "ort-fp32"), "")
    return [(f"{m[1]}: batch-1 median ms (best {m[3]})", m[2], base, float(m[4])) for m in ms]


def parse_agent_pipeline(out: str, tmp: Path) -> list[Row]:
    r = _json_stdout(out)
    rows: list[Row] = [
        (
            f"agent pipeline frames/s ({r['precision']}, batch {r['batch']}, {r['frames']} frames)",
            f"{r['pipeline_fps']}",
            f"{r['bare_fps']}",
            r["ratio"],
        )
    ]
    for name in ("pipeline", "paced"):
        f2b = r.get(name, {}).get("frame_to_broker_ms")
        if f2b:
            rows.append(
                (f"frame-to-broker ms p50 / p99 ({name})", f"{f2b['p50']:.1f} / {f2b['p99']:.1f}", "", None)
            )
    return rows


def parse_fleet(out: str, tmp: Path) -> list[Row]:
    r = _json_stdout(out)
    h, f = r["healthy"], r.get("failing", {})
    rows: list[Row] = [
        (
            f"push to {r['devices']} devices until all active (s; exit {h['exit']})",
            f"{h['push_to_all_active_s']}",
            f"{r['transfer_each_once_s']}",
            h["ratio_to_transfer"],
        )
    ]
    if f:
        state = f.get("state", {})
        what = f"refusing {f['refusing_devices']}, max {f['max_failures']}: {state.get('status')}"
        rows.append((f"rollout with refusing devices (s; {what})", f"{f['seconds']}", "", None))
    return rows


def parse_infer(out: str, tmp: Path) -> list[Row]:
    r = json.loads((tmp / "infer.json").read_text())
    rows: list[Row] = []
    for arch, res in r["archs"].items():
        base = res["pytorch-fp32"]["b1_median_ms"]
        for backend, v in res.items():
            speed = base / v["b1_median_ms"]
            rows.append(
                (
                    f"{arch} {backend}: batch-1 median ms (speed-up)",
                    f"{v['b1_median_ms']:.1f}",
                    f"{base:.1f}",
                    speed,
                )
            )
        base8 = res["pytorch-fp32"]["b8_img_per_s"]
        for backend, v in res.items():
            rate = v["b8_img_per_s"]
            rows.append((f"{arch} {backend}: batch-8 img/s", f"{rate:.1f}", f"{base8:.1f}", rate / base8))
    return rows


def parse_console(out: str, tmp: Path) -> list[Row]:
    r = _json_stdout(out)
    what = f"alerts/s stored ({r['db']}, {r['alerts']} alerts)"
    return [(what, f"{r['console_alerts_per_s']}", f"{r['bare_alerts_per_s']}", r["ratio"])]


BENCHES: list[Bench] = [
    Bench(
        "synth",
        ["--n", "40"],
        parse=parse_synth,
        baseline="JPEG-encoding a blank image of the same sizes (ratio = images/s / its images/s)",
    ),
    Bench(
        "data",
        ["--repeats", "1", "--encodings", "npy", "--workers", "1", "--batch-size", "32"],
        parse=parse_ratio_table,
        baseline="naive PIL decode + Resize + ToTensor",
    ),
    Bench(
        "infer",
        ["--archs", "resnet18", "--rounds", "2", "--iters1", "3", "--iters8", "1", "--warmup", "1"],
        parse=parse_infer,
        baseline="PyTorch eager FP32 (speed-up = its time / this time)",
        json_file=True,
    ),
    Bench(
        "int8_formats",
        ["--rounds", "2", "--iters", "3"],
        parse=parse_int8_formats,
        baseline="ONNX Runtime FP32 (speed-up = its median / this median)",
    ),
    Bench(
        "agent_pipeline",
        ["--count", "40", "--rounds", "1", "--paced-frames", "20", "--json"],
        full=["--json"],
        parse=parse_agent_pipeline,
        baseline="the bare backend on the same preprocessed tensors (goal >= 0.9)",
    ),
    Bench(
        "fleet",
        ["--devices", "10", "--bundle-mb", "0.5", "--json"],
        full=["--json"],
        parse=parse_fleet,
        baseline="transferring the bundle to each device once (ratio = push time / transfer time)",
    ),
    Bench(
        "train_amp",
        [
            "--arch",
            "resnet18",
            "--size",
            "64",
            "--count",
            "64",
            "--epochs",
            "1",
            "--batch-size",
            "16",
            "--workers",
            "1",
        ],
        parse=parse_ratio_table,
        baseline="FP32 training images/s (needs CUDA)",
    ),
    Bench(
        "console_ingest",
        ["-n", "1000", "--json"],
        full=["--json"],
        parse=parse_console,
        baseline="a bare subscriber that stores nothing",
    ),
]


def _extra_benches() -> list[Bench]:
    """bench/console*.py scripts not listed above (added later): run as they are, output shown raw."""
    known = {b.name for b in BENCHES} | {"run_all", "soak", "soak_mqtt", "soak_report"}
    return [Bench(p.stem, []) for p in sorted(BENCH.glob("console*.py")) if p.stem not in known]


@dataclass
class Result:
    bench: Bench
    status: str  # ok | failed | skipped
    seconds: float
    rows: list[Row]
    tail: str
    command: str


def run_bench(b: Bench, quick: bool, timeout: float) -> Result:
    with tempfile.TemporaryDirectory(prefix=f"run-all-{b.name}-") as tmp:
        args = list(b.quick if quick else b.full)
        if b.json_file:
            args += ["--json", str(Path(tmp) / "infer.json")]
        if b.name == "soak":
            args += ["--out", str(Path(tmp) / "soak")]
        cmd = [sys.executable, str(b.script), *args]
        shown = " ".join(["python", f"bench/{b.script.name}", *args]).replace(tmp, "TMP")
        print(f"== {shown}", flush=True)
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)
            out, rc = proc.stdout + proc.stderr, proc.returncode
        except subprocess.TimeoutExpired as e:
            out = (
                (e.stdout or b"").decode(errors="replace")
                if isinstance(e.stdout, bytes)
                else (e.stdout or "")
            )
            out, rc = out + f"\n(timed out after {timeout:.0f} s)", -1
        secs = time.perf_counter() - t0
        tail = "\n".join(out.strip().splitlines()[-12:])
        skip = re.search(r"needs a CUDA GPU|no ABID sample at .*|no mosquitto.*", out)
        if rc != 0:
            status = "skipped: " + skip.group(0) if skip else f"failed (exit {rc})"
            return Result(b, status, secs, [], tail, shown)
        try:
            rows = b.parse(proc.stdout, Path(tmp))
        except (ValueError, KeyError, OSError, IndexError) as e:
            return Result(b, f"ran; output not parsed ({type(e).__name__}: {e})", secs, [], tail, shown)
        print(f"   {len(rows)} rows in {secs:.0f} s", flush=True)
        return Result(b, "ok", secs, rows, tail, shown)


def _read(path: str) -> str:
    return Path(path).read_text() if Path(path).is_file() else ""


def _cpuinfo() -> tuple[str, list[str]]:
    text = _read("/proc/cpuinfo")
    model = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    flags = re.search(r"^flags\s*:\s*(.+)$", text, re.MULTILINE)
    have = set(flags.group(1).split()) if flags else set()
    return (model.group(1).strip() if model else platform.machine()), [f for f in INT8_FLAGS if f in have]


def _mem_gib() -> str:
    m = re.search(r"^MemTotal:\s+(\d+)", _read("/proc/meminfo"), re.MULTILINE)
    return f"{int(m.group(1)) / 1024**2:.1f} GiB" if m else "unknown"


def _os_name() -> str:
    m = re.search(r'^PRETTY_NAME="?([^"\n]*)', _read("/etc/os-release"), re.MULTILINE)
    return f"{m.group(1)} ({platform.platform()})" if m else platform.platform()


def _versions() -> str:
    def version(name: str) -> str:
        try:
            return f"{name} {metadata.version(name)}"
        except metadata.PackageNotFoundError:
            return ""

    return ", ".join(v for v in map(version, PACKAGES) if v)


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        load = os.getloadavg()
        return f"load average: {load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f}"


def machine_lines(load_start: str, load_end: str) -> list[str]:
    model, flags = _cpuinfo()
    return [
        "| | |",
        "| --- | --- |",
        f"| CPU | {model}, {os.cpu_count()} logical cores |",
        f"| memory | {_mem_gib()} |",
        f"| INT8-relevant instruction sets | {', '.join(flags) or 'none of ' + ', '.join(INT8_FLAGS)} |",
        f"| OS | {_os_name()} |",
        f"| Python | {platform.python_version()} ({platform.python_implementation()}) |",
        f"| packages | {_versions()} |",
        f"| `uptime` before | {load_start} |",
        f"| `uptime` after | {load_end} |",
    ]


def _load_note(loads: list[float]) -> list[str]:
    cores = os.cpu_count() or 1
    if not loads or max(loads) <= cores:
        return []
    return [
        f"**This run shared a loaded machine**: 1-minute load average {loads[0]:.1f} at the start and "
        f"{loads[-1]:.1f} at the end on {cores} cores{_NOTE[0] if _NOTE else ''}, "
        "so absolute rates are low and noisy; compare the ratios.",
        "",
    ]


def report(results: list[Result], quick: bool, load_start: str, load_end: str) -> str:
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    mode = "`--quick` (small settings: indicative only)" if quick else "full settings"
    lines = [
        "# Benchmark results",
        "",
        f"Written by `python bench/run_all.py{' --quick' if quick else ''}` on {now}, {mode}. Every ratio is",
        "against a baseline measured by the same bench in the same run. The load average below says how",
        "busy the machine was: a load above its core count means other processes competed for the CPU",
        "and slowed every number (ratios suffer less than absolute rates, since both sides are slowed).",
        "",
        *_load_note(_LOADS),
        "## Machine",
        "",
        *machine_lines(load_start, load_end),
        "",
    ]
    for r in results:
        lines += [f"## {r.bench.name}", "", f"`{r.command}`: {r.status}, {r.seconds:.0f} s.", ""]
        if r.bench.baseline:
            lines += [f"Baseline: {r.bench.baseline}.", ""]
        if r.rows:
            lines += ["| measure | value | baseline | ratio |", "| --- | --- | --- | --- |"]
            lines += [f"| {m} | {v} | {b} | {'' if x is None else f'{x:.2f}x'} |" for m, v, b, x in r.rows]
            lines.append("")
        elif r.tail:
            lines += ["```", r.tail, "```", ""]
    return "\n".join(lines).rstrip() + "\n"


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small settings (minutes, not an hour)")
    ap.add_argument("--out", type=Path, default=BENCH / "results.md", help="default bench/results.md")
    ap.add_argument("--only", default="", help="comma-separated bench names (default: all)")
    ap.add_argument("--with-soak", type=float, metavar="MIN", help="also run bench/soak.py for MIN minutes")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per bench (default 1800)")
    ap.add_argument("--note", default="", help="what else ran on the machine (goes into the report)")
    args = ap.parse_args(argv)
    _NOTE.extend([f" ({args.note})"] if args.note else [])
    soak = [Bench("soak", ["--minutes", str(args.with_soak)], ["--minutes", str(args.with_soak)])]
    benches = BENCHES + _extra_benches() + (soak if args.with_soak else [])
    if args.only:
        wanted = {n.strip() for n in args.only.split(",") if n.strip()}
        unknown = wanted - {b.name for b in benches}
        if unknown:
            ap.error(f"unknown benches {sorted(unknown)}; known: {', '.join(b.name for b in benches)}")
        benches = [b for b in benches if b.name in wanted]
    load_start = _uptime()
    _LOADS.append(os.getloadavg()[0])
    results = [run_bench(b, args.quick, args.timeout) for b in benches]
    _LOADS.append(os.getloadavg()[0])
    args.out.write_text(report(results, args.quick, load_start, _uptime()), encoding="utf-8")
    print(f"wrote {args.out}")
    return 0 if all(not r.status.startswith("failed") for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
