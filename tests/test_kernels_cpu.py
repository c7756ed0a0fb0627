"""The compiled CPU kernel (kernels/cpu) against the NumPy reference: the same bytes, every scheme.

Both emulate Pillow's integer resampling exactly, so the comparison is ``array_equal`` — no
tolerance. The transformers comparisons in the other kernel tests run through the C kernel too
(``tile_and_patchify``'s default backend). Skipped only where no C compiler exists."""

from __future__ import annotations

import numpy as np
import pytest
from kernel_cases import CLIP_MEAN, CLIP_STD, SIZES, random_image

import vlmforge.kernels as K
from vlmforge.kernels import PreprocessSpec, tile_and_patchify, tile_output_shape
from vlmforge.kernels.cpu import KernelBuildError, build
from vlmforge.kernels.resample import pillow_vertical_first, resize_hcw

pytestmark = pytest.mark.skipif(build.compiler() is None, reason="no C compiler on this machine")

PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
SPECS = {
    "fixed crop": PreprocessSpec(size=[336], crop=[336, 336], mean=CLIP_MEAN, std=CLIP_STD),
    "fixed pad": PreprocessSpec(size=[336], crop=[336, 336], pad_to_square=True, background=[122, 116, 104], mean=CLIP_MEAN, std=CLIP_STD),
    "fixed square": PreprocessSpec(resize="exact", size=[224, 224], resample="bicubic", mean=CLIP_MEAN, std=CLIP_STD),
    "fixed no norm": PreprocessSpec(resize="exact", size=[64, 48], resample="lanczos", do_normalize=False),
    "anyres": PreprocessSpec(scheme="anyres", grid_pinpoints=PINPOINTS, mean=CLIP_MEAN, std=CLIP_STD),
    "hd": PreprocessSpec(scheme="hd", merge_size=2, resample="bilinear", background=[255] * 3, mean=CLIP_MEAN, std=CLIP_STD),
    "hd 4": PreprocessSpec(scheme="hd", merge_size=2, max_tiles=4, resample="bilinear", background=[255] * 3, mean=CLIP_MEAN, std=CLIP_STD),
    "patches": PreprocessSpec(scheme="patches", size=[1080, 1920], patch_size=30, resample="bilinear", background=[1] * 3, mean=[0.5] * 3, std=[0.5] * 3),
    "dynamic": PreprocessSpec(scheme="dynamic", resize="none", tile_size=448, max_tiles=12, mean=CLIP_MEAN, std=CLIP_STD),
    "pan_and_scan": PreprocessSpec(scheme="pan_and_scan", resize="exact", size=[896, 896], resample="bilinear", pan_min_crop=256, mean=[0.5] * 3, std=[0.5] * 3),
    "split": PreprocessSpec(scheme="split", resize="none", size=[1092], tile_size=364, resample="lanczos", mean=[0.5] * 3, std=[0.5] * 3),
}  # fmt: skip


@pytest.mark.parametrize("name", SPECS)
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_c_kernel_equals_numpy(name, dtype):
    spec = SPECS[name]
    for h, w in SIZES + [(333, 777), (2, 1000), (1000, 3)]:
        if spec.scheme == "hd" and max(h, w) > 200 * min(h, w):
            continue  # too elongated for HD_transform (refused, tested in test_kernels_hd.py)
        img = random_image(h, w, seed=5)
        ref, ref_layout = tile_and_patchify(img, spec, dtype, backend="numpy")
        got, layout = tile_and_patchify(img, spec, dtype, backend="c")
        assert layout == ref_layout
        assert got.dtype == ref.dtype and np.array_equal(got, ref), (name, h, w)
    flipped = random_image(333, 777, seed=6)[::-1, ::-1]  # negative strides: read in place or copied, never misread
    assert np.array_equal(tile_and_patchify(flipped, spec, dtype, backend="c")[0],
                          tile_and_patchify(flipped, spec, dtype, backend="numpy")[0])


