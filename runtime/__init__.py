"""The lightweight runtime: NumPy + tokenizers + an engine backend. No torch, transformers or onnx."""

from .errors import ImageError, ManifestError, PromptError, VlmforgeError
from .manifest import Manifest, load_manifest
from .pipeline import GenerationResult, Pipeline
from .sampling import SamplingParams
from .serving import Request
from .stats import GenerationStats

__all__ = [
    "GenerationResult", "GenerationStats", "ImageError", "Manifest", "ManifestError", "Pipeline",
    "PromptError", "Request", "SamplingParams", "VlmforgeError", "load_manifest",
]
