// Pillow-exact separable resampling for the CPU (tiles.c writes the normalised tiles), in portable
// C with GCC/Clang vector extensions (common.h). Compiled at run time by kernels/cpu/build.py; the
// NumPy reference is kernels/resample.py.
//
// Arithmetic is Pillow's (libImaging/Resample.c, 8 bits per channel): int32 fixed-point
// coefficients with PRECISION_BITS fraction bits, accumulator seeded with half a unit, an
// arithmetic shift and a clip to 0..255 after each pass. Integer sums are exact, so every byte
// equals Pillow's — and the NumPy kernels' — in any vector width and any thread split.
//
// Layouts: images are (rows, 3·cols) uint8 with a row stride. The horizontal pass reads
// interleaved RGB rows and writes planar rows (3, cols) — the "hcw" layout of resize_hcw; the
// vertical pass treats a row as opaque bytes, so it serves both layouts.

#include "common.h"

// ---- horizontal pass ----------------------------------------------------------------------------

struct hpass_args {
    const uint8_t *src;      // (rows, ≥ 3·in_w) interleaved RGB, row stride src_stride
    ptrdiff_t src_stride;
    int rows, in_w;          // in_w: input columns the coefficients may read
    const int32_t *start;    // (n,) first input column of each output column
    const int32_t *weight;   // (n, ksize) Pillow's integer coefficients
    const int32_t *count;    // (n,) taps inside the input (≤ ksize; the rest weigh 0)
    int ksize, n;
    uint8_t *dst;            // (rows, 3, n) planar, row stride dst_stride
    ptrdiff_t dst_stride;
};

// t[x·48 + 3r + c] = pixel (r, x) channel c for the strip's rows: a pixel is copied as one 4-byte
// word (its 4th byte lands on the next lane and is overwritten next, or falls in t's 16 spare
// bytes), except the row's last pixel, whose 4th byte may lie past the image.
static void transpose_strip(const uint8_t *src, ptrdiff_t stride, int rows, int in_w, uint8_t *t) {
    for (int x = 0; x < in_w - 1; ++x) {
        uint8_t *tx = t + (size_t)x * LANES;
        const uint8_t *s = src + 3 * x;
        for (int r = 0; r < rows; ++r) {
            uint32_t v;
            memcpy(&v, s + r * stride, 4);
            memcpy(tx + 3 * r, &v, 4);
        }
    }
    uint8_t *tx = t + (size_t)(in_w - 1) * LANES;
    for (int r = 0; r < rows; ++r) memcpy(tx + 3 * r, src + r * stride + 3 * (in_w - 1), 3);
}

// In-register transpose of a 16 × 16 byte block (rows m[0..15] → columns), by swapping the
// off-diagonal b × b blocks of the row pairs (i, i + b) for b = 8, 4, 2, 1: 64 two-input shuffles.
// LO / HI: the (constant) byte indices of the pair's new rows i and i + b.
#define INDICES(...) __VA_ARGS__
#define SWAP_BLOCKS(b, LO, HI)                                    \
    for (int i = 0; i < 16; ++i) {                                \
        if (i & (b)) continue;                                    \
        u8x16 lo = SHUFFLE16(m[i], m[i + (b)], INDICES LO);       \
        u8x16 hi = SHUFFLE16(m[i], m[i + (b)], INDICES HI);       \
        m[i] = lo, m[i + (b)] = hi;                               \
    }
static inline void transpose16(u8x16 m[16]) {
    SWAP_BLOCKS(8, (0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23),
                (8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31))
    SWAP_BLOCKS(4, (0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27),
                (4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31))
    SWAP_BLOCKS(2, (0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29),
                (2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31))
    SWAP_BLOCKS(1, (0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30),
                (1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31))
}

// The 48 clipped lanes of output column o: 16 rows × 3 channels.
static inline void hpass_column(const struct hpass_args *a, const uint8_t *t, int o, uint8_t lanes[LANES]) {
    const uint8_t *tp = t + (size_t)a->start[o] * LANES;
    const int32_t *w = a->weight + (size_t)o * a->ksize;
    i32x16 acc0, acc1, acc2;
    acc0 = acc1 = acc2 = (i32x16){0} + (1 << (PRECISION_BITS - 1));
    for (int k = 0; k < a->count[o]; ++k, tp += LANES) {
        int32_t wk = w[k];
        acc0 += load_u8x16(tp) * wk;
        acc1 += load_u8x16(tp + 16) * wk;
        acc2 += load_u8x16(tp + 32) * wk;
    }
    u8x16 v0 = clip8x16(acc0), v1 = clip8x16(acc1), v2 = clip8x16(acc2);
    memcpy(lanes, &v0, 16);
    memcpy(lanes + 16, &v1, 16);
    memcpy(lanes + 32, &v2, 16);
}

