"""A FAKE ``tensorrt`` (TensorRT 10 Python API subset) and a FAKE ``pycuda.driver`` for tests.

Nothing here builds or runs a real engine: it lets the TensorRT backend's and the engine builder's
control flow (cache hit, stale or corrupt cache -> rebuild, profiles, DLA, strongly typed FP16,
timing cache) run in CI without a GPU. Only the calls binwatch makes are implemented. A "serialized
engine" is ``MAGIC`` + JSON describing the build; "inference" writes ``j + mean(input[i])`` to
``output[i, j]``. What a real TensorRT build does is NOT verified here (tests/hw.py gates that).

``install(monkeypatch, ...)`` puts both into ``sys.modules`` and pins compute capability, GPU name
and L4T detection; it returns the :class:`FakeState` that records what the code did.
"""

from __future__ import annotations

import importlib.machinery
import json
import sys
import types
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pytest

MAGIC = b"FAKETRT\n"


@dataclass
class FakeState:
    version: str = "10.3.0"
    cc: tuple[int, int] = (8, 7)
    num_dla: int = 0
    fail_deserialize: bool = False
    builds: list[dict[str, Any]] = field(default_factory=list)
    timing_blobs_in: list[bytes] = field(default_factory=list)
    deserialized: int = 0
    contexts: list[FakeContext] = field(default_factory=list)
    memory: dict[int, np.ndarray] = field(default_factory=dict)


class NetworkDefinitionCreationFlag(IntEnum):
    STRONGLY_TYPED = 5


class MemoryPoolType(IntEnum):
    WORKSPACE = 0


class TensorIOMode(IntEnum):
    NONE = 0
    INPUT = 1
    OUTPUT = 2


class DeviceType(IntEnum):
    GPU = 0
    DLA = 1


class DataType(IntEnum):
    FLOAT = 0
    HALF = 1


class BuilderFlag(IntEnum):
    FP16 = 0
    INT8 = 1
    GPU_FALLBACK = 4


class BuilderFlagNoFP16(IntEnum):  # TensorRT 11: FP16 (and INT8) flags removed
    GPU_FALLBACK = 4


def nptype(dtype: DataType) -> Any:
    return np.float16 if dtype == DataType.HALF else np.float32


class Logger:
    VERBOSE = 4
    WARNING = 2

    def __init__(self, severity: int = 2) -> None:
        self.severity = severity


@dataclass
class _Tensor:
    name: str
    shape: tuple[int, ...]
    dtype: int = int(DataType.FLOAT)


class _Network:
    def __init__(self, flags: int) -> None:
        self.strongly_typed = bool(flags & (1 << int(NetworkDefinitionCreationFlag.STRONGLY_TYPED)))
        self.inputs: list[_Tensor] = []
        self.outputs: list[_Tensor] = []
        self.source: Optional[str] = None
        self.initializer_types: list[int] = []

    @property
    def num_inputs(self) -> int:
        return len(self.inputs)

    def get_input(self, i: int) -> _Tensor:
        return self.inputs[i]


def _dims(value_info: Any) -> tuple[int, ...]:
    return tuple(
        d.dim_value if d.HasField("dim_value") else -1 for d in value_info.type.tensor_type.shape.dim
    )


class OnnxParser:
    def __init__(self, network: _Network, logger: Logger) -> None:
        self.network = network
        self.errors: list[str] = []

    @property
    def num_errors(self) -> int:
        return len(self.errors)

    def get_error(self, i: int) -> str:
        return self.errors[i]

    def parse_from_file(self, path: str) -> bool:
        import onnx
        from onnx import TensorProto

        try:
            model = onnx.load(path)
        except Exception as e:
            self.errors.append(f"fake parser: {e}")
            return False
        half = TensorProto.FLOAT16
        net, g = self.network, model.graph
        net.source = path
        net.initializer_types = [int(i.data_type) for i in g.initializer]
        for vi, out in ((g.input, net.inputs), (g.output, net.outputs)):
            for v in vi:
                dt = DataType.HALF if v.type.tensor_type.elem_type == half else DataType.FLOAT
                out.append(_Tensor(v.name, _dims(v), int(dt)))
        return True


