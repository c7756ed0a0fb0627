"""Throughput and peak extra memory of the NumPy preprocessing kernels, side by side with the
transformers PIL image processors (for hd, which transformers lacks: the original HD_transform
pipeline re-implemented with PIL + torch, as in tests/test_kernels_hd.py).

    python benchmarks/bench_kernels.py [--repeat 5]

Megapixels/s counts input pixels. Peak extra memory: tracemalloc peak during one call (numpy
reports its buffers to tracemalloc) minus the output itself, and that as a multiple of the output.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from kernel_cases import CLIP_MEAN, CLIP_STD, random_image  # noqa: E402
from vlmforge.kernels import PreprocessSpec, tile_and_patchify  # noqa: E402

SIZES = [(336, 336), (672, 672), (1080, 1920), (1600, 3840)]
PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
SPECS = {
    "fixed": PreprocessSpec(size=[336], crop=[336, 336], mean=CLIP_MEAN, std=CLIP_STD),
    "anyres": PreprocessSpec(scheme="anyres", grid_pinpoints=PINPOINTS, mean=CLIP_MEAN, std=CLIP_STD),
    "hd": PreprocessSpec(scheme="hd", merge_size=2, resample="bilinear", background=[255] * 3, mean=CLIP_MEAN, std=CLIP_STD),
    "patches": PreprocessSpec(scheme="patches", size=[1080, 1920], patch_size=30, resample="bilinear", background=[1] * 3, mean=[0.5] * 3, std=[0.5] * 3),
}  # fmt: skip


def baselines():
    """scheme → callable(image) running the transformers (or original) preprocessing."""
    from transformers.models.fuyu.image_processing_pil_fuyu import FuyuImageProcessorPil
    from transformers.models.llava.image_processing_pil_llava import LlavaImageProcessorPil
    from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil
    from test_kernels_hd import original_hd

    crop = {"height": 336, "width": 336}
    llava = LlavaImageProcessorPil(size={"shortest_edge": 336}, crop_size=crop)
    nxt = LlavaNextImageProcessorPil(size={"shortest_edge": 336}, crop_size=crop, image_grid_pinpoints=PINPOINTS)
    fuyu = FuyuImageProcessorPil()

    def fuyu_run(img):
        out = fuyu(img, input_data_format="channels_last")
        im = np.asarray(out["images"][0][0])
        nh = min(im.shape[-2], math.ceil(out["image_unpadded_heights"][0][0] / 30) * 30)
        nw = min(im.shape[-1], math.ceil(out["image_unpadded_widths"][0][0] / 30) * 30)
        return fuyu.patchify_image(im[..., :nh, :nw])

    kw = {"return_tensors": "np", "input_data_format": "channels_last"}
    return {
        "fixed": lambda img: llava(img, **kw),
        "anyres": lambda img: nxt(img, **kw),
        "hd": lambda img: original_hd(img, 25),
        "patches": fuyu_run,
    }


def best_time(fn, repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def peak_extra(fn) -> tuple[float, int]:
    tracemalloc.start()
    out, _ = fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak - out.nbytes, out.nbytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    base = baselines()
    print(f"{'scheme':8} {'input':>10} {'ours ms':>8} {'MP/s':>7} {'hf ms':>8} {'MP/s':>7} {'speedup':>7} {'extra MiB':>9} {'×out':>5}")
    for scheme, spec in SPECS.items():
        for h, w in SIZES:
            img = random_image(h, w)
            ours = best_time(lambda: tile_and_patchify(img, spec), args.repeat)
            theirs = best_time(lambda: base[scheme](img), max(1, args.repeat // 2))
            extra, out_bytes = peak_extra(lambda: tile_and_patchify(img, spec))
            mp = h * w / 1e6
            print(
                f"{scheme:8} {f'{w}x{h}':>10} {ours * 1e3:8.1f} {mp / ours:7.1f} {theirs * 1e3:8.1f} {mp / theirs:7.1f}"
                f" {theirs / ours:6.1f}× {extra / 2**20:9.1f} {extra / out_bytes:5.2f}"
            )


if __name__ == "__main__":
    main()
