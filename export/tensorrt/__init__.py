"""TensorRT engines for an exported folder: ``build_engines`` (TensorRT Python API on this
machine), ``emit_trtexec`` (the same builds as a trtexec script for the device) and
``adopt_engines`` (record what that script built). Host logic (precision plans, profiles,
trtexec lines) needs no GPU; TensorRT is imported only when an engine is built."""

from .build import adopt_engines, build_engines, emit_trtexec, plan, trtexec_commands
from .options import BuildOptions, parse_precision

__all__ = ["BuildOptions", "adopt_engines", "build_engines", "emit_trtexec", "parse_precision", "plan", "trtexec_commands"]
