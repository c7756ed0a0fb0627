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
#if defined(__AVX512F__)
static inline u8x16 clip8x16(i32x16 acc) {  // shift, max(·, 0), unsigned-saturating narrow: 3 instructions
    __m512i v = _mm512_max_epi32(_mm512_srai_epi32((__m512i)acc, PRECISION_BITS), _mm512_setzero_si512());
    return (u8x16)_mm512_cvtusepi32_epi8(v);
}
#else
static inline u8x16 clip8x16(i32x16 acc) {
    i32x16 v = acc >> PRECISION_BITS;  // arithmetic shift
    v &= ~(v >> 31);                   // negatives → 0
    i32x16 big = v > 255;              // lanes: −1 where true
    v = (v & ~big) | (255 & big);
    return __builtin_convertvector(v, u8x16);
}
#endif

static inline uint8_t clip8(int32_t acc) {
    int32_t v = acc >> PRECISION_BITS;
    return (uint8_t)(v < 0 ? 0 : (v > 255 ? 255 : v));
}

// ---- a minimal thread pool: fn(ctx, begin, end) over [0, n) in chunks of `grain` ----------------

typedef int (*range_fn)(void *ctx, int begin, int end);  // nonzero: out of memory

struct job {
    range_fn fn;
    void *ctx;
    int n, grain;
    int next;    // next unclaimed index (atomic)
    int failed;  // chunks whose fn failed (atomic)
};

static void *worker(void *arg) {
    struct job *j = (struct job *)arg;
    for (;;) {
        int b = __atomic_fetch_add(&j->next, j->grain, __ATOMIC_RELAXED);
        if (b >= j->n) break;
        if (j->fn(j->ctx, b, b + j->grain < j->n ? b + j->grain : j->n)) __atomic_fetch_add(&j->failed, 1, __ATOMIC_RELAXED);
    }
    return NULL;
}

