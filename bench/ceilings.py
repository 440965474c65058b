"""Honest ceilings for a CPU throughput figure: the machine's FMA peak, then what libraries reach.

    ceilings = measure_ceilings()            # ~10 s on 2 cores
    print(ceilings.report())                 # the ceilings, labelled with how each was obtained
    ceilings.fractions(flops_per_second)     # "38% of FMA peak, 60% of best conv, 55% of best ..."
    ceilings.fraction_of_core_peak(flops, cpu_seconds)   # the same, per CPU-second the work got

The FMA peak is *measured*: `fma_peak.c` (independent chains of fp32 vector FMAs, one per thread)
is compiled here with ``gcc -O3 -march=native -fopenmp`` into a temporary directory and run on every
CPU this process may use; numba stands in when gcc is missing. The nominal figure
cores x clock x FMA pipes x lanes x 2 is printed beside it (the clock is the one the kernel reports,
2 FMA pipes per core is an assumption), never used for percentages. The best conv and matmul of
torch and ONNX Runtime are ceilings of *libraries*, not of the machine: they are reported as such.

On a shared machine wall-clock rates fall with the other work running; the FMA loop therefore also
reports FLOPs per CPU-second each thread got (`core`), and a pass's FLOPs over the CPU time its
process used (all threads, spin-waits included, so it errs low) gives a contention-free efficiency.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

FMA_SOURCE = Path(__file__).with_name("fma_peak.c")
FMA_PIPES = 2  # assumed FMA units per core (Zen 2-4, Skylake-SP and later server cores)
MATMUL_SIZE = 2048
CONV_SHAPE = (1, 128, 128, 128)  # [B, C, H, W]: a StyleGAN-256 layer at 128 px, 3x3, C -> C


@dataclass(frozen=True)
class Rate:
    """One measured or computed FLOP/s figure and how it was obtained."""

    flops: float  # FLOP/s
    how: str


@dataclass(frozen=True)
class Ceilings:
    """The machine's FMA peak (measured and nominal) and the best library conv and matmul."""

    fma: Rate  # all threads, wall clock
    core: Rate  # one core, FLOPs per CPU-second it got
    nominal: Rate
    matmul: dict[str, Rate]  # library -> rate
    conv: dict[str, Rate]
    threads: int

    @property
    def best_matmul(self) -> tuple[str, Rate]:
        return max(self.matmul.items(), key=lambda item: item[1].flops)

    @property
    def best_conv(self) -> tuple[str, Rate]:
        return max(self.conv.items(), key=lambda item: item[1].flops)

    def fraction_of_fma(self, flops: float) -> float:
        """`flops` (FLOP/s) as a fraction of the measured FMA peak."""
        return flops / self.fma.flops

    def fraction_of_core_peak(self, flops: float, cpu_seconds: float) -> float:
        """`flops` FLOPs done in `cpu_seconds` of CPU time, as a fraction of one core's FMA peak."""
        return flops / max(cpu_seconds, 1e-9) / self.core.flops

    def fractions(self, flops: float) -> str:
        """'x% of FMA peak, y% of best conv (lib), z% of best matmul (lib)' for `flops` FLOP/s."""
        conv_lib, conv = self.best_conv
        matmul_lib, matmul = self.best_matmul
        return (
            f"{flops / self.fma.flops:.0%} of FMA peak, {flops / conv.flops:.0%} of best conv "
            f"({conv_lib}), {flops / matmul.flops:.0%} of best matmul ({matmul_lib})"
        )

    def report(self) -> str:
        """Multi-line description of every ceiling, in GFLOP/s."""
        lines = [
            f"FMA peak (measured, used for % of peak): {self.fma.flops / 1e9:7.1f} GFLOP/s  "
            f"({self.fma.how})",
            f"FMA peak per core per CPU-second:       {self.core.flops / 1e9:7.1f} GFLOP/s  "
            f"(x {self.threads} = {self.core.flops * self.threads / 1e9:.1f} on CPUs of our own)",
            f"FMA peak (nominal, not used):           {self.nominal.flops / 1e9:7.1f} GFLOP/s  "
            f"({self.nominal.how})",
        ]
        for kind, rates in (("matmul", self.matmul), ("conv", self.conv)):
            for library, rate in rates.items():
                lines.append(
                    f"{kind:6s} {library:12s} (library ceiling): {rate.flops / 1e9:7.1f} GFLOP/s  "
                    f"= {rate.flops / self.fma.flops:4.0%} of FMA peak  ({rate.how})"
                )
        return "\n".join(lines)


