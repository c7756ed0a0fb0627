// Pillow-exact separable resampling and tile normalisation for the CPU, in portable C with
// GCC/Clang vector extensions (AVX2/AVX-512 on x86, NEON on Jetson's Arm cores: the compiler
// lowers the 16-lane vectors to whatever the target has). Compiled at run time by
// kernels/cpu/build.py; the NumPy reference is kernels/resample.py + kernels/plan.py.
//
// Arithmetic is Pillow's (libImaging/Resample.c, 8 bits per channel): int32 fixed-point
// coefficients with PRECISION_BITS fraction bits, accumulator seeded with half a unit, an
// arithmetic shift and a clip to 0..255 after each pass. Integer sums are exact, so every byte
// equals Pillow's — and the NumPy kernels' — in any vector width and any thread split.
//
// Layouts: images are (rows, 3·cols) uint8 with a row stride. The horizontal pass reads
// interleaved RGB rows and writes planar rows (3, cols) — the "hcw" layout of resize_hcw; the
// vertical pass treats a row as opaque bytes, so it serves both layouts.

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define PRECISION_BITS 22
#define STRIP 16            // rows per horizontal-pass strip: 3 × 16 = 48 lanes (3 vectors of 16)
#define LANES (3 * STRIP)
#define MAX_THREADS 64

typedef int32_t i32x16 __attribute__((vector_size(64)));
typedef uint8_t u8x16 __attribute__((vector_size(16)));
typedef float f32x16 __attribute__((vector_size(64)));
typedef double f64x16 __attribute__((vector_size(128)));

// 16 bytes → 16 int32 lanes. GCC lowers a direct u8 → i32 __builtin_convertvector to scalar
// byte extractions, so x86 gets the one-instruction zero extension and other targets widen in
// two steps (u8 → i16 → i32: NEON's uxtl, SSE's pmovzx).
#if defined(__AVX512F__)
#include <immintrin.h>
static inline i32x16 load_u8x16(const uint8_t *p) {
    return (i32x16)_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)p));
}
#elif defined(__AVX2__)
#include <immintrin.h>
static inline i32x16 load_u8x16(const uint8_t *p) {
    __m256i lo = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)p));
    __m256i hi = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(p + 8)));
    i32x16 r;
    memcpy(&r, &lo, 32);
    memcpy((char *)&r + 32, &hi, 32);
    return r;
}
#else
typedef int16_t i16x16 __attribute__((vector_size(32)));
static inline i32x16 load_u8x16(const uint8_t *p) {
    u8x16 v;
    memcpy(&v, p, 16);  // unaligned load
    return __builtin_convertvector(__builtin_convertvector(v, i16x16), i32x16);
}
#endif

// Pillow's clip8(acc >> PRECISION_BITS) on 16 lanes.
static inline u8x16 clip8x16(i32x16 acc) {
    i32x16 v = acc >> PRECISION_BITS;  // arithmetic shift
    v &= ~(v >> 31);                   // negatives → 0
    i32x16 big = v > 255;              // lanes: −1 where true
    v = (v & ~big) | (255 & big);
    return __builtin_convertvector(v, u8x16);
}

static inline uint8_t clip8(int32_t acc) {
    int32_t v = acc >> PRECISION_BITS;
    return (uint8_t)(v < 0 ? 0 : (v > 255 ? 255 : v));
}

// ---- a minimal thread pool: fn(ctx, begin, end) over [0, n) in chunks of `grain` ----------------

typedef void (*range_fn)(void *ctx, int begin, int end);

struct job {
    range_fn fn;
    void *ctx;
    int n, grain;
    int next;  // next unclaimed index (atomic)
};

static void *worker(void *arg) {
    struct job *j = (struct job *)arg;
    for (;;) {
        int b = __atomic_fetch_add(&j->next, j->grain, __ATOMIC_RELAXED);
        if (b >= j->n) break;
        j->fn(j->ctx, b, b + j->grain < j->n ? b + j->grain : j->n);
    }
    return NULL;
}

