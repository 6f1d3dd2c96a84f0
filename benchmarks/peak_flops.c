/* The arithmetic peak of this CPU, measured rather than looked up in a table.
 *
 * - clock: a dependent chain of 64-bit integer multiplies (IMUL r64, r64: 3 cycles of
 *   latency on every Intel core since Sandy Bridge and every AMD Zen), timed by the wall
 *   clock, so the figure is the clock the core really runs at under load (turbo
 *   included), not the nominal one. (A chain of add-immediates is not a clock: recent
 *   Intel cores fold them at rename and ran it at "19 GHz".)
 * - throughput: VDPBF16PS (AVX-512 BF16: 16 fp32 lanes, each the sum of two bf16
 *   products, 64 FLOP per instruction) and VFMADD (fp32: 32 FLOP per 512-bit instruction)
 *   with 12 independent accumulators, more than any core's latency x pipes needs, so
 *   the loop runs at the instruction's throughput, one thread per core.
 * - AMX, where the CPU has it (Sapphire Rapids and later): TDPBF16PS, a 16x16 fp32 tile
 *   += (16x32 bf16) x (32x16 bf16), 16,384 FLOP per instruction, on four independent
 *   accumulator tiles. This is what oneDNN's bf16 GEMMs use on such a CPU, so it is the
 *   bf16 peak there; the AVX-512 figure stays beside it.
 *
 * Usage: peak_flops THREADS [ITERATIONS]; prints one JSON object. Built and run by
 * benchmarks/common.py's peak_flops(): cc -O2 -mavx512f -mavx512bf16 [-mamx-tile
 * -mamx-bf16 -DWITH_AMX] -pthread. */
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#ifdef WITH_AMX
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

static double clock_hz(long n) {
    unsigned long x = 3, y = 5;
    double t0 = now();
    for (long i = 0; i < n; i++) {
        __asm__ volatile(
            "imul %1, %0\n\timul %1, %0\n\timul %1, %0\n\timul %1, %0\n\t"
            "imul %1, %0\n\timul %1, %0\n\timul %1, %0\n\timul %1, %0\n\t"
            : "+r"(x) : "r"(y));
    }
    double dt = now() - t0;
    return 3.0 * 8.0 * n / dt;
}

#define ACC 12
typedef struct { long n; int kind; double seconds; float sink; } job;

/* 12 accumulators in named variables: the compiler keeps them in registers (an array
 * of them ends up in memory, a load and a store per instruction). */
#define REP12(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)
#define DECL(k) __m512 a##k = _mm512_set1_ps(0.001f * k);
#define DOT(k) a##k = _mm512_dpbf16_ps(a##k, xh, yh);
#define FMA(k) a##k = _mm512_fmadd_ps(a##k, x, y);
#define SUM(k) s += _mm512_reduce_add_ps(a##k);

#ifdef WITH_AMX
/* Ask Linux for the AMX tile state (off by default for a process); 0 when granted. */
static int amx_permitted(void) { return (int)syscall(SYS_arch_prctl, 0x1023, 18); }

/* Seconds for n rounds of four independent TDPBF16PS (tiles 0-3 += tile 4 x tile 5). */
static double amx(long n) {
    if (amx_permitted() != 0) return -1;
    unsigned char cfg[64];
    memset(cfg, 0, sizeof cfg);
    cfg[0] = 1; /* palette 1 */
    for (int t = 0; t < 6; t++) {
        cfg[16 + 2 * t] = 64; /* bytes per row */
        cfg[48 + t] = 16;     /* rows */
    }
    static _Alignas(64) unsigned short a[512], b[512];
    for (int i = 0; i < 512; i++) a[i] = b[i] = 0x3f80; /* bf16 1.0 */
    _tile_loadconfig(cfg);
    _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
    _tile_loadd(4, a, 64);
    _tile_loadd(5, b, 64);
    double t0 = now();
    for (long i = 0; i < n; i++) {
        _tile_dpbf16ps(0, 4, 5); _tile_dpbf16ps(1, 4, 5);
        _tile_dpbf16ps(2, 4, 5); _tile_dpbf16ps(3, 4, 5);
    }
    double dt = now() - t0;
    _tile_release();
    return dt;
}
#else
static double amx(long n) { (void)n; return -1; }
#endif