def available_cpus() -> int:
    """CPUs this process may run on (affinity / container limits), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def measure_ceilings(threads: int | None = None, repeats: int = 3) -> Ceilings:
    """Measure the FMA peak and the torch / ONNX Runtime conv and matmul rates on the CPU."""
    threads = threads or available_cpus()
    matmul = {"torch": torch_matmul(repeats)}
    conv = {"torch": torch_conv(repeats)}
    ort_rates = ort_matmul_and_conv(threads, repeats)
    if ort_rates is not None:
        matmul["onnxruntime"], conv["onnxruntime"] = ort_rates
    fma, core = fma_peak(threads, repeats)
    return Ceilings(fma, core, nominal_peak(threads), matmul, conv, threads)


def fma_peak(threads: int, repeats: int = 3, seconds: float = 0.4) -> tuple[Rate, Rate]:
    """fp32 FMA FLOP/s of `threads` threads (wall clock) and of one core per CPU-second it got,
    each the best of `repeats` runs of the compiled FMA loop."""
    gcc = shutil.which("gcc")
    if gcc is None:
        return _numba_fma_peak(threads, repeats)
    with tempfile.TemporaryDirectory(prefix="rescore-fma-") as tmp:
        binary = Path(tmp) / "fma_peak"
        subprocess.run(
            [gcc, "-O3", "-march=native", "-fopenmp", str(FMA_SOURCE), "-o", str(binary)],
            check=True,
            capture_output=True,
        )
        best, core, lanes, chains = 0.0, 0.0, 0, 0
        for _ in range(repeats):
            out = subprocess.run(
                [str(binary), str(threads), str(seconds)],
                check=True,
                capture_output=True,
                text=True,
            ).stdout.split()
            best = max(best, float(out[0]) * 1e9)
            core = max(core, float(out[3]) * 1e9)  # already FLOPs per CPU-second of one thread
            lanes, chains = int(out[1]), int(out[2])
    how = (
        f"bench/fma_peak.c, gcc -O3 -march=native, {threads} threads x {chains} chains of "
        f"{lanes}-lane fp32 FMAs, best of {repeats}"
    )
    return Rate(best, how), Rate(core, how + ", per thread CPU time")


def nominal_peak(threads: int) -> Rate:
    """cores x clock x FMA pipes x lanes x 2 FLOPs, from /proc/cpuinfo (Linux)."""
    mhz, lanes = 0.0, 4
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        info = ""
    for line in info.splitlines():
        if line.startswith("cpu MHz") and not mhz:
            mhz = float(line.split(":")[1])
        if line.startswith("flags"):
            flags = set(line.split(":")[1].split())
            lanes = 16 if "avx512f" in flags else 8 if "fma" in flags else 4
    flops = threads * mhz * 1e6 * FMA_PIPES * lanes * 2
    return Rate(
        flops,
        f"{threads} cores x {mhz:.0f} MHz (reported clock) x {FMA_PIPES} FMA pipes (assumed) x "
        f"{lanes} fp32 lanes x 2",
    )


def torch_matmul(repeats: int = 3, size: int = MATMUL_SIZE) -> Rate:
    """torch.mm fp32 FLOP/s at size^3 (best of `repeats`)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    seconds = _best_time(lambda: torch.mm(a, b), repeats)
    return Rate(2.0 * size**3 / seconds, f"torch.mm {size}^3 fp32, best of {repeats}")


def torch_conv(repeats: int = 3, shape: tuple[int, int, int, int] = CONV_SHAPE) -> Rate:
    """torch conv2d 3x3 C -> C fp32 FLOP/s on `shape`, NCHW and channels-last, best of both."""
    batch, channels, height, width = shape
    x = torch.randn(*shape)
    weight = torch.randn(channels, channels, 3, 3)
    flops = 2.0 * batch * height * width * channels * channels * 9
    best = 0.0
    for fmt in (torch.contiguous_format, torch.channels_last):
        xf, wf = x.contiguous(memory_format=fmt), weight.contiguous(memory_format=fmt)
        with torch.no_grad():
            seconds = _best_time(lambda xf=xf, wf=wf: torch.conv2d(xf, wf, padding=1), repeats)
        best = max(best, flops / seconds)
    return Rate(best, f"conv2d 3x3 {list(shape)} -> {channels} ch, NCHW or NHWC, best of {repeats}")


