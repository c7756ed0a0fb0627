// Pillow-exact resample + normalise, one thread per output element (CUDA C, NVRTC-compilable:
// no headers). The NumPy reference is kernels/plan.py + kernels/resample.py.
//
// A "placement" (kernels/plan.py): the source image, optionally pasted centred on a background
// canvas (src_top/src_left > 0, pixels outside the source read bg), is resized to (rh, rw) with Pillow's fixed-point
// coefficients — per output row: ystart[rh], yweight[rh * ky] (int32, 22 fraction bits); per
// output column: xstart[rw], xweight[rw * kx] — then placed at (top, left) on a background
// canvas of colour `fill`. A tile is the window (win_y0, win_x0, win_h, win_w) of that canvas, written through
// the (3, 256) float32 normalisation LUT into `out` at element strides (stride_c, stride_y, stride_x),
// or, when patch > 0, as Fuyu's row-major (patch·patch·3) vectors, or, when merge > 0 too, as
// Qwen2-VL's (c, t, y, x) patch vectors in merge-window order, each value written `temporal` times.
// Pillow rounds and clips to uint8 after each pass; vertical_first picks the pass order.

#define PRECISION_BITS 22

struct Resize {
    const unsigned char* src;  // (src_h, src_w, 3) uint8, row stride src_stride bytes
    int src_h, src_w;
    long long src_stride;
    int src_top, src_left;  // source pasted at (src_top, src_left) on a background canvas (pad-to-square)
    const int* ystart; const int* yweight; int ky;
    const int* xstart; const int* xweight; int kx;
    int rh, rw, vertical_first;
    const unsigned char* bg;  // (3,) background of the source canvas
};

__device__ __forceinline__ int clip8(int acc) {
    int v = acc >> PRECISION_BITS;  // arithmetic shift, as Pillow's clip8
    return v < 0 ? 0 : (v > 255 ? 255 : v);
}

__device__ __forceinline__ int source_px(const Resize& r, int y, int x, int c) {
    int sy = y - r.src_top, sx = x - r.src_left;
    if (sy < 0 || sy >= r.src_h || sx < 0 || sx >= r.src_w) return r.bg[c];
    return r.src[sy * r.src_stride + sx * 3 + c];
}

// uint8 value of the resized image at (y, x), channel c
__device__ int resized_px(const Resize& r, int y, int x, int c) {
    int acc = 1 << (PRECISION_BITS - 1);
    if (!r.vertical_first) {
        for (int i = 0; i < r.ky; ++i) {
            int wy = r.yweight[y * r.ky + i];
            if (wy == 0) continue;  // zero taps may lie past the input edge
            int sy = r.ystart[y] + i;
            int h = 1 << (PRECISION_BITS - 1);
            for (int j = 0; j < r.kx; ++j) {
                int wx = r.xweight[x * r.kx + j];
                if (wx != 0) h += source_px(r, sy, r.xstart[x] + j, c) * wx;
            }
            acc += clip8(h) * wy;
        }
    } else {
        for (int j = 0; j < r.kx; ++j) {
            int wx = r.xweight[x * r.kx + j];
            if (wx == 0) continue;
            int sx = r.xstart[x] + j;
            int v = 1 << (PRECISION_BITS - 1);
            for (int i = 0; i < r.ky; ++i) {
                int wy = r.yweight[y * r.ky + i];
                if (wy != 0) v += source_px(r, r.ystart[y] + i, sx, c) * wy;
            }
            acc += clip8(v) * wx;
        }
    }
    return clip8(acc);
}

__device__ __forceinline__ void store(float* out, long long i, float v) { out[i] = v; }
__device__ __forceinline__ void store(unsigned short* out, long long i, float v) {
    unsigned short h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(v));  // round to nearest even, as numpy's astype
    out[i] = h;
}

