// Shared by resample.c and tiles.c: 16-lane vector types (GCC/Clang vector extensions, lowered to
// AVX2/AVX-512 on x86 and NEON on Jetson's Arm cores), Pillow's clip, and a minimal thread pool.
// Compiled at run time by kernels/cpu/build.py.

#ifndef VLMFORGE_CPU_COMMON_H
#define VLMFORGE_CPU_COMMON_H

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

// A two-input byte shuffle with constant indices: __builtin_shufflevector (Clang, GCC ≥ 12), or
// GCC's older __builtin_shuffle with a mask vector (GCC 11 is JetPack 6's compiler).
#if defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 12)
#define SHUFFLE16(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#else
#define SHUFFLE16(a, b, ...) __builtin_shuffle(a, b, (u8x16){__VA_ARGS__})
#endif

#endif  // VLMFORGE_CPU_COMMON_H