// Rows [r0, r1): STRIP rows at a time are transposed into t (in_w, 48) so that one output
// column of all 16 rows × 3 channels is 3 vector multiply-adds per tap; 16 output columns'
// lanes are then transposed back in registers and stored as 16-byte runs of each planar row.
static void hpass_rows(const struct hpass_args *a, int r0, int r1, uint8_t *t) {
    uint8_t blk[16][LANES];
    for (int s0 = r0; s0 < r1; s0 += STRIP) {
        int rows = r1 - s0 < STRIP ? r1 - s0 : STRIP;
        transpose_strip(a->src + s0 * a->src_stride, a->src_stride, rows, a->in_w, t);
        uint8_t *dst = a->dst + s0 * a->dst_stride;
        int o0 = 0;
        for (; o0 + 16 <= a->n; o0 += 16) {
            for (int q = 0; q < 16; ++q) hpass_column(a, t, o0 + q, blk[q]);
            for (int g = 0; g < 3; ++g) {
                u8x16 m[16];
                for (int q = 0; q < 16; ++q) memcpy(&m[q], blk[q] + 16 * g, 16);
                transpose16(m);  // m[l] = lane 16g + l of the 16 columns
                for (int l = 0; l < 16; ++l) {
                    int lane = 16 * g + l, r = lane / 3, c = lane % 3;
                    if (r < rows) memcpy(dst + r * a->dst_stride + c * a->n + o0, &m[l], 16);
                }
            }
        }
        for (int o = o0; o < a->n; ++o) {
            hpass_column(a, t, o, blk[0]);
            for (int r = 0; r < rows; ++r)
                for (int c = 0; c < 3; ++c) dst[r * a->dst_stride + c * a->n + o] = blk[0][3 * r + c];
        }
    }
}

static int hpass_range(void *ctx, int r0, int r1) {
    const struct hpass_args *a = (const struct hpass_args *)ctx;
    uint8_t *t = (uint8_t *)calloc((size_t)a->in_w * LANES + 16, 1);
    if (!t) return 1;
    hpass_rows(a, r0, r1, t);
    free(t);
    return 0;
}

int vf_hpass(const uint8_t *src, ptrdiff_t src_stride, int rows, int in_w, const int32_t *start,
              const int32_t *weight, const int32_t *count, int ksize, int n, uint8_t *dst,
              ptrdiff_t dst_stride, int threads) {
    struct hpass_args a = {src, src_stride, rows, in_w, start, weight, count, ksize, n, dst, dst_stride};
    // 4 strips per chunk: enough work to amortise the transposition buffer
    return parallel_for(rows, 4 * STRIP, threads, hpass_range, &a);
}

// ---- vertical pass ------------------------------------------------------------------------------

struct vpass_args {
    const uint8_t *src;      // (in_h, width) bytes, row stride src_stride; src row 0 is input row src_row0
    ptrdiff_t src_stride;
    int width;
    const int32_t *start, *weight, *count;
    int ksize;
    uint8_t *dst;            // (n, width), row stride dst_stride; dst row 0 is output row dst_row0
    ptrdiff_t dst_stride;
    int src_row0, dst_row0;  // nonzero when src / dst hold a band of rows (the fused resize)
};

static int vpass_range(void *ctx, int o0, int o1) {
    const struct vpass_args *a = (const struct vpass_args *)ctx;
    for (int o = o0; o < o1; ++o) {
        const uint8_t *base = a->src + (ptrdiff_t)(a->start[o] - a->src_row0) * a->src_stride;
        const int32_t *w = a->weight + (size_t)o * a->ksize;
        int taps = a->count[o];
        uint8_t *d = a->dst + (ptrdiff_t)(o - a->dst_row0) * a->dst_stride;
        int j = 0;
        for (; j + 32 <= a->width; j += 32) {
            i32x16 acc0, acc1;
            acc0 = acc1 = (i32x16){0} + (1 << (PRECISION_BITS - 1));
            const uint8_t *p = base + j;
            for (int k = 0; k < taps; ++k, p += a->src_stride) {
                acc0 += load_u8x16(p) * w[k];
                acc1 += load_u8x16(p + 16) * w[k];
            }
            u8x16 v0 = clip8x16(acc0), v1 = clip8x16(acc1);
            memcpy(d + j, &v0, 16);
            memcpy(d + j + 16, &v1, 16);
        }
        for (; j < a->width; ++j) {
            int32_t acc = 1 << (PRECISION_BITS - 1);
            for (int k = 0; k < taps; ++k) acc += base[k * a->src_stride + j] * w[k];
            d[j] = clip8(acc);
        }
    }
    return 0;
}

