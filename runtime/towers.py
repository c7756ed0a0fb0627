"""Several vision graphs feeding one connector (``manifest.vision_towers``; Mini-Gemini's
low-resolution ViT and high-resolution ConvNeXt): each graph reads its own view of the kernel's
output and the connector reads all their outputs by name. One verb: ``run``."""

from __future__ import annotations

import numpy as np

from ..kernels import PreprocessSpec, pixel_views
from .backends import open_graph
from .manifest import Manifest


class VisionTowers:
    def __init__(self, root, manifest: Manifest, backend: str, threads: int | None, opened: dict):
        """``opened``: sessions the pipeline holds already (its "vision"), reused by graph name."""
        self.specs = manifest.vision_towers
        self.sessions = {t.graph: opened.get(t.graph) or open_graph(root, manifest, t.graph, backend, threads)
                         for t in self.specs}

    def run(self, pixels: np.ndarray, spec: PreprocessSpec, timer) -> dict[str, np.ndarray]:
        """The kernel's output → {tower output name: features}, each tower timed as its graph."""
        views = pixel_views(pixels, spec)
        outputs = {}
        for tower in self.specs:
            if tower.pixels not in views:
                raise ValueError(f"vision graph {tower.graph!r} reads {tower.pixels!r}, which the {spec.scheme!r} "
                                 f"kernel does not write (it writes {sorted(views)}); re-export the model")
            session = self.sessions[tower.graph]
            with timer(tower.graph, session):
                out = session.run({session.spec.input_names[0]: views[tower.pixels]})
            outputs[tower.output] = out[session.spec.output_names[0]]
        return outputs


def open_towers(root, manifest: Manifest, backend: str, threads: int | None, vision) -> VisionTowers | None:
    """The towers the manifest declares (None: the one "vision" graph, as before)."""
    if not manifest.vision_towers:
        return None
    return VisionTowers(root, manifest, backend, threads, {"vision": vision} if vision is not None else {})
