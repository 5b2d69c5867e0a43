"""TensorRT engine cache: key, sidecar metadata and the compatibility check (pure logic).

TensorRT engines are tied to the TensorRT version and the GPU they were built on, so bundles carry
ONNX and the device builds its engine on first use (:mod:`agent.inference.backends.tensorrt_build`), caching
it under :func:`engine_cache_key`. The engine file is written plain (no bytes prepended); its
metadata lives beside it in a sidecar JSON (``<engine>.json``, :class:`EngineSidecar`). Before
loading a cached engine, :func:`check_engine_compat` compares the sidecar with the running TensorRT
and GPU and :func:`engine_file_problem` checks the file against the sidecar's sha256; any reason
either returns means "rebuild".

Standard library, pydantic and ``contract`` only (no numpy, no TensorRT, no torch); Python 3.10.
``binwatch export engine`` uses it through the same builder.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import subprocess
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Optional, Union

from pydantic import Field

from contract.base import ContractError, Versioned, canonical_json, utcnow
from contract.card import BatchProfile
from contract.files import sha256_file, write_atomic

log = logging.getLogger(__name__)

__all__ = [
    "ENGINE_SUFFIX",
    "SIDECAR_SUFFIX",
    "EngineSidecar",
    "check_engine_compat",
    "detect_compute_capability",
    "detect_gpu_name",
    "engine_cache_key",
    "engine_file_problem",
    "normalize_compute_capability",
    "parse_l4t_release",
    "read_l4t_release",
    "read_sidecar",
    "sidecar_path",
    "write_sidecar",
]

ENGINE_SUFFIX = ".engine"
SIDECAR_SUFFIX = ".json"
NV_TEGRA_RELEASE = Path("/etc/nv_tegra_release")

ProfileLike = Union[BatchProfile, tuple[int, int, int], list[int], dict[str, int]]

# Jetson modules by /proc/device-tree/compatible entry -> compute capability (no CUDA call needed)
_JETSON_CC = {
    "nvidia,tegra234": "8.7",  # Orin (AGX, NX, Nano)
    "nvidia,tegra194": "7.2",  # Xavier (AGX, NX)
    "nvidia,tegra186": "6.2",  # TX2
    "nvidia,tegra210": "5.3",  # Nano (original), TX1
}


class EngineSidecar(Versioned):
    """What an engine was built from and for (``<engine>.json``)."""

    SCHEMA = "binwatch.engine"
    VERSION = 1

    trt_version: str = Field(min_length=1)
    compute_capability: str = Field(pattern=r"^\d+\.\d+$")
    l4t: Optional[str] = Field(default=None, description="Jetson L4T release, e.g. 36.3.0; None off Jetson")
    onnx_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    engine_sha256: Optional[str] = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    precision: Literal["fp32", "fp16", "int8"]
    batch_profile: BatchProfile
    input_name: Optional[str] = None
    output_name: Optional[str] = None
    strongly_typed: bool = False
    dla_core: Optional[int] = Field(default=None, ge=0)
    gpu_fallback: Optional[bool] = Field(
        default=None, description="DLA builds: layers the DLA cannot run go to the GPU; None: no DLA"
    )
    workspace_mib: Optional[int] = Field(default=None, ge=0)
    gpu_name: Optional[str] = None
    built_at: datetime = Field(default_factory=utcnow)
    build_seconds: Optional[float] = Field(default=None, ge=0)
    cache_key: Optional[str] = None


def _profile(p: ProfileLike) -> BatchProfile:
    if isinstance(p, BatchProfile):
        return p
    if isinstance(p, dict):
        return BatchProfile(**p)
    lo, opt, hi = p
    return BatchProfile(min=int(lo), opt=int(opt), max=int(hi))


def normalize_compute_capability(cc: Union[str, tuple[int, int], float]) -> str:
    """``"8.7"`` from ``"8.7"``, ``"sm_87"``, ``"87"``, ``(8, 7)`` or ``8.7``."""
    if isinstance(cc, tuple):
        return f"{int(cc[0])}.{int(cc[1])}"
    s = str(cc).strip().lower().removeprefix("sm_").removeprefix("sm")
    if re.fullmatch(r"\d+\.\d+", s):
        major, minor = s.split(".")
        return f"{int(major)}.{int(minor)}"
    if re.fullmatch(r"\d{2,3}", s):
        return f"{int(s[:-1])}.{int(s[-1])}"
    raise ValueError(f"not a compute capability: {cc!r} (expected e.g. 8.7)")


def engine_cache_key(
    model_sha256: str,
    trt_version: str,
    compute_capability: Union[str, tuple[int, int]],
    precision: str,
    batch_profile: ProfileLike,
) -> str:
    """A file-name-safe key naming one engine build: the same inputs always give the same key.

    Readable parts (model hash prefix, TensorRT version, SM, precision, batch profile) followed by a
    digest of the full tuple, e.g. ``3f2a9c0d41b7e6aa-trt10.3.0-sm87-int8-b1_4_8-5c1d0e2f9a3b``.
    """
    sha = model_sha256.lower()
    if not re.fullmatch(r"[0-9a-f]{64}", sha):
        raise ValueError(f"model_sha256 must be 64 hex digits, got {model_sha256!r}")
    if precision not in ("fp32", "fp16", "int8"):
        raise ValueError(f"precision must be fp32, fp16 or int8, got {precision!r}")
    cc = normalize_compute_capability(compute_capability)
    prof = _profile(batch_profile)
    ver = re.sub(r"[^0-9A-Za-z.]+", "_", str(trt_version).strip())
    if not ver:
        raise ValueError("trt_version must not be empty")
    full = canonical_json(
        {
            "sha": sha,
            "trt": str(trt_version).strip(),
            "cc": cc,
            "precision": precision,
            "profile": prof.model_dump(),
        }
    )
    digest = hashlib.sha256(full).hexdigest()[:12]
    return (
        f"{sha[:16]}-trt{ver}-sm{cc.replace('.', '')}-{precision}-b{prof.min}_{prof.opt}_{prof.max}-{digest}"
    )


def check_engine_compat(
    sidecar: Union[EngineSidecar, dict[str, Any]],
    *,
    trt_version: str,
    compute_capability: Union[str, tuple[int, int]],
    onnx_sha256: Optional[str] = None,
    precision: Optional[str] = None,
    batch_profile: Optional[ProfileLike] = None,
    l4t: Optional[str] = None,
) -> list[str]:
    """Reasons a cached engine cannot be used here (empty list: compatible).

    TensorRT engines need the exact TensorRT version and the same GPU architecture. The optional
    arguments also check that the engine was built from this model, precision and batch profile
    (and, on a Jetson, the same L4T release).
    """
    if isinstance(sidecar, dict):
        try:
            sidecar = EngineSidecar.parse(sidecar)
        except ContractError as e:
            return [f"unreadable engine sidecar: {e}"]
    reasons: list[str] = []
    if sidecar.trt_version.strip() != str(trt_version).strip():
        reasons.append(f"built with TensorRT {sidecar.trt_version}, running TensorRT {trt_version}")
    try:
        cc = normalize_compute_capability(compute_capability)
    except ValueError as e:
        reasons.append(str(e))
    else:
        if sidecar.compute_capability != cc:
            reasons.append(f"built for compute capability {sidecar.compute_capability}, this GPU is {cc}")
    if onnx_sha256 is not None and sidecar.onnx_sha256 != onnx_sha256.lower():
        reasons.append(f"built from ONNX {sidecar.onnx_sha256[:12]}..., the model is {onnx_sha256[:12]}...")
    if precision is not None and sidecar.precision != precision:
        reasons.append(f"built for {sidecar.precision}, {precision} requested")
    if batch_profile is not None:
        want = _profile(batch_profile)
        have = sidecar.batch_profile
        if (have.min, have.opt, have.max) != (want.min, want.opt, want.max):
            reasons.append(
                f"batch profile {have.min}/{have.opt}/{have.max} differs from the requested "
                f"{want.min}/{want.opt}/{want.max}"
            )
    if l4t is not None and sidecar.l4t is not None and sidecar.l4t != l4t:
        reasons.append(f"built on L4T {sidecar.l4t}, running L4T {l4t}")
    return reasons


def engine_file_problem(engine_path: Union[str, os.PathLike[str]], sidecar: EngineSidecar) -> Optional[str]:
    """Why the engine file is not the one the sidecar describes (None: it is). A sidecar without
    ``engine_sha256`` (written before the check existed) cannot vouch for its file: stale."""
    if sidecar.engine_sha256 is None:
        return "the sidecar has no engine_sha256 (older cache entry)"
    actual = sha256_file(Path(engine_path))
    if actual != sidecar.engine_sha256:
        return (
            f"engine file sha256 {actual[:12]}... differs from the sidecar's {sidecar.engine_sha256[:12]}..."
        )
    return None


# -- sidecar files -------------------------------------------------------------------------------


def sidecar_path(engine_path: Union[str, os.PathLike[str]]) -> Path:
    """``model.engine`` -> ``model.engine.json``."""
    p = Path(engine_path)
    return p.with_name(p.name + SIDECAR_SUFFIX)


def write_sidecar(engine_path: Union[str, os.PathLike[str]], sidecar: EngineSidecar) -> Path:
    """Write the sidecar JSON beside the engine, atomically; returns its path."""
    data = sidecar.model_dump_json(by_alias=True, indent=2).encode("utf-8") + b"\n"
    return write_atomic(sidecar_path(engine_path), data)


def read_sidecar(engine_path: Union[str, os.PathLike[str]]) -> EngineSidecar:
    """Read ``<engine>.json``; ContractError naming the file when it is missing or invalid."""
    return EngineSidecar.read_file(sidecar_path(engine_path), missing="{path}: missing (no engine sidecar)")


# -- platform facts ------------------------------------------------------------------------------


def parse_l4t_release(text: str) -> Optional[str]:
    """``"# R36 (release), REVISION: 3.0, GCID: ..."`` -> ``"36.3.0"``; None when not recognised."""
    m = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*(\d+)(?:\.(\d+))?", text)
    if not m:
        return None
    major, rev, patch = m.group(1), m.group(2), m.group(3) or "0"
    return f"{int(major)}.{int(rev)}.{int(patch)}"


def read_l4t_release(path: Union[str, os.PathLike[str]] = NV_TEGRA_RELEASE) -> Optional[str]:
    """The Jetson L4T release from ``/etc/nv_tegra_release``; None off Jetson."""
    try:
        return parse_l4t_release(Path(path).read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return None


def _cc_from_cuda_python(device: int) -> Optional[str]:
    try:
        try:
            from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
        except ImportError:
            from cuda import cudart  # type: ignore[no-redef]
    except ImportError:
        return None
    try:
        err, major = cudart.cudaDeviceGetAttribute(
            cudart.cudaDeviceAttr.cudaDevAttrComputeCapabilityMajor, device
        )
        err2, minor = cudart.cudaDeviceGetAttribute(
            cudart.cudaDeviceAttr.cudaDevAttrComputeCapabilityMinor, device
        )
    except Exception as e:  # driver missing, no device
        log.debug("cuda-python could not query the GPU: %s", e)
        return None
    if int(err) != 0 or int(err2) != 0:
        return None
    return f"{int(major)}.{int(minor)}"


def _nvidia_smi(field: str, device: int) -> Optional[str]:
    """The first line of ``nvidia-smi --query-gpu=FIELD`` for one GPU; None without nvidia-smi."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, f"--query-gpu={field}", "--format=csv,noheader", f"--id={device}"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    first = out.splitlines()[0].strip() if out else ""
    return first or None