class _Profile:
    def __init__(self) -> None:
        self.shapes: dict[str, tuple[tuple[int, ...], ...]] = {}

    def set_shape(self, name: str, lo: tuple[int, ...], opt: tuple[int, ...], hi: tuple[int, ...]) -> None:
        if not (lo[0] <= opt[0] <= hi[0]):
            raise ValueError(f"fake TensorRT: bad profile for {name}: {lo} {opt} {hi}")
        self.shapes[name] = (tuple(lo), tuple(opt), tuple(hi))


class _TimingCache:
    def __init__(self, blob: bytes) -> None:
        self.blob = bytes(blob)

    def serialize(self) -> bytes:
        return self.blob


class _Config:
    def __init__(self, state: FakeState, trt: Any) -> None:
        self.state, self.trt = state, trt
        self.flags: set[str] = set()
        self.pool: dict[int, int] = {}
        self.profiles: list[_Profile] = []
        self.timing: Optional[_TimingCache] = None
        self.default_device_type = DeviceType.GPU
        self.DLA_core = -1
        self.progress_monitor: Any = None
        self.network: Optional[_Network] = None

    def set_memory_pool_limit(self, pool: int, size: int) -> None:
        self.pool[int(pool)] = int(size)

    def set_flag(self, flag: Any) -> None:
        self.flags.add(flag.name)

    def add_optimization_profile(self, profile: _Profile) -> int:
        self.profiles.append(profile)
        return len(self.profiles) - 1

    def create_timing_cache(self, blob: bytes) -> _TimingCache:
        self.state.timing_blobs_in.append(bytes(blob))
        return _TimingCache(blob)

    def set_timing_cache(self, cache: _TimingCache, ignore_mismatch: bool) -> bool:
        tag = f"TC {self.state.version} sm{self.state.cc[0]}{self.state.cc[1]}\n".encode()
        if cache.blob and not cache.blob.startswith(tag) and not ignore_mismatch:
            return False
        self.timing = cache if cache.blob else _TimingCache(tag)
        return True

    def get_timing_cache(self) -> _TimingCache:
        assert self.timing is not None, "fake TensorRT: no timing cache set"
        return self.timing


class Builder:
    def __init__(self, logger: Logger) -> None:
        self.state: FakeState = _STATE
        self.num_DLA_cores = self.state.num_dla

    def create_network(self, flags: int = 0) -> _Network:
        return _Network(flags)

    def create_builder_config(self) -> _Config:
        return _Config(self.state, sys.modules["tensorrt"])

    def create_optimization_profile(self) -> _Profile:
        return _Profile()

    def build_serialized_network(self, network: _Network, config: _Config) -> Optional[bytes]:
        """None (TensorRT's failure) on the misuses real TensorRT rejects."""
        if network.strongly_typed and {"FP16", "INT8"} & config.flags:
            return None  # precision flags are not allowed on a strongly typed network
        if len(config.profiles) != 1 or set(config.profiles[0].shapes) != {t.name for t in network.inputs}:
            return None
        shapes = config.profiles[0].shapes
        dla = config.default_device_type == DeviceType.DLA
        if dla and any(len({s[0] for s in v}) != 1 for v in shapes.values()):
            return None  # DLA needs a static shape
        record = {
            "version": self.state.version,
            "typed": network.strongly_typed,
            "flags": sorted(config.flags),
            "source": network.source,
            "initializer_types": network.initializer_types,
            "profile": {k: [list(s) for s in v] for k, v in shapes.items()},
            "inputs": [[t.name, list(t.shape), t.dtype] for t in network.inputs],
            "outputs": [[t.name, list(t.shape), t.dtype] for t in network.outputs],
            "dla_core": config.DLA_core if dla else None,
            "workspace": config.pool.get(int(MemoryPoolType.WORKSPACE)),
        }
        self.state.builds.append(record)
        timing = config.get_timing_cache()
        timing.blob += f"build {len(self.state.builds)}\n".encode()
        return MAGIC + json.dumps(record).encode()


