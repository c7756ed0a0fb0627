"""The CUDA preprocessing kernel on a GPU, next to the NumPy kernel and the transformers
processors on the same machine's CPU (the schemes and sizes of bench_kernels.py).

    python benchmarks/bench_kernels_cuda.py [--repeat 20] [--json PATH]

Columns: `gpu→host ms` is the whole call with the uint8 upload and the copy back of the batch;
`gpu→dev ms` writes into a device buffer (what a GPU vision engine reads) — both wall clock
after a synchronize, best of --repeat after a warm-up (NVRTC compile and module load excluded);
`kernels ms` is the GPU time of the launches alone (CUDA events, picture already on the device).
Speed-ups are against the transformers processor (hd: the original HD_transform in PIL+torch).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_kernels import SCHEME_SIZES, SIZES, SPECS, baselines, best_time, random_image  # noqa: E402
from vlmforge.kernels import tile_and_patchify  # noqa: E402
from vlmforge.kernels.cuda import CudaTiler, DeviceBuffer, tile_and_patchify_cuda  # noqa: E402


def kernel_time(tiler: CudaTiler, img, out: DeviceBuffer, repeat: int) -> float:
    """Median GPU seconds of one frame's launches, between two CUDA events."""
    from cuda.bindings import driver

    image_dev, hw = tiler.upload(img)
    start, end = (driver.cuEventCreate(0)[1] for _ in range(2))
    times = []
    for _ in range(repeat + 1):  # the first builds the plan
        driver.cuEventRecord(start, driver.CUstream(0))
        tiler.launch(image_dev, hw, out)
        driver.cuEventRecord(end, driver.CUstream(0))
        driver.cuEventSynchronize(end)
        times.append(driver.cuEventElapsedTime(start, end)[1] / 1e3)
    return float(np.median(times[1:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    try:
        base = baselines()
    except ImportError as e:  # another transformers than this package's pin: the GPU columns alone
        print(f"transformers processors unavailable ({e}); the hf column is left empty")
        base = {}
    rows = []
    print(f"{'scheme':8} {'input':>10} {'hf ms':>8} {'numpy ms':>8} {'gpu→host ms':>11} {'gpu→dev ms':>10} {'kernels ms':>10} {'×hf host':>8} {'×hf dev':>8}")
    for scheme, spec in SPECS.items():
        try:
            CudaTiler(spec)
        except ValueError as e:  # a scheme the CUDA kernel refuses (it says which)
            print(f"{scheme:8} skipped: {e}")
            continue
        for h, w in SCHEME_SIZES.get(scheme, SIZES):
            img = random_image(h, w)
            ref, _ = tile_and_patchify(img, spec)
            buf = DeviceBuffer(ref.nbytes)
            theirs = best_time(lambda: base[scheme](img), max(1, args.repeat // 4)) if scheme in base else float("nan")
            ours = best_time(lambda: tile_and_patchify(img, spec), max(1, args.repeat // 4))
            host = best_time(lambda: tile_and_patchify_cuda(img, spec), args.repeat)
            dev = best_time(lambda: tile_and_patchify_cuda(img, spec, out=buf), args.repeat)
            kern = kernel_time(CudaTiler(spec), img, buf, args.repeat)
            row = dict(scheme=scheme, h=h, w=w, hf_s=theirs, numpy_s=ours, gpu_host_s=host, gpu_device_s=dev, kernels_s=kern)
            rows.append(row)
            print(f"{scheme:8} {f'{w}x{h}':>10} {theirs * 1e3:8.2f} {ours * 1e3:8.2f} {host * 1e3:11.3f} {dev * 1e3:10.3f} {kern * 1e3:10.3f}"
                  f" {theirs / host:7.1f}× {theirs / dev:7.1f}×")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