static void *run(void *arg) {
    job *j = (job *)arg;
    REP12(DECL)
    __m512 x = _mm512_set1_ps(1.0001f), y = _mm512_set1_ps(0.9999f);
    __m512bh xh = _mm512_cvtne2ps_pbh(x, x), yh = _mm512_cvtne2ps_pbh(y, y);
    double t0 = now();
    if (j->kind == 2) {
        j->seconds = amx(j->n);
        return NULL;
    }
    if (j->kind == 0) {
        for (long i = 0; i < j->n; i++) { REP12(DOT) }
    } else {
        for (long i = 0; i < j->n; i++) { REP12(FMA) }
    }
    j->seconds = now() - t0;
    float s = 0;
    REP12(SUM)
    j->sink = s;
    return NULL;
}

/* instructions per second over `threads` threads (one per core) */
static double rate(int kind, int threads, long n) {
    pthread_t t[64];
    job jobs[64];
    for (int i = 0; i < threads; i++) {
        jobs[i] = (job){n, kind, 0, 0};
        pthread_create(&t[i], NULL, run, &jobs[i]);
    }
    double total = 0;
    int per = kind == 2 ? 4 : ACC; /* instructions per loop round */
    for (int i = 0; i < threads; i++) {
        pthread_join(t[i], NULL);
        if (jobs[i].seconds <= 0) total = -1e300; /* AMX refused */
        total += (double)n * per / jobs[i].seconds;
    }
    return total > 0 ? total : 0;
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 1;
    long n = argc > 2 ? atol(argv[2]) : 20000000L;
    double hz = 0;
    for (int r = 0; r < 3; r++) { double h = clock_hz(n * 4); if (h > hz) hz = h; }
    double bf16 = 0, fp32 = 0, bf1 = 0, fp1 = 0;
    for (int r = 0; r < 3; r++) {
        double x = rate(0, 1, n); if (x > bf1) bf1 = x;
        x = rate(1, 1, n); if (x > fp1) fp1 = x;
        x = rate(0, threads, n); if (x > bf16) bf16 = x;
        x = rate(1, threads, n); if (x > fp32) fp32 = x;
    }
    /* TDPBF16PS is ~16 cycles per instruction: a sixteenth of the rounds takes as long */
    double amx1 = 0, amxn = 0;
    for (int r = 0; r < 3; r++) {
        double x = rate(2, 1, n / 16); if (x > amx1) amx1 = x;
        x = rate(2, threads, n / 16); if (x > amxn) amxn = x;
    }
    double amx_gf = amxn * 16384 / 1e9, avx_gf = bf16 * 64 / 1e9;
    printf("{\"clock_ghz\": %.3f, \"threads\": %d, "
           "\"bf16_dot_per_cycle_per_core\": %.3f, \"fp32_fma_per_cycle_per_core\": %.3f, "
           "\"bf16_gflops_one_core\": %.1f, \"fp32_gflops_one_core\": %.1f, "
           "\"bf16_gflops_all\": %.1f, \"fp32_gflops_all\": %.1f, "
           "\"amx\": %s, \"amx_bf16_flop_per_cycle_per_core\": %.0f, "
           "\"amx_bf16_gflops_one_core\": %.1f, \"amx_bf16_gflops_all\": %.1f, "
           "\"bf16_peak_gflops_all\": %.1f}\n",
           hz / 1e9, threads, bf1 / hz, fp1 / hz, bf1 * 64 / 1e9, fp1 * 32 / 1e9,
           avx_gf, fp32 * 32 / 1e9, amxn > 0 ? "true" : "false", amx1 * 16384 / hz,
           amx1 * 16384 / 1e9, amx_gf, amx_gf > avx_gf ? amx_gf : avx_gf);
    return 0;
}