@pytest.mark.parametrize("resample", ["bicubic", "bilinear", "lanczos", "box"])
def test_resize_windows_equal_numpy(resample):
    """Random sizes, windows (crops, tiles) and the transposed pass order: byte for byte; and each
    path of the C resize — both passes fused (horizontal or vertical first), one pass, none."""
    from vlmforge.kernels.cpu.run import resize_hcw as resize_c

    paths = [((900, 50), (100, 40)), ((50, 900), (40, 100)), ((300, 200), (300, 77)), ((300, 200), (51, 200)),
             ((64, 64), (64, 64)), ((1, 1), (5, 3)), ((5, 3), (1, 1))]  # fmt: skip
    assert pillow_vertical_first(900, 50, 100, 40) and not pillow_vertical_first(50, 900, 40, 100)
    for (h, w), (oh, ow) in paths:
        img = random_image(h, w, seed=2)
        assert np.array_equal(resize_c(img, oh, ow, resample), resize_hcw(img, oh, ow, resample)), ((h, w), (oh, ow))
    rng = np.random.default_rng(3)
    for trial in range(40):
        h, w = (int(v) for v in rng.integers(1, 500, 2))
        oh, ow = (int(v) for v in rng.integers(1, 700, 2))
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        r0, c0 = int(rng.integers(0, oh)), int(rng.integers(0, ow))
        rows, cols = slice(r0, int(rng.integers(r0 + 1, oh + 1))), slice(c0, int(rng.integers(c0 + 1, ow + 1)))
        transposed = trial % 3 == 0
        ref = resize_hcw(img, oh, ow, resample, rows, cols, transposed)
        got = resize_c(img, oh, ow, resample, rows, cols, transposed)
        assert np.array_equal(got, ref), (h, w, oh, ow, rows, cols, transposed)


def test_thread_count_does_not_change_a_byte():
    from vlmforge.kernels.cpu.run import resize_hcw as resize_c

    big = random_image(1000, 1600, seed=1)
    img = np.ascontiguousarray(big[:, 50:1550])
    one = resize_c(img, 700, 1100, "bicubic", threads=1)
    assert np.array_equal(resize_c(img, 700, 1100, "bicubic", threads=3), one)
    assert np.array_equal(resize_c(big[:, 50:1550], 700, 1100, "bicubic", threads=2), one)  # rows with a gap between
    flipped = resize_c(img[::-1], 700, 1100, "bicubic")  # negative row stride: copied first
    assert np.array_equal(flipped, resize_c(img[::-1].copy(), 700, 1100, "bicubic"))


def test_out_buffer_is_written_in_place_and_checked():
    spec = SPECS["hd 4"]
    img = random_image(300, 500)
    ref, _ = tile_and_patchify(img, spec)
    buf = np.full(tile_output_shape(img.shape[:2], spec), np.nan, dtype=np.float32)
    got, _ = tile_and_patchify(img, spec, out=buf)
    assert got is buf and np.array_equal(buf, ref)  # every element written: no NaN left
    with pytest.raises(ValueError, match=r"shape .* tile_output_shape"):
        tile_and_patchify(img, spec, out=np.empty((1, 3, 336, 336), np.float32))
    with pytest.raises(ValueError, match="float16"):
        tile_and_patchify(img, spec, np.float16, out=buf)


def test_backend_choice_and_errors(monkeypatch, tmp_path):
    with pytest.raises(ValueError, match="unknown kernel backend"):
        tile_and_patchify(random_image(8, 8), SPECS["fixed crop"], backend="fortran")
    monkeypatch.setenv("VLMFORGE_CPU_KERNEL", "gpu")
    with pytest.raises(ValueError, match="VLMFORGE_CPU_KERNEL"):
        K.resolve_backend("auto")
    monkeypatch.setenv("VLMFORGE_CPU_KERNEL", "numpy")
    assert K.resolve_backend("auto") == "numpy" and K.resolve_backend("c") == "c"
    monkeypatch.delenv("VLMFORGE_CPU_KERNEL")
    # no compiler: "auto" falls back to NumPy and says why; "c" raises with the fix
    monkeypatch.setattr(K, "_C_STATE", {})
    monkeypatch.setenv("VLMFORGE_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CC", "no-such-cc")
    monkeypatch.setenv("PATH", str(tmp_path))
    from vlmforge.kernels.cpu import run

    monkeypatch.setattr(run, "library", lambda: build.load())
    assert K.resolve_backend("auto") == "numpy"
    assert "no C compiler" in str(K.c_kernel_error())
    with pytest.raises(KernelBuildError, match="apt install gcc"):
        K.resolve_backend("c")