class FakeContext:
    def __init__(self, engine: ICudaEngine) -> None:
        self.engine = engine
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.addresses: dict[str, int] = {}
        self.executions = 0

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        lo, _opt, hi = self.engine.get_tensor_profile_shape(name, 0)
        if not lo[0] <= shape[0] <= hi[0] or tuple(shape[1:]) != tuple(hi[1:]):
            return False
        self.shapes[name] = tuple(int(d) for d in shape)
        return True

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        if name in self.engine.inputs:
            return self.shapes[name]
        batch = next(iter(self.shapes.values()))[0]
        return (batch, *self.engine.outputs[name][1:])

    def set_tensor_address(self, name: str, ptr: int) -> bool:
        self.addresses[name] = int(ptr)
        return True

    def execute_async_v3(self, stream: int) -> bool:
        mem = _STATE.memory
        (in_name,) = self.engine.inputs
        shape = self.shapes[in_name]
        in_dtype = nptype(self.engine.get_tensor_dtype(in_name))
        n_in = int(np.prod(shape)) * np.dtype(in_dtype).itemsize
        x = mem[self.addresses[in_name]][:n_in].view(in_dtype).reshape(shape).astype(np.float32)
        for out_name in self.engine.outputs:
            out_shape = self.get_tensor_shape(out_name)
            y = np.arange(out_shape[1], dtype=np.float32)[None, :] + x.reshape(shape[0], -1).mean(1)[:, None]
            raw = y.astype(nptype(self.engine.get_tensor_dtype(out_name))).view(np.uint8).ravel()
            mem[self.addresses[out_name]][: raw.size] = raw
        self.executions += 1
        return True


class ICudaEngine:
    def __init__(self, record: dict[str, Any]) -> None:
        self.record = record
        self.inputs = {n: tuple(s) for n, s, _ in record["inputs"]}
        self.outputs = {n: tuple(s) for n, s, _ in record["outputs"]}
        self.dtypes = {n: DataType(d) for n, _, d in record["inputs"] + record["outputs"]}
        self.names = list(self.inputs) + list(self.outputs)

    @property
    def num_io_tensors(self) -> int:
        return len(self.names)

    def get_tensor_name(self, i: int) -> str:
        return self.names[i]

    def get_tensor_mode(self, name: str) -> TensorIOMode:
        return TensorIOMode.INPUT if name in self.inputs else TensorIOMode.OUTPUT

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return self.inputs.get(name) or self.outputs[name]

    def get_tensor_dtype(self, name: str) -> DataType:
        return self.dtypes[name]

    def get_tensor_profile_shape(self, name: str, profile: int) -> list[tuple[int, ...]]:
        return [tuple(s) for s in self.record["profile"][name]]

    def create_execution_context(self) -> FakeContext:
        ctx = FakeContext(self)
        _STATE.contexts.append(ctx)
        return ctx


class Runtime:
    def __init__(self, logger: Logger) -> None:
        self.logger = logger

    def deserialize_cuda_engine(self, data: bytes) -> Optional[ICudaEngine]:
        """None for anything that is not a fake engine of this version (as TensorRT does)."""
        data = bytes(data)
        if _STATE.fail_deserialize or not data.startswith(MAGIC):
            return None
        try:
            record = json.loads(data[len(MAGIC) :])
        except ValueError:
            return None
        if record.get("version") != _STATE.version:
            return None
        _STATE.deserialized += 1
        return ICudaEngine(record)


# -- fake pycuda.driver ------------------------------------------------------------------------------


class _CudaContext:
    def __init__(self) -> None:
        self.popped = 0
        self.detached = 0

    def pop(self) -> None:
        self.popped += 1

    def detach(self) -> None:
        self.detached += 1


class _Device:
    made: list[_CudaContext] = []

    def __init__(self, index: int) -> None:
        self.index = index

    def compute_capability(self) -> tuple[int, int]:
        return _STATE.cc

    def make_context(self) -> _CudaContext:
        ctx = _CudaContext()
        _Device.made.append(ctx)
        return ctx


class _Allocation:
    def __init__(self, nbytes: int) -> None:
        self.ptr = 0x1000 + len(_STATE.memory) * 0x1000
        _STATE.memory[self.ptr] = np.zeros(nbytes, np.uint8)

    def __int__(self) -> int:
        return self.ptr

    def free(self) -> None:
        _STATE.memory.pop(self.ptr, None)


class _Stream:
    handle = 7

    def synchronize(self) -> None:
        pass


