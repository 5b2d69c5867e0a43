"""binwatch export: trained run -> parity-checked ONNX -> INT8 (TensorRT / CPU) -> bundle -> engine.

Modules: ``onnx_export`` (FP32 ONNX), ``parity``, ``calib`` (calibration/eval images through
``agent.preprocess``), ``quantize``, ``engine`` (TensorRT builder), ``engine_cache`` (cache key,
sidecar, compatibility check; agent-importable), ``golden`` (golden set; agent-importable),
``bundle``, ``predict``, ``cli``. Importing this package imports nothing heavy.
"""