template <typename T>
__device__ void tile_kernel(Resize r, const unsigned char* fill, int top, int left, int win_y0, int win_x0, int win_h, int win_w,
                            const float* lut, T* out, long long stride_c, long long stride_y,
                            long long stride_x, int patch, int merge, int temporal) {
    int wx = blockIdx.x * blockDim.x + threadIdx.x;
    int wy = blockIdx.y * blockDim.y + threadIdx.y;
    int c = blockIdx.z;
    if (wx >= win_w || wy >= win_h) return;
    int y = win_y0 + wy - top, x = win_x0 + wx - left;
    int v = (y < 0 || y >= r.rh || x < 0 || x >= r.rw) ? fill[c] : resized_px(r, y, x, c);
    long long i;
    if (patch > 0 && merge > 0) {  // native: patch n of the merge-window order, vector (c, t, py, px)
        int gy = wy / patch, gx = wx / patch, windows_across = win_w / patch / merge;
        long long n = ((long long)((gy / merge) * windows_across + gx / merge) * merge + gy % merge) * merge + gx % merge;
        long long area = (long long)patch * patch;
        long long base = n * 3 * temporal * area + (wy % patch) * patch + wx % patch;
        float value = lut[c * 256 + v];
        for (int t = 0; t < temporal; ++t) store(out, base + (long long)(c * temporal + t) * area, value);
        return;
    }
    if (patch > 0) {  // Fuyu: patch n = (wy / p) * cols + wx / p, flattened (y, x, c)
        long long n = (long long)(wy / patch) * (win_w / patch) + wx / patch;
        i = n * patch * patch * 3 + ((wy % patch) * patch + wx % patch) * 3 + c;
    } else {
        i = c * stride_c + wy * stride_y + wx * stride_x;
    }
    store(out, i, lut[c * 256 + v]);
}

// torch upsample_bicubic2d (align_corners=False, A = -0.75) of the normalised canvas (ch, cw),
// whose pixels are the resized image at (top, left) on background: the HD global view.
__device__ __forceinline__ float cubic_near(float x) { return ((-0.75f + 2.0f) * x - (-0.75f + 3.0f)) * x * x + 1.0f; }
__device__ __forceinline__ float cubic_far(float x) { return ((-0.75f * x + 3.75f) * x - 6.0f) * x + 3.0f; }

__device__ void cubic_taps(int in_size, int out_size, int o, int* idx, float* w) {
    float scale = (float)in_size / (float)out_size;
    float src = scale * (o + 0.5f) - 0.5f;
    float f = floorf(src);
    float t = src - f;
    w[0] = cubic_far(t + 1.0f); w[1] = cubic_near(t); w[2] = cubic_near(1.0f - t); w[3] = cubic_far(2.0f - t);
    for (int k = 0; k < 4; ++k) {
        int v = (int)f - 1 + k;
        idx[k] = v < 0 ? 0 : (v >= in_size ? in_size - 1 : v);
    }
}

template <typename T>
__device__ void global_kernel(Resize r, const unsigned char* fill, int top, int left, int ch, int cw, int size, const float* lut, T* out) {
    int ox = blockIdx.x * blockDim.x + threadIdx.x;
    int oy = blockIdx.y * blockDim.y + threadIdx.y;
    int c = blockIdx.z;
    if (ox >= size || oy >= size) return;
    int iy[4], ix[4];
    float wy[4], wx[4];
    cubic_taps(ch, size, oy, iy, wy);
    cubic_taps(cw, size, ox, ix, wx);
    float acc = 0.0f;
    for (int i = 0; i < 4; ++i) {
        float row = 0.0f;
        for (int j = 0; j < 4; ++j) {
            int y = iy[i] - top, x = ix[j] - left;
            int v = (y < 0 || y >= r.rh || x < 0 || x >= r.rw) ? fill[c] : resized_px(r, y, x, c);
            row += lut[c * 256 + v] * wx[j];
        }
        acc += row * wy[i];
    }
    store(out, ((long long)c * size + oy) * size + ox, acc);
}

extern "C" __global__ void resample_normalise_f32(Resize r, const unsigned char* fill, int top, int left, int win_y0, int win_x0, int win_h,
                                                  int win_w, const float* lut, float* out, long long stride_c,
                                                  long long stride_y, long long stride_x, int patch, int merge,
                                                  int temporal) {
    tile_kernel<float>(r, fill, top, left, win_y0, win_x0, win_h, win_w, lut, out, stride_c, stride_y, stride_x, patch,
                     merge, temporal);
}

extern "C" __global__ void resample_normalise_f16(Resize r, const unsigned char* fill, int top, int left, int win_y0, int win_x0, int win_h,
                                                  int win_w, const float* lut, unsigned short* out, long long stride_c,
                                                  long long stride_y, long long stride_x, int patch, int merge,
                                                  int temporal) {
    tile_kernel<unsigned short>(r, fill, top, left, win_y0, win_x0, win_h, win_w, lut, out, stride_c, stride_y, stride_x, patch,
                     merge, temporal);
}

extern "C" __global__ void bicubic_global_f32(Resize r, const unsigned char* fill, int top, int left, int ch, int cw, int size, const float* lut,
                                              float* out) {
    global_kernel<float>(r, fill, top, left, ch, cw, size, lut, out);
}

extern "C" __global__ void bicubic_global_f16(Resize r, const unsigned char* fill, int top, int left, int ch, int cw, int size, const float* lut,
                                              unsigned short* out) {
    global_kernel<unsigned short>(r, fill, top, left, ch, cw, size, lut, out);
}
