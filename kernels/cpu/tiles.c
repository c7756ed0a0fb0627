// Normalised tile writes and InternLM-XComposer2-4KHD's global view, from the uint8 resized window
// that resample.c produces. Normalisation is transformers': float32(v · rescale) with rescale in
// double, then (· − mean) / std in float32 (no FMA: -ffp-contract=off), so the floats equal the
// NumPy reference's (3, 256) lookup table bit for bit.

#include "common.h"

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
// `wx` (4, t) the weights; `taps` (t,) how many are kept (`dense`: 4 everywhere, all inside the
// image); h is (3, t) with row stride hs.
// Scalar: AVX-512 gathers (the bytes, then the LUT) measured 1.6× slower on Zen 4.
static void view_hrow(const struct view_args *a, const int32_t *col, const float *wx, const int32_t *taps, int dense,
                      int row, float *h, int hs) {
    int t = a->t, r = row - a->top;
    const float *lut0 = a->lut, *lut1 = a->lut + 256, *lut2 = a->lut + 512;
    const uint8_t *bg = a->bg;
    const uint8_t *s0 = NULL, *s1 = NULL, *s2 = NULL;
    int padding = r < 0 || r >= a->vh;  // a padding row: every tap reads bg
    if (!padding) s0 = a->vals + (size_t)r * 3 * a->vw, s1 = s0 + a->vw, s2 = s1 + a->vw;
    if (!padding && dense) {  // every x has 4 taps inside the image (even canvas scales): no branches
        for (int x = 0; x < t; ++x) {
            int c0 = col[x], c1 = col[t + x], c2 = col[2 * t + x], c3 = col[3 * t + x];
            float w0 = wx[x], w1 = wx[t + x], w2 = wx[2 * t + x], w3 = wx[3 * t + x];
            h[x] = ((lut0[s0[c0]] * w0 + lut0[s0[c1]] * w1) + lut0[s0[c2]] * w2) + lut0[s0[c3]] * w3;
            h[hs + x] = ((lut1[s1[c0]] * w0 + lut1[s1[c1]] * w1) + lut1[s1[c2]] * w2) + lut1[s1[c3]] * w3;
            h[2 * hs + x] = ((lut2[s2[c0]] * w0 + lut2[s2[c1]] * w1) + lut2[s2[c2]] * w2) + lut2[s2[c3]] * w3;
        }
        return;
    }
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

// (t, 4) tap tables → (4, t), the nonzero taps first, in their order; returns whether every output
// has 4 taps inside the picture (view_hrow's branch-free case).
static int view_taps(const struct view_args *a, int32_t *col, float *wx, int32_t *taps) {
    int t = a->t, dense = 1;
    for (int x = 0; x < t; ++x) {
        int n = 0;
        for (int j = 0; j < 4; ++j) {
            if (a->wx[4 * x + j] == 0.0f) continue;
            int cx = a->ix[4 * x + j] - a->left;
            col[n * t + x] = cx >= 0 && cx < a->vw ? cx : -1;
            wx[n * t + x] = a->wx[4 * x + j];
            dense &= col[n * t + x] >= 0;
            ++n;
        }
        taps[x] = n;
        dense &= n == 4;
    }
    return dense;
}

// o[x] = Σ_k h[k·t + x] · w[k] over the n tap rows, summed in torch's order.
static void view_combine(const float *h, const float *w, int n, int t, float *o) {
    if (n == 1) {
        for (int x = 0; x < t; ++x) o[x] = h[x] * w[0];
    } else if (n == 4) {
        for (int x = 0; x < t; ++x) o[x] = ((h[x] * w[0] + h[t + x] * w[1]) + h[2 * t + x] * w[2]) + h[3 * t + x] * w[3];
    } else {
        for (int x = 0; x < t; ++x) {
            float v = n ? h[x] * w[0] : 0.0f;
            for (int k = 1; k < n; ++k) v = v + h[k * t + x] * w[k];
            o[x] = v;
        }
    }
}

static int view_range(void *ctx, int y0, int y1) {
    const struct view_args *a = (const struct view_args *)ctx;
    int t = a->t;
    // h: (3, 4, t) tap rows; then the (4, t) weights and the (3, t) padding row, computed once
    float *h = (float *)malloc(sizeof(float) * 19 * (size_t)t);
    int32_t *col = (int32_t *)malloc(sizeof(int32_t) * 5 * (size_t)t);
    if (!h || !col) {
        free(h);
        free(col);
        return 1;
    }
    float *wx = h + 12 * t, *pad = h + 16 * t;
    int32_t *taps = col + 4 * t;
    int dense = view_taps(a, col, wx, taps), have_pad = 0;
    for (int y = y0; y < y1; ++y) {
        const float *wy = a->wy + 4 * y;
        int n = 0;
        float w[4];
        for (int k = 0; k < 4; ++k) {  // the rows of nonzero weight only
            if (wy[k] == 0.0f) continue;
            int row = a->iy[4 * y + k], r = row - a->top;
            if (r >= 0 && r < a->vh) {
                view_hrow(a, col, wx, taps, dense, row, h + n * t, 4 * t);
            } else {  // canvas padding: every padding row is the same
                if (!have_pad) view_hrow(a, col, wx, taps, dense, row, pad, t), have_pad = 1;
                for (int c = 0; c < 3; ++c) memcpy(h + (4 * c + n) * t, pad + c * t, sizeof(float) * t);
            }
            w[n++] = wy[k];
        }
        for (int c = 0; c < 3; ++c) view_combine(h + 4 * t * c, w, n, t, a->out + ((size_t)c * t + y) * t);
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

// ---- Fuyu's patch sequence ----------------------------------------------------------------------

struct patch_args {
    const uint8_t *vals;     // resized window at canvas (vy, vx): element (row, c, x) at row·rs + c·cs + x·ps
    ptrdiff_t rs, cs, ps;    // (planar (n, 3, m) or an interleaved image's (h, w, 3) read in place)
    int vh, vw, vy, vx;
    int y0, x0, cols, p;     // the tile's canvas origin, patches per row, patch side
    const float *lut;        // (3, 256) float32: the exact normalisation table
    const float *fill;       // (3,) normalised background
    float *out;              // (rows · cols, p · p · 3) float32, each patch flattened (y, x, c)
};

// Canvas rows [r0, r1) of the tile: row y is row y % p of every patch in patch row y / p.
static int patches_range(void *ctx, int r0, int r1) {
    const struct patch_args *a = (const struct patch_args *)ctx;
    for (int y = r0; y < r1; ++y) {
        int cy = a->y0 + y - a->vy;  // row in vals
        const uint8_t *row = cy >= 0 && cy < a->vh ? a->vals + cy * a->rs : NULL;
        for (int pc = 0; pc < a->cols; ++pc) {
            float *d = a->out + (((size_t)(y / a->p) * a->cols + pc) * a->p + y % a->p) * a->p * 3;
            for (int j = 0; j < a->p; ++j, d += 3) {
                int cx = a->x0 + pc * a->p + j - a->vx;  // column in vals
                if (row && cx >= 0 && cx < a->vw) {
                    const uint8_t *s = row + cx * a->ps;
                    d[0] = a->lut[s[0]], d[1] = a->lut[256 + s[a->cs]], d[2] = a->lut[512 + s[2 * a->cs]];
                } else {
                    d[0] = a->fill[0], d[1] = a->fill[1], d[2] = a->fill[2];
                }
            }
        }
    }
    return 0;
}

int vf_write_patches(const uint8_t *vals, ptrdiff_t rs, ptrdiff_t cs, ptrdiff_t ps, int vh, int vw, int vy, int vx,
                     int y0, int x0, int rows, int cols, int p, const float *lut, const float *fill, float *out,
                     int threads) {
    struct patch_args a = {vals, rs, cs, ps, vh, vw, vy, vx, y0, x0, cols, p, lut, fill, out};
    int grain = 1 + (1 << 15) / (cols * p > 0 ? cols * p * 3 : 1);  // ≥ 128 KiB of output per chunk
    return parallel_for(rows * p, grain, threads, patches_range, &a);
}