def test_compile_error_is_reported_and_nothing_half_written(monkeypatch, tmp_path):
    broken = tmp_path / "resample.c"
    broken.write_text("int f( {")
    monkeypatch.setattr(build, "SOURCES", [broken, build.SOURCES[1]])
    monkeypatch.setenv("VLMFORGE_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(KernelBuildError, match="failed to compile resample.c"):
        build.build()
    assert list((tmp_path / "cache" / "kernels").iterdir()) == []  # the temporary file is removed


def test_unwritable_cache_falls_back_to_the_temp_folder(monkeypatch, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("VLMFORGE_CACHE_DIR", str(blocker / "cache"))  # under a file: mkdir fails
    monkeypatch.setattr(build.tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    path = build.build()
    assert path.parent == tmp_path / "tmp" / f"vlmforge-{build.os.getuid()}" / "kernels" and path.exists()
    assert build.build() == path  # found there next time, not rebuilt


def test_thread_setting(monkeypatch):
    from vlmforge.kernels.cpu.run import default_threads

    monkeypatch.setenv("VLMFORGE_KERNEL_THREADS", "3")
    assert default_threads() == 3
    monkeypatch.setenv("VLMFORGE_KERNEL_THREADS", "two")
    with pytest.raises(ValueError, match="VLMFORGE_KERNEL_THREADS"):
        default_threads()


def test_runtime_reuses_its_buffer():
    from vlmforge.runtime.preprocess import CpuPreprocess

    spec = SPECS["anyres"]
    pre = CpuPreprocess(spec)
    assert pre.kernel == "c"
    a, la = pre(random_image(400, 600, seed=1))
    first = a.copy()
    b, _ = pre(random_image(400, 600, seed=2))
    assert b is a and not np.array_equal(b, first)  # same buffer, new pixels
    assert np.array_equal(b, tile_and_patchify(random_image(400, 600, seed=2), spec)[0])
    fresh = CpuPreprocess(spec, reuse=False)
    assert fresh(random_image(400, 600))[0] is not fresh(random_image(400, 600))[0]


def _variant(monkeypatch, tmp_path, cc, options):
    """Build resample.c with ``options`` and make the C backend use that library."""
    import ctypes

    from vlmforge.kernels.cpu import run

    out = tmp_path / f"variant{len(list(tmp_path.iterdir()))}.so"
    res = build._compile(cc, options + ["-shared", "-fPIC", "-pthread"], str(out))
    assert res.returncode == 0, res.stderr
    lib = ctypes.CDLL(str(out))
    for name, args in build.SIGNATURES.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = args, ctypes.c_int
    monkeypatch.setattr(run, "library", lambda: lib)


@pytest.mark.skipif(build.platform.machine() not in ("x86_64", "AMD64"), reason="x86 instruction-set levels")
@pytest.mark.parametrize("march", ["x86-64-v2", "x86-64-v3"])
def test_portable_vector_paths_equal_numpy(monkeypatch, tmp_path, march):
    """The generic vector-extension code (what NEON targets compile: no AVX-512 intrinsics) and the
    AVX2 path give the same bytes as the reference."""
    _variant(monkeypatch, tmp_path, build.compiler(), ["-O3", f"-march={march}", "-ffp-contract=off", "-Wno-psabi"])
    for name in ("anyres", "hd 4", "fixed pad"):
        for h, w in [(333, 777), (1080, 1920), (17, 5)]:
            img = random_image(h, w, seed=11)
            ref, _ = tile_and_patchify(img, SPECS[name], backend="numpy")
            assert np.array_equal(tile_and_patchify(img, SPECS[name], backend="c")[0], ref), (march, name, h, w)


@pytest.mark.skipif(build.shutil.which("aarch64-linux-gnu-gcc") is None, reason="no aarch64 cross compiler")
def test_compiles_for_jetson_orin(tmp_path):
    """Jetson AGX Orin's cores (Cortex-A78AE): the source compiles for NEON without warnings."""
    options = ["-O3", "-mcpu=cortex-a78ae", "-ffp-contract=off", "-Wall", "-Werror", "-shared", "-fPIC", "-pthread"]
    res = build._compile("aarch64-linux-gnu-gcc", options, str(tmp_path / "resample.so"))
    assert res.returncode == 0, res.stderr
