"""benchmarks/_bench.py names the CPU a figure came from (model and the features that decide the
kernels): figures from an AVX-512 + AMX machine and an AVX2-only one differ several-fold."""

import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "_bench.py"


def _bench():
    spec = importlib.util.spec_from_file_location("_bench_under_test", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cpu_info_reads_the_model_and_the_listed_features(tmp_path):
    bench = _bench()
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nmodel name\t: Example CPU 9000\n"
        "flags\t\t: fpu sse2 avx2 fma avx512f avx512_bf16 amx_tile amx_bf16 avx512_vnni\n\n"
        "processor\t: 1\nmodel name\t: Example CPU 9000\nflags\t\t: fpu\n"
    )
    model, features = bench.cpu_info(cpuinfo)
    assert model == "Example CPU 9000"
    # In CPU_FEATURES order, only those present, the first processor's flags.
    assert features == ["avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16"]
    avx2_only = tmp_path / "avx2"
    avx2_only.write_text("model name\t: AMD EPYC\nflags\t\t: fpu avx f16c avx2 fma\n")
    assert bench.cpu_info(avx2_only) == ("AMD EPYC", ["avx2", "fma"])
    assert bench.cpu_info(tmp_path / "missing") == ("unknown", [])