def _cc_from_nvidia_smi(device: int) -> Optional[str]:
    out = _nvidia_smi("compute_cap", device)
    try:
        return normalize_compute_capability(out) if out else None
    except ValueError:
        return None


def _cc_from_device_tree(path: Path = Path("/proc/device-tree/compatible")) -> Optional[str]:
    try:
        entries = path.read_bytes().split(b"\x00")
    except OSError:
        return None
    for e in entries:
        cc = _JETSON_CC.get(e.decode("ascii", errors="replace").strip())
        if cc:
            return cc
    return None


def detect_compute_capability(device: int = 0) -> Optional[str]:
    """The GPU's compute capability (``"8.7"``) via cuda-python, nvidia-smi, or the Jetson device
    tree; None when no GPU can be found. No torch, no TensorRT."""
    for probe in (
        lambda: _cc_from_cuda_python(device),
        lambda: _cc_from_nvidia_smi(device),
        _cc_from_device_tree,
    ):
        cc = probe()
        if cc:
            return cc
    return None


def detect_gpu_name(device: int = 0) -> Optional[str]:
    """The GPU's name for the sidecar (Jetson device tree, else nvidia-smi); None when unknown."""
    try:
        name = Path("/proc/device-tree/model").read_text(errors="replace").strip("\x00\n ")
    except OSError:
        pass
    else:
        if name:
            return name
    return _nvidia_smi("name", device)
