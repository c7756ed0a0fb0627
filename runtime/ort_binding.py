"""ONNX Runtime's C-level I/O binding, for the one call per token where Python overhead shows.

``onnxruntime.IOBinding`` wraps ``SessionIOBinding`` with per-call checks (WebGPU capture
pinning, session compatibility, dict bookkeeping) and builds an ``OrtDevice`` for every
``bind_output``; with 2 × 24 cache tensors that is ~0.2 ms a step on a Jetson-class core. This
class calls the same C methods directly, with the device built once. It touches two private
attributes of the public classes (``InferenceSession._sess``, ``OrtValue._ortvalue``); if a future
onnxruntime renames them, ``FastBinding.available`` is False and callers use the public API.
"""

from __future__ import annotations

import numpy as np


class FastBinding:
    """One reusable binding: ``bind_array``/``bind_value``/``bind_device_output``/``bind_value_output``,
    ``run()``, then ``outputs()`` (C-level OrtValues, each owning its tensor)."""

    def __init__(self, session, device: str = "cpu", device_id: int = 0):
        import onnxruntime as ort

        self._sess = session._sess  # the C InferenceSession behind onnxruntime.InferenceSession
        self._binding = ort.capi._pybind_state.SessionIOBinding(self._sess)
        self._device = ort.OrtDevice.make(device, device_id)._get_c_device()
        self._arrays: dict[str, np.ndarray] = {}  # host arrays bound by pointer: kept alive until rebound

    @staticmethod
    def available(session) -> bool:
        import onnxruntime as ort

        return (hasattr(session, "_sess") and hasattr(ort.capi._pybind_state, "SessionIOBinding")
                and hasattr(ort.OrtDevice, "make") and hasattr(ort.OrtValue, "ortvalue_from_numpy"))

    def bind_array(self, name: str, array: np.ndarray) -> None:
        """A C-contiguous host array, bound by pointer (no copy)."""
        self._arrays[name] = array
        self._binding.bind_input(name, array)

    def bind_value(self, name: str, value) -> None:
        """A C-level OrtValue (or a public ``onnxruntime.OrtValue``) as input."""
        self._binding.bind_ortvalue_input(name, getattr(value, "_ortvalue", value))

    def bind_value_output(self, name: str, value) -> None:
        """Write the output into this preallocated OrtValue (fixed shape)."""
        self._binding.bind_ortvalue_output(name, getattr(value, "_ortvalue", value))

    def bind_device_output(self, name: str) -> None:
        """Let ONNX Runtime allocate the output (dynamic shape) on the binding's device."""
        self._binding.bind_output(name, self._device)

    def run(self) -> None:
        self._sess.run_with_iobinding(self._binding, None)

    def outputs(self) -> list:
        """C-level OrtValues in output-binding order; each shares ownership of its tensor, so it stays
        valid after later runs (the next step binds them as its past)."""
        vector = self._binding.get_outputs()
        return [vector[i] for i in range(len(vector))]


class PublicBinding:
    """``FastBinding``'s verbs on the public ``onnxruntime.IOBinding`` (slower; used where the private
    attributes are missing)."""

    def __init__(self, session, device: str = "cpu", device_id: int = 0):
        import onnxruntime as ort

        self._ort = ort
        self._session = session
        self._binding = session.io_binding()
        self._device, self._device_id = device, device_id

    def _wrap(self, value):
        return value if isinstance(value, self._ort.OrtValue) else self._ort.OrtValue(value)

    def bind_array(self, name: str, array: np.ndarray) -> None:
        self._binding.bind_cpu_input(name, array)

    def bind_value(self, name: str, value) -> None:
        self._binding.bind_ortvalue_input(name, self._wrap(value))

    def bind_value_output(self, name: str, value) -> None:
        self._binding.bind_ortvalue_output(name, self._wrap(value))

    def bind_device_output(self, name: str) -> None:
        self._binding.bind_output(name, self._device, self._device_id)

    def run(self) -> None:
        self._session.run_with_iobinding(self._binding)

    def outputs(self) -> list:
        return [v._ortvalue for v in self._binding.get_outputs()]
