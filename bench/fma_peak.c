/* The machine's fp32 FMA ceiling, measured: every thread runs independent chains of vector FMAs.

   Built by bench/ceilings.py at bench time (gcc -O3 -march=native -fopenmp, in a temp dir) and run
   as `fma_peak THREADS SECONDS`; prints one line:
       "<GFLOP/s wall> <vector lanes> <accumulators> <GFLOP per CPU-second per thread> <checksum>"
   The second rate divides each thread's FLOPs by the CPU time it got (CLOCK_THREAD_CPUTIME_ID):
   what one core delivers while it is ours, even on a machine shared with other work.
   ACCUMULATORS independent chains (acc = acc * b + c) hide the FMA latency (4-5 cycles) on two
   FMA pipes; they and b, c fit the register file (16 ymm with AVX2, 32 zmm with AVX-512). b is
   just below 1 and c small, so values stay finite whatever the iteration count. One FMA counts as
   2 FLOPs per lane, as matmul and conv FLOP counts do. */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#if defined(__AVX512F__)
#define LANES 16
#define ACCUMULATORS 24
#elif defined(__AVX__)
#define LANES 8
#define ACCUMULATORS 12
#else
#define LANES 4
#define ACCUMULATORS 12
#endif

typedef float vec __attribute__((vector_size(LANES * sizeof(float))));

static double seconds(void) { return omp_get_wtime(); }

static double thread_cpu_seconds(void) {
    struct timespec now;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now);
    return now.tv_sec + 1e-9 * now.tv_nsec;
}

/* Run `iterations` rounds of ACCUMULATORS FMAs; return a checksum so nothing is optimized away. */
static float chains(long iterations, float seed) {
    vec acc[ACCUMULATORS];
    vec b, c;
    for (int lane = 0; lane < LANES; lane++) {
        b[lane] = 0.999999f;
        c[lane] = 1e-6f * seed;
    }
    for (int a = 0; a < ACCUMULATORS; a++) {
        for (int lane = 0; lane < LANES; lane++) acc[a][lane] = seed + a + lane;
    }
    for (long i = 0; i < iterations; i++) {
#pragma GCC unroll 64
        for (int a = 0; a < ACCUMULATORS; a++) acc[a] = acc[a] * b + c;
    }
    float total = 0.0f;
    for (int a = 0; a < ACCUMULATORS; a++) {
        for (int lane = 0; lane < LANES; lane++) total += acc[a][lane];
    }
    return total;
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : omp_get_max_threads();
    double budget = argc > 2 ? atof(argv[2]) : 0.5;
    long iterations = 1000000;
    /* Calibrate on one thread so one timed run lasts about `budget` seconds. */
    for (;;) {
        double start = seconds();
        volatile float sink = chains(iterations, 1.0f);
        (void)sink;
        double elapsed = seconds() - start;
        if (elapsed > budget / 4) {
            iterations = (long)(iterations * budget / elapsed);
            break;
        }
        iterations *= 4;
    }
    float total = 0.0f;
    double cpu = 0.0;
    double start = seconds();
#pragma omp parallel num_threads(threads) reduction(+ : total, cpu)
    {
        double cpu_start = thread_cpu_seconds();
        total += chains(iterations, 1.0f + omp_get_thread_num());
        cpu += thread_cpu_seconds() - cpu_start;
    }
    double elapsed = seconds() - start;
    double flops_per_thread = 2.0 * LANES * ACCUMULATORS * (double)iterations;
    printf("%.3f %d %d %.3f %g\n", flops_per_thread * threads / elapsed / 1e9, LANES,
           ACCUMULATORS, flops_per_thread * threads / cpu / 1e9, (double)total);
    return 0;
}
