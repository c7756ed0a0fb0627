"""Export: Hugging Face VLM folder → ONNX graphs + manifest. Needs the ``[export]`` extra (torch, transformers, onnx)."""

from .api import export_model

__all__ = ["export_model"]
