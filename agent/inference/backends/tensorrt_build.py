"""TensorRT engine builder, TensorRT 10 API: used by the agent's TensorRT backend on the device and by
``binwatch export engine`` (through :mod:`export.engine`).

- Parses the ONNX model with ``trt.OnnxParser`` and builds with ``build_serialized_network``; tensors
  are addressed by name (the card's input/output names).
- Precision: before TensorRT 10.12 (JetPack 6 ships 10.3) precision comes from builder flags: INT8
  (plus FP16 for the layers without Q/DQ) with the explicit Q/DQ model ``model.int8-trt.onnx``, or
  FP16. From 10.12 on, the network is created ``STRONGLY_TYPED`` and the types come from the model
  (the Q/DQ model for INT8); FP16 is built from an FP16 copy of the FP32 model
  (:mod:`agent.inference.backends.onnx_fp16`, cached beside the engine), never with the FP16 builder
  flag (deprecated in 10.12, gone in TensorRT 11).
- One optimization profile covering the batch range ``min..max`` (``opt`` in between).
- A timing cache persisted across builds, a workspace limit, and optional DLA (static batch profile
  ``min = opt = max``; GPU fallback on by default, recorded in the sidecar).
- The engine file is written plain; its metadata goes to the sidecar JSON of
  :mod:`agent.inference.backends.engine_cache` (TensorRT version, compute capability, L4T, ONNX sha256,
  precision, profile).

``tensorrt`` and ``onnx`` are imported only inside these functions. Errors are agent-side:
:class:`TensorRTNotFound` (a :class:`BackendUnavailable`) when TensorRT is missing, else
:class:`EngineBuildError` (a :class:`BackendError`); each message names the cause and the fix.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

from agent.inference.backends.base import BackendUnavailable, EngineBuildError
from agent.inference.backends.engine_cache import (
    EngineSidecar,
    detect_compute_capability,
    detect_gpu_name,
    engine_cache_key,
    read_l4t_release,
    write_sidecar,
)
from agent.inference.backends.onnx_check import check_onnx_for_precision
from agent.inference.backends.onnx_fp16 import fp16_onnx
from contract.card import BatchProfile
from contract.files import sha256_file, write_atomic

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_WORKSPACE_MIB",
    "STRONGLY_TYPED_FROM",
    "TensorRTNotFound",
    "batch_profile",
    "build_engine",
    "import_tensorrt",
    "parse_version",
    "trt_available",
    "uses_strongly_typed",
]

STRONGLY_TYPED_FROM = (10, 12)
DEFAULT_WORKSPACE_MIB = 1024
PRECISIONS = ("int8", "fp16", "fp32")

INSTALL_TENSORRT = (
    "TensorRT is not installed: on a Jetson it ships with JetPack 6 (apt install python3-libnvinfer); "
    "on x86 pip install tensorrt from NVIDIA's index "
    "(pip install --extra-index-url https://pypi.nvidia.com tensorrt)"
)

PathLike = Union[str, os.PathLike[str]]


class TensorRTNotFound(BackendUnavailable):
    """The ``tensorrt`` Python package is not importable; ``detail`` is the import error."""

    def __init__(self, detail: str = "") -> None:
        self.detail = detail
        super().__init__(f"{INSTALL_TENSORRT} ({detail})" if detail else INSTALL_TENSORRT)


def import_tensorrt() -> Any:
    """``import tensorrt`` or :class:`TensorRTNotFound` with the way to install it."""
    try:
        import tensorrt as trt
    except ImportError as e:
        raise TensorRTNotFound(str(e)) from e
    return trt


def trt_available() -> bool:
    try:
        import_tensorrt()
    except TensorRTNotFound:
        return False
    return True


def parse_version(version: str) -> tuple[int, ...]:
    """``"10.3.0.30"`` -> ``(10, 3, 0, 30)`` (non-numeric suffixes ignored)."""
    parts = []
    for piece in str(version).split("."):
        m = re.match(r"\d+", piece)
        if m is None:
            break
        parts.append(int(m.group()))
        if m.end() != len(piece):  # "36+cuda12": the number ends here
            break
    return tuple(parts)


def uses_strongly_typed(version: str) -> bool:
    """True from TensorRT 10.12 on (strongly typed networks), False before (builder flags)."""
    return parse_version(version)[:2] >= STRONGLY_TYPED_FROM


def batch_profile(min_batch: int, opt_batch: Optional[int], max_batch: int) -> BatchProfile:
    """The optimization profile; ``opt`` defaults to half of ``max`` (within ``min..max``)."""
    opt = opt_batch if opt_batch is not None else max(min_batch, min(max_batch, max(1, max_batch // 2)))
    try:
        return BatchProfile(min=min_batch, opt=opt, max=max_batch)
    except ValueError as e:
        raise EngineBuildError(
            f"bad batch profile min={min_batch} opt={opt} max={max_batch}: need 1 <= min <= opt <= max"
        ) from e


def _write_bytes(path: Path, data: Any) -> None:
    """Write ``data`` (bytes or a TensorRT ``IHostMemory``) atomically."""
    write_atomic(path, memoryview(data))


def _progress_monitor(trt: Any, report: Callable[[str], None]) -> Any:
    """A ``trt.IProgressMonitor`` that reports build phases (TensorRT >= 10.0), or None."""
    base = getattr(trt, "IProgressMonitor", None)
    if base is None:
        return None

    class _Monitor(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            base.__init__(self)

        def phase_start(self, phase_name: str, parent_phase: Optional[str], num_steps: int) -> None:
            report(f"{parent_phase + ' / ' if parent_phase else ''}{phase_name} ({num_steps} steps)")

        def step_complete(self, phase_name: str, step: int) -> bool:
            return True  # keep building

        def phase_finish(self, phase_name: str) -> None: ...

    return _Monitor()


def _set_precision(trt: Any, config: Any, precision: str, typed: bool) -> None:
    if typed:
        return  # strongly typed: the model's types decide
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)  # explicit quantization: scales come from the Q/DQ nodes
        config.set_flag(trt.BuilderFlag.FP16)  # layers outside Q/DQ may run in FP16
    elif precision == "fp16":
        flag = getattr(trt.BuilderFlag, "FP16", None)
        if flag is None:  # TensorRT 11 removed it
            raise EngineBuildError(f"TensorRT {trt.__version__}: no FP16 builder flag, build strongly typed")
        config.set_flag(flag)


def _set_dla(trt: Any, builder: Any, config: Any, plan: _Plan) -> None:
    dla_core, precision = int(plan.dla_core or 0), plan.precision
    n_dla = int(getattr(builder, "num_DLA_cores", 0))
    if n_dla == 0:
        raise EngineBuildError(
            "--dla-core given but this device has no DLA (Jetson AGX/NX Orin and Xavier have DLAs)"
        )
    if not 0 <= dla_core < n_dla:
        raise EngineBuildError(f"--dla-core {dla_core}: this device has DLA cores 0..{n_dla - 1}")
    if precision == "fp32":
        raise EngineBuildError("DLA runs FP16 or INT8 only: use --precision fp16 or int8 with --dla-core")
    config.default_device_type = trt.DeviceType.DLA
    config.DLA_core = int(dla_core)
    if plan.gpu_fallback:
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)  # layers the DLA cannot run go to the GPU


def _add_profile(builder: Any, network: Any, config: Any, profile: BatchProfile, onnx_path: Path) -> None:
    opt_profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        dims = tuple(tensor.shape)
        if dims and dims[0] != -1 and (profile.min != dims[0] or profile.max != dims[0]):
            raise EngineBuildError(
                f"{onnx_path}: input {tensor.name} has a fixed batch of {dims[0]}; "
                "re-export with a dynamic batch (binwatch export onnx)"
            )
        rest = tuple(dims[1:])
        opt_profile.set_shape(tensor.name, (profile.min, *rest), (profile.opt, *rest), (profile.max, *rest))
    config.add_optimization_profile(opt_profile)


def _use_timing_cache(config: Any, cache_file: Path) -> None:
    blob = cache_file.read_bytes() if cache_file.is_file() else b""
    timing = config.create_timing_cache(blob)
    if not config.set_timing_cache(timing, ignore_mismatch=False):
        log.warning("timing cache %s does not match this TensorRT/GPU; starting a fresh one", cache_file)
        timing = config.create_timing_cache(b"")
        config.set_timing_cache(timing, ignore_mismatch=True)


@dataclass(frozen=True)
class _Plan:
    """What one build makes, resolved and checked before TensorRT does any work."""

    onnx_path: Path
    onnx_sha: str
    precision: str
    profile: BatchProfile
    version: str
    typed: bool
    cc: str
    key: str
    out: Path
    cache_file: Path
    workspace_mib: int
    dla_core: Optional[int]
    device: int
    gpu_fallback: Optional[bool] = None


def build_engine(
    onnx_path: PathLike,
    out_path: Optional[PathLike] = None,
    *,
    precision: str = "int8",
    max_batch: int = 8,
    min_batch: int = 1,
    opt_batch: Optional[int] = None,
    workspace_mib: int = DEFAULT_WORKSPACE_MIB,
    dla_core: Optional[int] = None,
    gpu_fallback: bool = True,
    timing_cache: Optional[PathLike] = None,
    strongly_typed: Optional[bool] = None,
    device: int = 0,
    verbose: bool = False,
    on_phase: Optional[Callable[[str], None]] = None,
) -> tuple[Path, EngineSidecar]:
    """Build a TensorRT engine from one ONNX file; returns ``(engine path, sidecar)``. The sidecar
    is written beside the engine.

    ``out_path`` defaults to ``engines/<cache key>.engine`` in the working directory; ``timing_cache``
    defaults to ``timing.cache`` beside the engine. ``strongly_typed`` defaults by version
    (:func:`uses_strongly_typed`). With ``dla_core`` the batch profile is static at ``max_batch`` and
    ``gpu_fallback`` goes to the sidecar. Input problems are reported before TensorRT is looked for.
    """
    if precision not in PRECISIONS:
        raise EngineBuildError(f"unknown precision {precision!r}: use int8, fp16 or fp32")
    profile = batch_profile(min_batch, opt_batch, max_batch)
    if dla_core is not None and not profile.min == profile.opt == profile.max:
        log.warning("DLA core %s: static batch profile %d (min=opt=max)", dla_core, profile.max)
        profile = batch_profile(profile.max, profile.max, profile.max)
    check_onnx_for_precision(Path(onnx_path), precision)
    trt = import_tensorrt()
    plan = _plan(trt, Path(onnx_path), out_path, timing_cache, precision, profile, strongly_typed, device)
    fallback = bool(gpu_fallback) if dla_core is not None else None  # recorded for DLA builds only
    plan = dataclasses.replace(
        plan, workspace_mib=int(workspace_mib), dla_core=dla_core, gpu_fallback=fallback
    )
    report = on_phase or (lambda msg: log.info("TensorRT build: %s", msg))
    logger = trt.Logger(trt.Logger.VERBOSE if verbose else trt.Logger.WARNING)
    builder, network, config = _network_and_config(trt, logger, plan, report)
    mode = "strongly typed" if plan.typed else "builder flags"
    report(
        f"building {precision} engine from {plan.onnx_path.name} "
        f"(TensorRT {plan.version}, sm {plan.cc}, {mode}, batch {profile.min}-{profile.max})"
    )
    start = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - start
    if serialized is None:
        raise EngineBuildError(
            "TensorRT could not build the engine (see the builder log above; -v shows more)"
        )
    _write_bytes(plan.cache_file, config.get_timing_cache().serialize())
    _write_bytes(plan.out, serialized)
    sidecar = _write_sidecar(trt, logger, plan, seconds)
    log.info(
        "wrote %s (%.1f MiB) in %.1f s; timing cache %s",
        plan.out,
        plan.out.stat().st_size / 2**20,
        seconds,
        plan.cache_file,
    )
    return plan.out, sidecar


def _plan(
    trt: Any,
    onnx_path: Path,
    out_path: Optional[PathLike],
    timing_cache: Optional[PathLike],
    precision: str,
    profile: BatchProfile,
    strongly_typed: Optional[bool],
    device: int,
) -> _Plan:
    """Resolve the typing mode, the GPU, the cache key and the output paths."""
    version = str(trt.__version__)
    typed = uses_strongly_typed(version) if strongly_typed is None else strongly_typed
    cc = detect_compute_capability(device)
    if cc is None:
        raise EngineBuildError(
            "no CUDA GPU found (compute capability unknown): "
            "TensorRT engines are built on the GPU that runs them"
        )
    onnx_sha = sha256_file(onnx_path)
    key = engine_cache_key(onnx_sha, version, cc, precision, profile)
    out = Path(out_path) if out_path is not None else Path("engines") / f"{key}.engine"
    cache_file = Path(timing_cache) if timing_cache is not None else out.parent / "timing.cache"
    if typed and precision == "fp16":  # strongly typed: FP16 comes from an FP16 model, not a flag
        onnx_path = fp16_onnx(onnx_path, out.parent, onnx_sha)
    return _Plan(
        onnx_path=onnx_path,
        onnx_sha=onnx_sha,
        precision=precision,
        profile=profile,
        version=version,
        typed=typed,
        cc=cc,
        key=key,
        out=out,
        cache_file=cache_file,
        workspace_mib=DEFAULT_WORKSPACE_MIB,
        dla_core=None,
        device=device,
    )


def _write_sidecar(trt: Any, logger: Any, plan: _Plan, seconds: float) -> EngineSidecar:
    """Describe the engine just written in its sidecar JSON (loading it for the I/O names)."""
    names = _io_names(trt, logger, plan.out)
    sidecar = EngineSidecar(
        trt_version=plan.version,
        compute_capability=plan.cc,
        l4t=read_l4t_release(),
        onnx_sha256=plan.onnx_sha,
        engine_sha256=sha256_file(plan.out),
        precision=plan.precision,  # type: ignore[arg-type]
        batch_profile=plan.profile,
        input_name=names[0],
        output_name=names[1],
        strongly_typed=plan.typed,
        dla_core=plan.dla_core,
        gpu_fallback=plan.gpu_fallback,
        workspace_mib=plan.workspace_mib,
        gpu_name=detect_gpu_name(plan.device),
        build_seconds=round(seconds, 3),
        cache_key=plan.key,
    )
    write_sidecar(plan.out, sidecar)
    return sidecar


def _network_and_config(
    trt: Any, logger: Any, plan: _Plan, report: Callable[[str], None]
) -> tuple[Any, Any, Any]:
    """Parse the ONNX model into a network and set up the builder config: workspace, precision,
    DLA, batch profile, timing cache and progress reports. Returns ``(builder, network, config)``."""
    builder = trt.Builder(logger)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if plan.typed else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(plan.onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineBuildError(f"TensorRT cannot parse {plan.onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, plan.workspace_mib << 20)
    _set_precision(trt, config, plan.precision, plan.typed)
    if plan.dla_core is not None:
        _set_dla(trt, builder, config, plan)
    _add_profile(builder, network, config, plan.profile, plan.onnx_path)
    _use_timing_cache(config, plan.cache_file)
    monitor = _progress_monitor(trt, report)
    if monitor is not None:
        config.progress_monitor = monitor
    return builder, network, config


def _io_names(trt: Any, logger: Any, engine_path: Path) -> tuple[Optional[str], Optional[str]]:
    """(input name, output name) of a built engine: deserializing it also proves it loads."""
    runtime = trt.Runtime(logger)
    engine = runtime.deserialize_cuda_engine(engine_path.read_bytes())
    if engine is None:
        raise EngineBuildError(f"the engine written to {engine_path} does not deserialize")
    inputs, outputs = [], []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        (inputs if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else outputs).append(name)
    return (inputs[0] if inputs else None, outputs[0] if outputs else None)