def ort_matmul_and_conv(threads: int, repeats: int = 3) -> tuple[Rate, Rate] | None:
    """ONNX Runtime CPU MatMul and Conv FLOP/s on the same problems as the torch ones."""
    try:
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        return None
    batch, channels, height, width = CONV_SHAPE
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((channels, channels, 3, 3), dtype=np.float32)
    square = [MATMUL_SIZE, MATMUL_SIZE]

    def session(node, inputs, initializers=()):
        graph = helper.make_graph(
            [node],
            "ceiling",
            [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
            [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
            list(initializers),
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        return ort.InferenceSession(
            model.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )

    matmul = session(
        helper.make_node("MatMul", ["a", "b"], ["out"]), [("a", square), ("b", square)]
    )
    conv = session(
        helper.make_node("Conv", ["x", "weight"], ["out"], pads=[1, 1, 1, 1]),
        [("x", list(CONV_SHAPE))],
        [numpy_helper.from_array(weight, "weight")],
    )
    a = rng.standard_normal(square, dtype=np.float32)
    x = rng.standard_normal(CONV_SHAPE, dtype=np.float32)
    matmul_s = _best_time(lambda: matmul.run(["out"], {"a": a, "b": a}), repeats)
    conv_s = _best_time(lambda: conv.run(["out"], {"x": x}), repeats)
    conv_flops = 2.0 * batch * height * width * channels * channels * 9
    return (
        Rate(2.0 * MATMUL_SIZE**3 / matmul_s, f"MatMul {MATMUL_SIZE}^3 fp32, best of {repeats}"),
        Rate(
            conv_flops / conv_s, f"Conv 3x3 {list(CONV_SHAPE)} -> {channels} ch, best of {repeats}"
        ),
    )


def _best_time(fn: Callable[[], object], repeats: int) -> float:
    """Fastest of `repeats` timed calls after one warm-up call, in seconds."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _numba_fma_peak(threads: int, repeats: int) -> tuple[Rate, Rate]:
    """Fallback when gcc is missing: the same independent FMA chains, compiled by numba."""
    import numba

    lanes, chains = 8, 12

    @numba.njit(parallel=True, fastmath=True)
    def run(iterations: int, threads: int) -> float:  # pragma: no cover - compiled
        total = 0.0
        for t in numba.prange(threads):
            acc = np.full((chains, lanes), 1.0 + t, np.float32)
            b, c = np.float32(0.999999), np.float32(1e-6)
            for _ in range(iterations):
                for a in range(chains):
                    for lane in range(lanes):
                        acc[a, lane] = acc[a, lane] * b + c
            total += acc.sum()
        return total

    iterations = 2_000_000
    run(10, threads)
    start = time.process_time()
    seconds = _best_time(lambda: run(iterations, threads), repeats)
    cpu = (time.process_time() - start) / (repeats + 1)
    flops = iterations * 2.0 * lanes * chains * threads
    how = f"numba fallback (no gcc), {threads} threads x {chains} x {lanes} fp32 FMA chains"
    return Rate(flops / seconds, how), Rate(flops / cpu, how + ", per CPU-second")


# Dense (no sparsity) bf16 tensor-core peaks from NVIDIA's datasheets, TFLOP/s, matched against
# `torch.cuda.get_device_name()` in this order (the first substring found wins). The datasheets
# quote the sparse figure; dense is half of it. A GPU not listed needs --bf16-peak-tflops.
GPU_BF16_DENSE_TFLOPS = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.5),
    ("H200 NVL", 835.5),
    ("H100", 989.5),  # SXM5 ("NVIDIA H100 80GB HBM3")
    ("H200", 989.5),  # SXM
    ("A100", 312.0),
    ("L40S", 366.0),
    ("L4", 121.0),
)


def gpu_bf16_peak(device_name: str, override_tflops: float | None = None) -> Rate | None:
    """The GPU's dense bf16 tensor-core peak: the user's figure, else the datasheet's, else None.

    A datasheet figure (a property of the chip at its boost clock), not a measurement: a
    measured bf16 matmul is a library ceiling and is reported apart (`bench_backends.py`)."""
    if override_tflops is not None:
        return Rate(override_tflops * 1e12, "given with --bf16-peak-tflops")
    for marker, tflops in GPU_BF16_DENSE_TFLOPS:
        if marker in device_name:
            return Rate(tflops * 1e12, f"NVIDIA datasheet, dense bf16, '{marker}'")
    return None
