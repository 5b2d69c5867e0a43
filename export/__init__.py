"""binwatch export: trained run -> parity-checked ONNX -> INT8 (TensorRT / CPU) -> bundle -> engine.

Modules: ``onnx_export`` (FP32 ONNX), ``parity``, ``calib`` (calibration/eval images through
``agent.preprocess``), ``quantize``, ``engine`` (``export engine``: input resolution and error
mapping around the agent's TensorRT builder ``agent.backends.tensorrt_build``), ``golden`` (golden
set), ``bundle``, ``predict``, ``cli``. Importing this package imports nothing heavy.
"""