// Chunks are claimed dynamically, so a thread the OS deschedules delays only its own chunk.
static void parallel_for(int n, int grain, int threads, range_fn fn, void *ctx) {
    if (grain < 1) grain = 1;
    int chunks = (n + grain - 1) / grain;
    if (threads > chunks) threads = chunks;
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    if (threads <= 1) {
        if (n > 0) fn(ctx, 0, n);
        return;
    }
    struct job j = {fn, ctx, n, grain, 0};
    pthread_t tid[MAX_THREADS];
    int started = 0;
    for (int i = 0; i < threads - 1; ++i) {
        if (pthread_create(&tid[started], NULL, worker, &j) == 0) ++started;
    }
    worker(&j);  // the caller works too; if no thread could start it does everything
    for (int i = 0; i < started; ++i) pthread_join(tid[i], NULL);
}

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
static inline void transpose16(u8x16 m[16]) {
    for (int i = 0; i < 16; ++i) {
        if (i & 8) continue;
        u8x16 lo = __builtin_shufflevector(m[i], m[i + 8], 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23);
        u8x16 hi = __builtin_shufflevector(m[i], m[i + 8], 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
        m[i] = lo;
        m[i + 8] = hi;
    }
    for (int i = 0; i < 16; ++i) {
        if (i & 4) continue;
        u8x16 lo = __builtin_shufflevector(m[i], m[i + 4], 0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27);
        u8x16 hi = __builtin_shufflevector(m[i], m[i + 4], 4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31);
        m[i] = lo;
        m[i + 4] = hi;
    }
    for (int i = 0; i < 16; ++i) {
        if (i & 2) continue;
        u8x16 lo = __builtin_shufflevector(m[i], m[i + 2], 0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29);
        u8x16 hi = __builtin_shufflevector(m[i], m[i + 2], 2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31);
        m[i] = lo;
        m[i + 2] = hi;
    }
    for (int i = 0; i < 16; ++i) {
        if (i & 1) continue;
        u8x16 lo = __builtin_shufflevector(m[i], m[i + 1], 0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30);
        u8x16 hi = __builtin_shufflevector(m[i], m[i + 1], 1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31);
        m[i] = lo;
        m[i + 1] = hi;
    }
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
static void hpass_range(void *ctx, int r0, int r1) {
    const struct hpass_args *a = (const struct hpass_args *)ctx;
    uint8_t *t = (uint8_t *)calloc((size_t)a->in_w * LANES + 16, 1);
    if (!t) return;  // cannot happen for the sizes the Python side allows; output stays as allocated
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
    free(t);
}

void vf_hpass(const uint8_t *src, ptrdiff_t src_stride, int rows, int in_w, const int32_t *start,
              const int32_t *weight, const int32_t *count, int ksize, int n, uint8_t *dst,
              ptrdiff_t dst_stride, int threads) {
    struct hpass_args a = {src, src_stride, rows, in_w, start, weight, count, ksize, n, dst, dst_stride};
    // 4 strips per chunk: enough work to amortise the transposition buffer
    parallel_for(rows, 4 * STRIP, threads, hpass_range, &a);
}

// ---- vertical pass ------------------------------------------------------------------------------

struct vpass_args {
    const uint8_t *src;      // (in_h, width) bytes, row stride src_stride
    ptrdiff_t src_stride;
    int width;
    const int32_t *start, *weight, *count;
    int ksize;
    uint8_t *dst;            // (n, width), row stride dst_stride
    ptrdiff_t dst_stride;
};

static void vpass_range(void *ctx, int o0, int o1) {
    const struct vpass_args *a = (const struct vpass_args *)ctx;
    for (int o = o0; o < o1; ++o) {
        const uint8_t *base = a->src + a->start[o] * a->src_stride;
        const int32_t *w = a->weight + (size_t)o * a->ksize;
        int taps = a->count[o];
        uint8_t *d = a->dst + o * a->dst_stride;
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
}

void vf_vpass(const uint8_t *src, ptrdiff_t src_stride, int width, const int32_t *start, const int32_t *weight,
              const int32_t *count, int ksize, int n, uint8_t *dst, ptrdiff_t dst_stride, int threads) {
    struct vpass_args a = {src, src_stride, width, start, weight, count, ksize, dst, dst_stride};
    int grain = 1 + (1 << 16) / (width > 0 ? width : 1);  // ≥ 64 KiB of output per chunk
    parallel_for(n, grain, threads, vpass_range, &a);
}

// ---- normalised tile writes ---------------------------------------------------------------------

struct tile_args {
    const uint8_t *vals;     // (vh, 3, vw) planar window of the resized image at canvas (vy, vx)
    int vh, vw, vy, vx;
    const int32_t *tiles;    // (ntiles, 5): out index, canvas y0, x0 (h, w: the output's)
    int h, w;
    float *out;              // (N, 3, h, w) float32
    double rescale;
    float mean[3], std[3];
    float fill[3];           // normalised background per channel
};

// One output row: canvas row cy of channel c, columns [x0, x0 + w).
static void tile_row(const struct tile_args *a, float *d, int cy, int x0, int c) {
    int lo = a->vx > x0 ? a->vx - x0 : 0;  // first output column inside the window
    int hi = a->vx + a->vw - x0;
    if (hi > a->w) hi = a->w;
    if (cy < a->vy || cy >= a->vy + a->vh || hi <= lo) {
        for (int x = 0; x < a->w; ++x) d[x] = a->fill[c];
        return;
    }
    for (int x = 0; x < lo; ++x) d[x] = a->fill[c];
    for (int x = hi; x < a->w; ++x) d[x] = a->fill[c];
    const uint8_t *s = a->vals + ((size_t)(cy - a->vy) * 3 + c) * a->vw + (x0 + lo - a->vx);
    float *o = d + lo;
    int n = hi - lo, x = 0;
    // transformers: float32(v · rescale) (rescale in double), then (· − mean) / std in float32
    f32x16 mean = (f32x16){0} + a->mean[c], std = (f32x16){0} + a->std[c];
    for (; x + 16 <= n; x += 16) {
        f64x16 v = __builtin_convertvector(load_u8x16(s + x), f64x16) * a->rescale;
        f32x16 r = (__builtin_convertvector(v, f32x16) - mean) / std;
        memcpy(o + x, &r, 64);
    }
    for (; x < n; ++x) o[x] = ((float)(s[x] * a->rescale) - a->mean[c]) / a->std[c];
}

static void tiles_range(void *ctx, int i0, int i1) {
    const struct tile_args *a = (const struct tile_args *)ctx;
    for (int i = i0; i < i1; ++i) {  // i = (tile · 3 + channel) · h + row
        int y = i % a->h, c = (i / a->h) % 3, t = i / a->h / 3;
        const int32_t *tile = a->tiles + 5 * t;
        float *d = a->out + (((size_t)tile[0] * 3 + c) * a->h + y) * a->w;
        tile_row(a, d, tile[1] + y, tile[2], c);
    }
}

void vf_write_tiles(const uint8_t *vals, int vh, int vw, int vy, int vx, const int32_t *tiles, int ntiles,
                    int h, int w, float *out, double rescale, const float *mean, const float *std,
                    const float *fill, int threads) {
    struct tile_args a = {vals, vh, vw, vy, vx, tiles, h, w, out, rescale};
    for (int c = 0; c < 3; ++c) {
        a.mean[c] = mean[c];
        a.std[c] = std[c];
        a.fill[c] = fill[c];
    }
    int grain = 1 + (1 << 15) / (w > 0 ? w : 1);  // ≥ 128 KiB of output per chunk
    parallel_for(ntiles * 3 * h, grain, threads, tiles_range, &a);
}

// ---- InternLM-XComposer2-4KHD's global view -----------------------------------------------------

struct view_args {
    const uint8_t *vals;     // (vh, 3, vw) planar resized image at canvas (top, left); elsewhere bg
    int vh, vw, top, left;
    const int32_t *iy, *ix;  // (t, 4) canvas rows / columns of torch's bicubic taps (clamped)
    const float *wy, *wx;    // (t, 4) their float32 weights
    int t;
    const float *lut;        // (3, 256) float32 normalisation (the pixels torch interpolates)
    const uint8_t *bg;       // (3,) canvas colour
    float *out;              // (3, t, t) float32
};

// One horizontal tap row: canvas row `row`, channel c → h[x] = Σ_j v(row, ix[x, j]) · wx[x, j],
// summed left to right in float32 like torch's cubic_interp1d. `col` (t, 4) holds each tap's
// column in vals, or −1 for the canvas padding (colour bg).
static void view_hrow(const struct view_args *a, const int32_t *col, int row, int c, float *h) {
    const float *lut = a->lut + 256 * c;
    const float *wx = a->wx;
    int r = row - a->top;
    if (r < 0 || r >= a->vh) {  // a padding row: every tap reads bg
        float v = lut[a->bg[c]];
        for (int x = 0; x < a->t; ++x)
            h[x] = ((v * wx[4 * x] + v * wx[4 * x + 1]) + v * wx[4 * x + 2]) + v * wx[4 * x + 3];
        return;
    }
    const uint8_t *src = a->vals + ((size_t)r * 3 + c) * a->vw;
    uint8_t bg = a->bg[c];
    for (int x = 0; x < a->t; ++x, col += 4, wx += 4) {
        float v0 = lut[col[0] < 0 ? bg : src[col[0]]], v1 = lut[col[1] < 0 ? bg : src[col[1]]];
        float v2 = lut[col[2] < 0 ? bg : src[col[2]]], v3 = lut[col[3] < 0 ? bg : src[col[3]]];
        h[x] = ((v0 * wx[0] + v1 * wx[1]) + v2 * wx[2]) + v3 * wx[3];
    }
}

static void view_range(void *ctx, int i0, int i1) {
    const struct view_args *a = (const struct view_args *)ctx;
    float *h = (float *)malloc(sizeof(float) * 4 * (size_t)a->t);
    int32_t *col = (int32_t *)malloc(sizeof(int32_t) * 4 * (size_t)a->t);
    if (!h || !col) {
        free(h);
        free(col);
        return;
    }
    for (int k = 0; k < 4 * a->t; ++k) {
        int cx = a->ix[k] - a->left;
        col[k] = cx >= 0 && cx < a->vw ? cx : -1;
    }
    for (int i = i0; i < i1; ++i) {  // i = channel · t + output row
        int c = i / a->t, y = i % a->t;
        for (int k = 0; k < 4; ++k) view_hrow(a, col, a->iy[4 * y + k], c, h + k * a->t);
        float *o = a->out + (size_t)i * a->t;
        const float *wy = a->wy + 4 * y;
        for (int x = 0; x < a->t; ++x)
            o[x] = ((h[x] * wy[0] + h[a->t + x] * wy[1]) + h[2 * a->t + x] * wy[2]) + h[3 * a->t + x] * wy[3];
    }
    free(h);
    free(col);
}

void vf_bicubic_view(const uint8_t *vals, int vh, int vw, int top, int left, const int32_t *iy, const float *wy,
                     const int32_t *ix, const float *wx, int t, const float *lut, const uint8_t *bg, float *out,
                     int threads) {
    struct view_args a = {vals, vh, vw, top, left, iy, ix, wy, wx, t, lut, bg, out};
    parallel_for(3 * t, 8, threads, view_range, &a);
}
