"""vlmforge: export vision-language models to ONNX / TensorRT and run them with a lightweight runtime."""

__version__ = "0.1.0"