int vf_vpass(const uint8_t *src, ptrdiff_t src_stride, int width, const int32_t *start, const int32_t *weight,
              const int32_t *count, int ksize, int n, uint8_t *dst, ptrdiff_t dst_stride, int threads) {
    struct vpass_args a = {src, src_stride, width, start, weight, count, ksize, dst, dst_stride, 0, 0};
    int grain = 1 + (1 << 16) / (width > 0 ? width : 1);  // ≥ 64 KiB of output per chunk
    return parallel_for(n, grain, threads, vpass_range, &a);
}

// ---- both passes, a band of output rows at a time ----------------------------------------------
// Each band's intermediate rows (≤ ~512 KiB) stay in the thread's cache instead of a whole
// intermediate image going through memory; bands are independent, so threads take them in turn.
// Horizontal first: a band re-runs the horizontal pass over the few input rows it shares with its
// neighbour (the vertical taps' overlap) — the same bytes, computed twice.

struct resize_args {
    struct hpass_args h;  // src: the image (h.src, rows = in_h); dst unused
    struct vpass_args v;  // start/weight/count of the output rows; dst: the output
    int vertical_first;
};

static int resize_range(void *ctx, int o0, int o1) {
    const struct resize_args *a = (const struct resize_args *)ctx;
    struct hpass_args h = a->h;
    struct vpass_args v = a->v;
    uint8_t *t = (uint8_t *)calloc((size_t)h.in_w * LANES + 16, 1);
    uint8_t *mid = NULL;
    if (!t) return 1;
    if (a->vertical_first) {  // mid: (o1 − o0, in_w, 3) interleaved rows, then horizontal into dst
        size_t row = (size_t)v.width;
        mid = (uint8_t *)malloc((o1 - o0) * row);
        if (mid) {
            v.dst = mid, v.dst_stride = (ptrdiff_t)row, v.dst_row0 = o0;
            vpass_range(&v, o0, o1);
            h.src = mid, h.src_stride = (ptrdiff_t)row, h.dst = a->v.dst + (ptrdiff_t)o0 * a->v.dst_stride;
            h.dst_stride = a->v.dst_stride;
            hpass_rows(&h, 0, o1 - o0, t);
        }
    } else {  // mid: (r1 − r0, 3, n) planar rows of the input rows the band reads, then vertical
        int r0 = v.start[o0], r1 = r0;
        for (int o = o0; o < o1; ++o)
            if (v.start[o] + v.count[o] > r1) r1 = v.start[o] + v.count[o];
        size_t row = (size_t)3 * h.n;
        mid = (uint8_t *)malloc((size_t)(r1 > r0 ? r1 - r0 : 1) * row);
        if (mid) {
            h.src = a->h.src + (ptrdiff_t)r0 * a->h.src_stride, h.dst = mid, h.dst_stride = (ptrdiff_t)row;
            hpass_rows(&h, 0, r1 - r0, t);
            v.src = mid, v.src_stride = (ptrdiff_t)row, v.src_row0 = r0;
            vpass_range(&v, o0, o1);
        }
    }
    int failed = mid == NULL;
    free(mid);
    free(t);
    return failed;
}

// src (in_h, in_w, 3) → dst (n_rows, 3, n_cols) planar; y*/x*: the vertical / horizontal tables.
int vf_resize(const uint8_t *src, ptrdiff_t src_stride, int in_h, int in_w, const int32_t *ystart,
               const int32_t *yweight, const int32_t *ycount, int ky, int n_rows, const int32_t *xstart,
               const int32_t *xweight, const int32_t *xcount, int kx, int n_cols, int vertical_first,
               uint8_t *dst, ptrdiff_t dst_stride, int threads) {
    struct resize_args a;
    a.h = (struct hpass_args){src, src_stride, in_h, in_w, xstart, xweight, xcount, kx, n_cols, NULL, 0};
    int width = vertical_first ? 3 * in_w : 3 * n_cols;  // bytes of an intermediate row
    a.v = (struct vpass_args){src, src_stride, width, ystart, yweight, ycount, ky, dst, dst_stride, 0, 0};
    a.vertical_first = vertical_first;
    // intermediate rows per output row: 1 (vertical first) or ~ in_h / n_rows (horizontal first)
    double per_out = vertical_first ? 1.0 : (double)in_h / (n_rows > 0 ? n_rows : 1);
    int band = (int)((1 << 19) / (per_out * width + 1.0));
    band = band < 8 ? 8 : band;
    return parallel_for(n_rows, band, threads, resize_range, &a);
}
