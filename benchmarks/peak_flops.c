/* The arithmetic peak of this CPU, measured rather than looked up in a table.
 *
 * - clock: a dependent chain of integer adds (one add per cycle on every x86 core of the
 *   last decade), timed by the wall clock, so the figure is the clock the core really
 *   runs at under load (turbo included), not the nominal one.
 * - throughput: VDPBF16PS (AVX-512 BF16: 16 fp32 lanes, each the sum of two bf16
 *   products, 64 FLOP per instruction) and VFMADD (fp32: 32 FLOP per 512-bit instruction)
 *   with 12 independent accumulators, more than any core's latency x pipes needs, so
 *   the loop runs at the instruction's throughput, one thread per core.
 *
 * Usage: peak_flops THREADS [ITERATIONS]; prints one JSON object. Built and run by
 * benchmarks/common.py's peak_flops(): cc -O2 -mavx512f -mavx512bf16 -pthread. */
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

static double clock_hz(long n) {
    unsigned long x = 0;
    double t0 = now();
    for (long i = 0; i < n; i++) {
        __asm__ volatile(
            "add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\t"
            "add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\t"
            : "+r"(x));
    }
    double dt = now() - t0;
    return 8.0 * n / dt;
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

static void *run(void *arg) {
    job *j = (job *)arg;
    REP12(DECL)
    __m512 x = _mm512_set1_ps(1.0001f), y = _mm512_set1_ps(0.9999f);
    __m512bh xh = _mm512_cvtne2ps_pbh(x, x), yh = _mm512_cvtne2ps_pbh(y, y);
    double t0 = now();
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
    for (int i = 0; i < threads; i++) {
        pthread_join(t[i], NULL);
        total += (double)n * ACC / jobs[i].seconds;
    }
    return total;
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
    printf("{\"clock_ghz\": %.3f, \"threads\": %d, "
           "\"bf16_dot_per_cycle_per_core\": %.3f, \"fp32_fma_per_cycle_per_core\": %.3f, "
           "\"bf16_gflops_one_core\": %.1f, \"fp32_gflops_one_core\": %.1f, "
           "\"bf16_gflops_all\": %.1f, \"fp32_gflops_all\": %.1f}\n",
           hz / 1e9, threads, bf1 / hz, fp1 / hz, bf1 * 64 / 1e9, fp1 * 32 / 1e9,
           bf16 * 64 / 1e9, fp32 * 32 / 1e9);
    return 0;
}