// Chunks are claimed dynamically, so a thread the OS deschedules delays only its own chunk.
// Returns the number of chunks that failed (0: every output byte written).
static int parallel_for(int n, int grain, int threads, range_fn fn, void *ctx) {
    if (grain < 1) grain = 1;
    int chunks = (n + grain - 1) / grain;
    if (threads > chunks) threads = chunks;
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    if (threads <= 1) return n > 0 ? (fn(ctx, 0, n) != 0) : 0;
    struct job j = {fn, ctx, n, grain, 0, 0};
    pthread_t tid[MAX_THREADS];
    int started = 0;
    for (int i = 0; i < threads - 1; ++i) {
        if (pthread_create(&tid[started], NULL, worker, &j) == 0) ++started;
    }
    worker(&j);  // the caller works too; if no thread could start it does everything
    for (int i = 0; i < started; ++i) pthread_join(tid[i], NULL);
    return j.failed;
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

// A two-input byte shuffle with constant indices: __builtin_shufflevector (Clang, GCC ≥ 12), or
// GCC's older __builtin_shuffle with a mask vector (GCC 11 is JetPack 6's compiler).
#if defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 12)
#define SHUFFLE16(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#else
#define SHUFFLE16(a, b, ...) __builtin_shuffle(a, b, (u8x16){__VA_ARGS__})
#endif

// In-register transpose of a 16 × 16 byte block (rows m[0..15] → columns), by swapping the
// off-diagonal b × b blocks of the row pairs (i, i + b) for b = 8, 4, 2, 1: 64 two-input shuffles.
static inline void transpose16(u8x16 m[16]) {
    for (int i = 0; i < 16; ++i) {
        if (i & 8) continue;
        u8x16 lo = SHUFFLE16(m[i], m[i + 8], 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23);
        u8x16 hi = SHUFFLE16(m[i], m[i + 8], 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
        m[i] = lo;
        m[i + 8] = hi;
    }
    for (int i = 0; i < 16; ++i) {
        if (i & 4) continue;
        u8x16 lo = SHUFFLE16(m[i], m[i + 4], 0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27);
        u8x16 hi = SHUFFLE16(m[i], m[i + 4], 4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31);
        m[i] = lo;
        m[i + 4] = hi;
    }
    for (int i = 0; i < 16; ++i) {
        if (i & 2) continue;
        u8x16 lo = SHUFFLE16(m[i], m[i + 2], 0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29);
        u8x16 hi = SHUFFLE16(m[i], m[i + 2], 2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31);
        m[i] = lo;
        m[i + 2] = hi;
    }
    for (int i = 0; i < 16; ++i) {
        if (i & 1) continue;
        u8x16 lo = SHUFFLE16(m[i], m[i + 1], 0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30);
        u8x16 hi = SHUFFLE16(m[i], m[i + 1], 1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31);
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

static int tiles_range(void *ctx, int i0, int i1) {
    const struct tile_args *a = (const struct tile_args *)ctx;
    for (int i = i0; i < i1; ++i) {  // i = (tile · 3 + channel) · h + row
        int y = i % a->h, c = (i / a->h) % 3, t = i / a->h / 3;
        const int32_t *tile = a->tiles + 5 * t;
        float *d = a->out + (((size_t)tile[0] * 3 + c) * a->h + y) * a->w;
        tile_row(a, d, tile[1] + y, tile[2], c);
    }
    return 0;
}

int vf_write_tiles(const uint8_t *vals, int vh, int vw, int vy, int vx, const int32_t *tiles, int ntiles,
                    int h, int w, float *out, double rescale, const float *mean, const float *std,
                    const float *fill, int threads) {
    struct tile_args a = {vals, vh, vw, vy, vx, tiles, h, w, out, rescale, {0}, {0}, {0}};
    for (int c = 0; c < 3; ++c) {
        a.mean[c] = mean[c];
        a.std[c] = std[c];
        a.fill[c] = fill[c];
    }
    int grain = 1 + (1 << 15) / (w > 0 ? w : 1);  // ≥ 128 KiB of output per chunk
    return parallel_for(ntiles * 3 * h, grain, threads, tiles_range, &a);
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

// One horizontal tap row of all 3 channels: canvas row `row` → h[c][x] = Σ_j v(row, ix[x, j], c)
// · wx[x, j], summed left to right in float32 like torch's cubic_interp1d (products rounded, then
// added: no FMA). Taps of weight exactly 0 are skipped: their products are ±0, which leave every
// sum unchanged — and at odd integer scales (a canvas of 3, 5, 7 tiles) 3 of the 4 taps weigh 0.
// `col` (4, t) holds each kept tap's column in vals, or −1 for the canvas padding (colour bg);
// `wx` (4, t) the weights; `taps` (t,) how many are kept; h is (3, t) with row stride hs.
// Scalar: AVX-512 gathers (the bytes, then the LUT) measured 1.6× slower on Zen 4.
static void view_hrow(const struct view_args *a, const int32_t *col, const float *wx, const int32_t *taps, int row,
                      float *h, int hs) {
    int t = a->t, r = row - a->top;
    const float *lut0 = a->lut, *lut1 = a->lut + 256, *lut2 = a->lut + 512;
    const uint8_t *bg = a->bg;
    const uint8_t *s0 = NULL, *s1 = NULL, *s2 = NULL;
    int padding = r < 0 || r >= a->vh;  // a padding row: every tap reads bg
    if (!padding) s0 = a->vals + (size_t)r * 3 * a->vw, s1 = s0 + a->vw, s2 = s1 + a->vw;
    for (int x = 0; x < t; ++x) {
        float acc0 = 0.0f, acc1 = 0.0f, acc2 = 0.0f;
        for (int j = 0; j < taps[x]; ++j) {
            int cj = padding ? -1 : col[j * t + x];
            float w = wx[j * t + x];
            float p0 = lut0[cj < 0 ? bg[0] : s0[cj]] * w, p1 = lut1[cj < 0 ? bg[1] : s1[cj]] * w;
            float p2 = lut2[cj < 0 ? bg[2] : s2[cj]] * w;
            if (j == 0) {
                acc0 = p0, acc1 = p1, acc2 = p2;
            } else {
                acc0 = acc0 + p0, acc1 = acc1 + p1, acc2 = acc2 + p2;
            }
        }
        h[x] = acc0, h[hs + x] = acc1, h[2 * hs + x] = acc2;
    }
}

static int view_range(void *ctx, int y0, int y1) {
    const struct view_args *a = (const struct view_args *)ctx;
    int t = a->t;
    float *h = (float *)malloc(sizeof(float) * 16 * (size_t)t);  // ≤ 4 tap rows × 3 channels + the (4, t) weights
    int32_t *col = (int32_t *)malloc(sizeof(int32_t) * 5 * (size_t)t);
    if (!h || !col) {
        free(h);
        free(col);
        return 1;
    }
    float *wx = h + 12 * t;
    int32_t *taps = col + 4 * t;
    for (int x = 0; x < t; ++x) {  // (t, 4) → (4, t), the nonzero taps first, in their order
        int n = 0;
        for (int j = 0; j < 4; ++j) {
            if (a->wx[4 * x + j] == 0.0f) continue;
            int cx = a->ix[4 * x + j] - a->left;
            col[n * t + x] = cx >= 0 && cx < a->vw ? cx : -1;
            wx[n * t + x] = a->wx[4 * x + j];
            ++n;
        }
        taps[x] = n;
    }
    for (int y = y0; y < y1; ++y) {
        const float *wy = a->wy + 4 * y;
        int n = 0;
        float w[4];
        for (int k = 0; k < 4; ++k) {  // h: (3, n, t), the rows of nonzero weight only
            if (wy[k] == 0.0f) continue;
            view_hrow(a, col, wx, taps, a->iy[4 * y + k], h + n * t, 4 * t);
            w[n++] = wy[k];
        }
        for (int c = 0; c < 3; ++c) {
            const float *hc = h + 4 * t * c;
            float *o = a->out + ((size_t)c * t + y) * t;
            if (n == 0) {
                for (int x = 0; x < t; ++x) o[x] = 0.0f;
            } else if (n == 1) {
                for (int x = 0; x < t; ++x) o[x] = hc[x] * w[0];
            } else if (n == 4) {
                for (int x = 0; x < t; ++x)
                    o[x] = ((hc[x] * w[0] + hc[t + x] * w[1]) + hc[2 * t + x] * w[2]) + hc[3 * t + x] * w[3];
            } else {
                for (int x = 0; x < t; ++x) {
                    float v = hc[x] * w[0];
                    for (int k = 1; k < n; ++k) v = v + hc[k * t + x] * w[k];
                    o[x] = v;
                }
            }
        }
    }
    free(h);
    free(col);
    return 0;
}

int vf_bicubic_view(const uint8_t *vals, int vh, int vw, int top, int left, const int32_t *iy, const float *wy,
                     const int32_t *ix, const float *wx, int t, const float *lut, const uint8_t *bg, float *out,
                     int threads) {
    struct view_args a = {vals, vh, vw, top, left, iy, ix, wy, wx, t, lut, bg, out};
    return parallel_for(t, 4, threads, view_range, &a);
}
