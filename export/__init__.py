"""Export: Hugging Face VLM folder → ONNX graphs + manifest. Needs the ``[export]`` extra (torch, transformers, onnx).

``export_model`` is imported lazily, so ``vlmforge.export.tensorrt`` (the engine builder) works
on a device that has TensorRT but no torch.
"""


def __getattr__(name):
    if name == "export_model":
        try:
            from .api import export_model
        except ImportError as e:
            raise ImportError(
                f"exporting needs the export extra ({e.name} is missing): pip install torch 'vlmforge[export]'"
            ) from e
        return export_model
    raise AttributeError(name)


__all__ = ["export_model"]
