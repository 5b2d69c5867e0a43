"""binwatch export: trained run -> parity-checked ONNX -> INT8 (TensorRT / CPU) -> bundle -> engine.

Modules: ``onnx_export`` (FP32 ONNX), ``parity``, ``calib`` (calibration/eval images through the
agent's preprocessing), ``quantize``, ``engine`` (``export engine``: input resolution and error
mapping around the agent's TensorRT builder), ``bundle`` (with the golden set of
``contract.golden``), ``predict``, ``cli``. Agent code is reached only through
:mod:`agent.surface` (docs/architecture.md). Importing this package imports nothing heavy.
"""
