"""Serving many requests on one device: per-request state (``Sequence``), a scheduler that picks
what runs next, a cache manager that stacks running sequences' KV caches into one batch, a model
runner that executes one LLM step, and the engine loop that ties them together."""

from .request import Request
from .sequence import GenerationResult, Sequence

__all__ = ["GenerationResult", "Request", "Sequence"]
