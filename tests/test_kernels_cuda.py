"""CUDA kernels: (a) resample.cu compiles with nvcc for Orin (sm_87) and Hopper (sm_90), so a
compile error fails CI wherever nvcc exists; (b) on a GPU, the CUDA path equals the NumPy
reference on random images — tiles exactly (same integer arithmetic, same LUT), the HD global
view within 1e-5 (float32 sums in a different order)."""

import glob
import shutil
import subprocess

import numpy as np
import pytest
from kernel_cases import CLIP_MEAN, CLIP_STD, random_image

from vlmforge.kernels import PreprocessSpec, tile_and_patchify
from vlmforge.kernels.cuda import SOURCE


def find_nvcc():
    return shutil.which("nvcc") or next(iter(sorted(glob.glob("/usr/local/cuda*/bin/nvcc"))), None)


@pytest.mark.parametrize("arch", ["sm_87", "sm_90"])
def test_nvcc_compiles(arch, tmp_path):
    nvcc = find_nvcc()
    if nvcc is None:
        pytest.skip("nvcc not found")
    cmd = [nvcc, "-cubin", f"-arch={arch}", "-Werror", "all-warnings", "-o", str(tmp_path / "k.cubin"), str(SOURCE)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "k.cubin").stat().st_size > 0


def test_unsupported_dtype_is_refused_before_any_cuda_call():
    """A bad output dtype is a ValueError naming the choices, with or without cuda-python."""
    from vlmforge.kernels.cuda import CudaTiler, tile_and_patchify_cuda

    spec = PreprocessSpec(size=[336], crop=[336, 336], mean=CLIP_MEAN, std=CLIP_STD)
    for call in (lambda: CudaTiler(spec, np.float64), lambda: tile_and_patchify_cuda(random_image(8, 8), spec, dtype=np.int8)):
        with pytest.raises(ValueError, match="choose float32 or float16"):
            call()


def gpu_available() -> bool:
    try:
        from cuda.bindings import driver

        return int(driver.cuInit(0)[0]) == 0 and driver.cuDeviceGetCount()[1] > 0
    except Exception:
        return False


PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
SPECS = {
    "fixed": PreprocessSpec(size=[336], crop=[336, 336], pad_to_square=True, background=[122, 116, 104], mean=CLIP_MEAN, std=CLIP_STD),
    "anyres": PreprocessSpec(scheme="anyres", grid_pinpoints=PINPOINTS, mean=CLIP_MEAN, std=CLIP_STD),
    "hd": PreprocessSpec(scheme="hd", merge_size=2, resample="bilinear", background=[255] * 3, mean=CLIP_MEAN, std=CLIP_STD),
    "patches": PreprocessSpec(scheme="patches", size=[1080, 1920], patch_size=30, resample="bilinear", background=[1] * 3, mean=[0.5] * 3, std=[0.5] * 3),
    "dynamic": PreprocessSpec(scheme="dynamic", resize="none", tile_size=448, max_tiles=12, mean=CLIP_MEAN, std=CLIP_STD),
    "native": PreprocessSpec(scheme="native", resize="none", patch_size=14, merge_size=2, mean=CLIP_MEAN, std=CLIP_STD, min_pixels=3136, max_pixels=1003520),
    "native qwen3": PreprocessSpec(scheme="native", resize="none", patch_size=16, merge_size=2, resample="bilinear", mean=[0.5] * 3, std=[0.5] * 3, min_pixels=4096, max_pixels=1048576),
    "pan_and_scan": PreprocessSpec(scheme="pan_and_scan", resize="exact", size=[896, 896], resample="bilinear", pan_min_crop=256, mean=[0.5] * 3, std=[0.5] * 3),
    # LLaVA-OneVision's multi-image view: the base tile alone, padded to a square of the mean colour first
    "onevision base": PreprocessSpec(scheme="anyres", grid_pinpoints=PINPOINTS, base_only=True, background=[127] * 3, mean=[0.5] * 3, std=[0.5] * 3),
    "split": PreprocessSpec(scheme="split", resize="none", size=[1092], tile_size=364, resample="lanczos", mean=[0.5] * 3, std=[0.5] * 3),
    "canvas": PreprocessSpec(scheme="canvas", resize="none", size=[560], tile_size=560, max_tiles=4, resample="bilinear", mean=[0.5] * 3, std=[0.5] * 3),
}  # fmt: skip


@pytest.mark.gpu
@pytest.mark.skipif(not gpu_available(), reason="needs cuda-python and a CUDA GPU")
@pytest.mark.parametrize("scheme", sorted(SPECS))
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_cuda_matches_numpy(scheme, dtype):
    from vlmforge.kernels.cuda import tile_and_patchify_cuda

    for h, w in [(1, 1), (37, 500), (480, 640), (2000, 50), (1600, 3840)]:
        img = random_image(h, w)
        ref, ref_layout = tile_and_patchify(img, SPECS[scheme], dtype=dtype)
        got, layout = tile_and_patchify_cuda(img, SPECS[scheme], dtype=dtype)
        assert layout == ref_layout and got.shape == ref.shape
        if scheme == "hd":
            np.testing.assert_allclose(got[0].astype(np.float32), ref[0].astype(np.float32), rtol=0, atol=1e-5 if dtype == np.float32 else 2e-3)
            got, ref = got[1:], ref[1:]
        np.testing.assert_array_equal(got, ref)


@pytest.mark.gpu
@pytest.mark.skipif(not gpu_available(), reason="needs cuda-python and a CUDA GPU")
def test_cuda_writes_into_a_device_buffer():
    """``out=``: the batch lands in a caller's device buffer (the vision engine's input) unchanged;
    a buffer too small is refused before any launch."""
    from vlmforge.kernels.cuda import DeviceBuffer, tile_and_patchify_cuda

    img, spec = random_image(480, 640), SPECS["anyres"]
    ref, ref_layout = tile_and_patchify(img, spec)
    buf = DeviceBuffer(ref.nbytes).write(np.full(ref.shape, np.nan, np.float32))  # poisoned: every element must be written
    got, layout = tile_and_patchify_cuda(img, spec, out=buf)
    assert got is buf and layout == ref_layout
    np.testing.assert_array_equal(buf.download(np.empty_like(ref)), ref)
    with pytest.raises(ValueError, match="bytes"):
        tile_and_patchify_cuda(img, spec, out=DeviceBuffer(ref.nbytes - 4))


@pytest.mark.gpu
@pytest.mark.skipif(not gpu_available(), reason="needs cuda-python and a CUDA GPU")
def test_tiler_reuses_plans_across_frames():
    """One CudaTiler fed frames of two sizes in turn (plans cached per size, one growing upload
    buffer) and a new picture of a size already seen: every frame equals the NumPy kernel."""
    from vlmforge.kernels.cuda import CudaTiler

    spec = SPECS["hd"]
    tiler = CudaTiler(spec, np.float32)
    for seed, (h, w) in enumerate([(300, 200), (1080, 1920), (300, 200), (1080, 1920)]):
        img = random_image(h, w, seed=seed)
        ref, ref_layout = tile_and_patchify(img, spec)
        got, layout = tiler(img)
        assert layout == ref_layout
        np.testing.assert_allclose(got[0], ref[0], rtol=0, atol=1e-5)
        np.testing.assert_array_equal(got[1:], ref[1:])
    assert len(tiler.plans) == 2
