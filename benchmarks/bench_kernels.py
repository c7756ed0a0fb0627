"""Throughput and peak extra memory of the preprocessing kernels, side by side with the
transformers PIL image processors (for hd, which transformers lacks: the original HD_transform
pipeline re-implemented with PIL + torch, as in tests/test_kernels_hd.py).

    python benchmarks/bench_kernels.py [--repeat 7] [--schemes anyres,hd]

Each implementation runs on each input in a process of its own (warm-up, then the best of
``--repeat`` calls), so none inherits another's allocator state.

Columns: the NumPy reference kernel; the C kernel (kernels/cpu, the default) allocating its
output as transformers does; the C kernel writing into a reused output buffer (``out=``, as the
runtime does — a fresh 30 MB array costs the kernel's page zeroing on every call); the
transformers processor; speedups of the two C columns over it. Megapixels/s counts input pixels.
Peak extra memory (C kernel, fresh output): tracemalloc peak during one call (numpy reports its
buffers to tracemalloc; the C threads' transposition strips, input width × 48 bytes each, are not
counted) minus the output itself, and that as a multiple of the output.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
import tracemalloc
from functools import partial
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from kernel_cases import CLIP_MEAN, CLIP_STD, random_image  # noqa: E402
from vlmforge.kernels import PreprocessSpec, resolve_backend, tile_and_patchify  # noqa: E402
from vlmforge.kernels.cpu.run import release_scratch  # noqa: E402

SIZES = [(336, 336), (672, 672), (1080, 1920), (1600, 3840)]
SCHEME_SIZES = {"native": [(480, 640), (1080, 1920), (2160, 3840)]}  # Qwen2-VL line: what cameras send
QWEN25_BUDGET = dict(min_pixels=3136, max_pixels=12845056)  # Qwen2.5-VL-3B-Instruct's processor
PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
ONEVISION_PINPOINTS = [[384 * i, 384 * j] for i in range(1, 7) for j in range(1, 7)]  # llava-onevision-*-hf
SPECS = {
    "fixed": PreprocessSpec(size=[336], crop=[336, 336], mean=CLIP_MEAN, std=CLIP_STD),
    "anyres": PreprocessSpec(scheme="anyres", grid_pinpoints=PINPOINTS, mean=CLIP_MEAN, std=CLIP_STD),
    "hd": PreprocessSpec(scheme="hd", merge_size=2, resample="bilinear", background=[255] * 3, mean=CLIP_MEAN, std=CLIP_STD),
    "patches": PreprocessSpec(scheme="patches", size=[1080, 1920], patch_size=30, resample="bilinear", background=[1] * 3, mean=[0.5] * 3, std=[0.5] * 3),
    "native": PreprocessSpec(scheme="native", resize="none", patch_size=14, merge_size=2, mean=CLIP_MEAN, std=CLIP_STD, **QWEN25_BUDGET),
    "onevision": PreprocessSpec(scheme="anyres", tile_size=384, patch_size=14, grid_pinpoints=ONEVISION_PINPOINTS, anyres_max_tiles=9, mean=[0.5] * 3, std=[0.5] * 3),
    "split": PreprocessSpec(scheme="split", resize="none", size=[1536], tile_size=384, resample="lanczos", mean=[0.5] * 3, std=[0.5] * 3),
    "pan_and_scan": PreprocessSpec(scheme="pan_and_scan", resize="exact", size=[896, 896], resample="bilinear", mean=[0.5] * 3, std=[0.5] * 3),
    "dual": PreprocessSpec(scheme="dual", size=[768], crop=[768, 768], tile_size=336, mean=CLIP_MEAN, std=CLIP_STD),  # MGM-7B
    "canvas": PreprocessSpec(scheme="canvas", resize="none", size=[560], tile_size=560, max_tiles=4, resample="bilinear", mean=[0.5] * 3, std=[0.5] * 3),  # Llama-3.2-Vision
}  # fmt: skip
SPLIT_SIZES = {"size": {"longest_edge": 1536}, "max_image_size": {"longest_edge": 384}}  # SmolVLM2-2.2B's processor


def baselines():
    """scheme → callable(image) running the transformers (or original) preprocessing."""
    from transformers.models.fuyu.image_processing_pil_fuyu import FuyuImageProcessorPil
    from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil
    from transformers.models.llava.image_processing_pil_llava import LlavaImageProcessorPil
    from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil
    from transformers.models.llava_onevision.image_processing_pil_llava_onevision import LlavaOnevisionImageProcessorPil
    from transformers.models.mllama.image_processing_pil_mllama import MllamaImageProcessorPil
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
    from transformers.models.smolvlm.image_processing_pil_smolvlm import SmolVLMImageProcessorPil
    from test_kernels_hd import original_hd

    crop = {"height": 336, "width": 336}
    llava = LlavaImageProcessorPil(size={"shortest_edge": 336}, crop_size=crop)
    nxt = LlavaNextImageProcessorPil(size={"shortest_edge": 336}, crop_size=crop, image_grid_pinpoints=PINPOINTS)
    fuyu = FuyuImageProcessorPil()
    qwen = Qwen2VLImageProcessorPil(**QWEN25_BUDGET)
    onevision = LlavaOnevisionImageProcessorPil(image_mean=[0.5] * 3, image_std=[0.5] * 3)  # 384 px, the hub's pinpoints
    smolvlm = SmolVLMImageProcessorPil(**SPLIT_SIZES)
    gemma3 = Gemma3ImageProcessorPil(size={"height": 896, "width": 896})  # Gemma 3's processor, crops on
    mllama = MllamaImageProcessorPil(size={"height": 560, "width": 560}, max_image_tiles=4)  # Llama-3.2-11B-Vision's

    def fuyu_run(img):
        out = fuyu(img, input_data_format="channels_last")
        im = np.asarray(out["images"][0][0])
        nh = min(im.shape[-2], math.ceil(out["image_unpadded_heights"][0][0] / 30) * 30)
        nw = min(im.shape[-1], math.ceil(out["image_unpadded_widths"][0][0] / 30) * 30)
        return fuyu.patchify_image(im[..., :nh, :nw])

    kw = {"return_tensors": "np", "input_data_format": "channels_last"}
    mgm_clip = LlavaImageProcessorPil(size={"shortest_edge": 768}, crop_size={"height": 768, "width": 768})

    def mgm_run(img):  # MGM's mgm/serve/cli.py: CLIP's processor at image_size_aux, then bilinear to 336
        import torch

        aux = torch.as_tensor(mgm_clip(img, **kw)["pixel_values"])
        return aux, torch.nn.functional.interpolate(aux, size=[336, 336], mode="bilinear", align_corners=False)

    return {
        "fixed": lambda img: llava(img, **kw),
        "anyres": lambda img: nxt(img, **kw),
        "hd": lambda img: original_hd(img, 25),
        "patches": fuyu_run,
        "native": lambda img: qwen(img, **kw),
        "onevision": lambda img: onevision(img, **kw),
        "split": lambda img: smolvlm(img, **kw),
        "pan_and_scan": lambda img: gemma3(img, do_pan_and_scan=True, pan_and_scan_min_crop_size=256,
                                           pan_and_scan_max_num_crops=4, pan_and_scan_min_ratio_to_activate=1.2, **kw),
        "dual": lambda img: mgm_run(img),
        "canvas": lambda img: mllama(img, **kw),
    }


IMPLS = ("numpy", "c", "reused", "hf")


def best_time(fn, repeat: int) -> float:
    fn()  # warm-up
    best = math.inf
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def peak_extra(fn) -> tuple[float, int]:
    release_scratch()  # the C kernel's kept buffer counts as extra memory: allocate it inside the measurement
    tracemalloc.start()
    out, _ = fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak - out.nbytes, out.nbytes


def worker(impl: str, scheme: str, h: int, w: int, repeat: int) -> dict:
    """One implementation on one input, in a process of its own: its steady state only (glibc's mmap
    threshold follows the sizes a process freed last, which swings a neighbour's timing by ±50 %)."""
    spec, img = SPECS[scheme], random_image(h, w)
    if impl == "hf":
        fn = partial(baselines()[scheme], img)
    elif impl == "reused":
        fn = partial(tile_and_patchify, img, spec, backend="c", out=tile_and_patchify(img, spec, backend="c")[0])
    else:
        fn = partial(tile_and_patchify, img, spec, backend=impl)
    result = {"s": best_time(fn, repeat)}
    if impl == "c":
        result["extra"], result["out"] = peak_extra(fn)
    return result


def measure(impl: str, scheme: str, h: int, w: int, repeat: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", impl, scheme, str(h), str(w), "--repeat", str(repeat)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--schemes", default=",".join(SPECS), help="comma-separated subset of " + ", ".join(SPECS))
    parser.add_argument("--worker", nargs=4, metavar=("IMPL", "SCHEME", "H", "W"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        impl, scheme, h, w = args.worker
        print(json.dumps(worker(impl, scheme, int(h), int(w), args.repeat)))
        return
    if resolve_backend("auto") != "c":
        sys.exit("the C kernel did not build here (see vlmforge.kernels.c_kernel_error()); nothing to compare")
    print(f"{'scheme':8} {'input':>10} {'numpy ms':>8} {'C ms':>7} {'reused':>7} {'hf ms':>7} "
          f"{'C ×hf':>6} {'reused':>6} {'C MP/s':>7} {'extra MiB':>9} {'×out':>5}")
    for scheme in args.schemes.split(","):
        for h, w in SCHEME_SIZES.get(scheme, SIZES):
            r = {impl: measure(impl, scheme, h, w, args.repeat) for impl in IMPLS}
            ref, ours, reused, theirs = (r[i]["s"] for i in IMPLS)
            extra, out_bytes = r["c"]["extra"], r["c"]["out"]
            print(
                f"{scheme:8} {f'{w}x{h}':>10} {ref * 1e3:8.1f} {ours * 1e3:7.1f} {reused * 1e3:7.1f} {theirs * 1e3:7.1f}"
                f" {theirs / ours:5.1f}× {theirs / reused:5.1f}× {h * w / 1e6 / ours:7.0f} {extra / 2**20:9.1f}"
                f" {extra / out_bytes:5.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