def _pycuda_driver() -> types.ModuleType:
    drv = types.ModuleType("pycuda.driver")
    drv.__spec__ = importlib.machinery.ModuleSpec("pycuda.driver", None)
    drv.init = lambda: None  # type: ignore[attr-defined]
    drv.Device = _Device  # type: ignore[attr-defined]
    drv.Stream = _Stream  # type: ignore[attr-defined]
    drv.pagelocked_empty = lambda shape, dtype: np.zeros(shape, dtype)  # type: ignore[attr-defined]
    drv.mem_alloc = _Allocation  # type: ignore[attr-defined]

    def htod(dptr: int, host: np.ndarray, stream: Any) -> None:
        raw = np.ascontiguousarray(host).view(np.uint8).ravel()
        _STATE.memory[int(dptr)][: raw.size] = raw

    def dtoh(host: np.ndarray, dptr: int, stream: Any) -> None:
        host.view(np.uint8).reshape(-1)[:] = _STATE.memory[int(dptr)][: host.nbytes]

    drv.memcpy_htod_async = htod  # type: ignore[attr-defined]
    drv.memcpy_dtoh_async = dtoh  # type: ignore[attr-defined]
    return drv


# -- installing ------------------------------------------------------------------------------------

_STATE = FakeState()


def _tensorrt(version: str, fp16_flag: bool) -> types.ModuleType:
    trt = types.ModuleType("tensorrt")
    trt.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None)
    trt.__version__ = version  # type: ignore[attr-defined]
    for obj in (Logger, Builder, NetworkDefinitionCreationFlag, OnnxParser, Runtime, MemoryPoolType):
        setattr(trt, obj.__name__, obj)
    for obj in (TensorIOMode, DeviceType, DataType, ICudaEngine):
        setattr(trt, obj.__name__, obj)
    trt.BuilderFlag = BuilderFlag if fp16_flag else BuilderFlagNoFP16  # type: ignore[attr-defined]
    trt.IExecutionContext = FakeContext  # type: ignore[attr-defined]
    trt.nptype = nptype  # type: ignore[attr-defined]
    return trt


def install(
    monkeypatch: pytest.MonkeyPatch,
    *,
    version: str = "10.3.0",
    cc: tuple[int, int] = (8, 7),
    num_dla: int = 0,
    fp16_flag: bool = True,
) -> FakeState:
    """Put the fake ``tensorrt`` and ``pycuda.driver`` into ``sys.modules`` (cuda-python hidden)
    and pin the platform probes; returns the fresh :class:`FakeState`."""
    from agent.inference.backends import engine_cache, tensorrt_backend, tensorrt_build

    state = FakeState(version=version, cc=cc, num_dla=num_dla)
    monkeypatch.setattr(sys.modules[__name__], "_STATE", state)
    pycuda = types.ModuleType("pycuda")
    pycuda.__spec__ = importlib.machinery.ModuleSpec("pycuda", None, is_package=True)
    pycuda.driver = _pycuda_driver()  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tensorrt", _tensorrt(version, fp16_flag))
    monkeypatch.setitem(sys.modules, "pycuda", pycuda)
    monkeypatch.setitem(sys.modules, "pycuda.driver", pycuda.driver)
    monkeypatch.setattr(tensorrt_backend, "cudart", lambda: None)  # use the (fake) pycuda path
    cc_text = f"{cc[0]}.{cc[1]}"
    monkeypatch.setattr(tensorrt_build, "detect_compute_capability", lambda device=0: cc_text)
    monkeypatch.setattr(tensorrt_build, "detect_gpu_name", lambda device=0: "Fake GPU")
    monkeypatch.setattr(tensorrt_build, "read_l4t_release", lambda: None)
    monkeypatch.setattr(engine_cache, "read_l4t_release", lambda *a: None)
    monkeypatch.setattr(_Device, "made", [])
    return state


def contexts_made() -> list[_CudaContext]:
    """The (fake) CUDA contexts PyCuda made since :func:`install`."""
    return list(_Device.made)


def engine_record(path: Path) -> dict[str, Any]:
    """What a fake engine file says about its build."""
    return json.loads(path.read_bytes()[len(MAGIC) :])
