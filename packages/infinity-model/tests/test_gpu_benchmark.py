"""benchmarks/gpu.py on the CPU: its smoke mode runs, and its equality check compares and can fail.

The script times the 2B on a GPU (not available to the project's sessions); these tests exercise the same
functions with the tiny config: eager vs ``torch.compile`` (CUDA graphs need CUDA), the check that guards every
fast path, and the bf16 pre-cast of the block Linears that every path uses.
"""

from __future__ import annotations

import copy
import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch
from infinity_model.sampler import sample

SCRIPT = Path(__file__).resolve().parents[3] / "benchmarks" / "gpu.py"


@pytest.fixture(scope="module")
def gpu() -> Iterator[ModuleType]:
    spec = importlib.util.spec_from_file_location("benchmarks_gpu", SCRIPT)
    assert spec is not None and spec.loader is not None, SCRIPT
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module while the script is executed
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def _tiny(gpu: ModuleType, scales: int = 3):
    return gpu.build_workload(True, torch.device("cpu"), 1, "1M", 1.0, scales)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown where there is no CUDA")
def test_gpu_benchmark_without_cuda_exits_with_a_message_naming_the_smoke_mode(gpu: ModuleType) -> None:
    with pytest.raises(SystemExit, match=r"no CUDA device.*--device cpu --tiny"):
        gpu.main([])
    with pytest.raises(SystemExit, match="pass --tiny"):
        gpu.main(["--device", "cpu"])


def test_precast_block_linears_draws_the_bits_of_autocast_on_fp32_weights(gpu: ModuleType) -> None:
    w = _tiny(gpu)
    fp32 = copy.deepcopy(w.model)
    for block in fp32.block_list:
        block.float()
    assert all(p.dtype == torch.float32 for p in fp32.parameters())
    assert any(p.dtype == torch.bfloat16 for p in w.model.parameters())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        a = sample(fp32, w.text, w.schedule, w.sampler, seed=3)
        b = sample(w.model, w.text, w.schedule, w.sampler, seed=3)
    assert torch.equal(a.codes, b.codes)
    assert all(torch.equal(x, y) for x, y in zip(a.bits, b.bits, strict=True))


def test_gpu_benchmark_check_flags_paths_that_change_the_logits_or_differ_from_their_twin(
    gpu: ModuleType,
) -> None:
    w = _tiny(gpu)
    eager = gpu.PathSpec("eager", "sdpa")
    runners = {"eager sdpa": gpu.make_runner(w, eager, None)}
    rows = gpu.check(w, runners, [eager], seed=0)
    assert rows[0].problems == [] and rows[0].twin_identical is True and rows[0].logit_rel == 0.0

    def perturbed(scale: float) -> gpu.Workload:
        model = copy.deepcopy(w.model)
        with torch.no_grad():
            model.head.weight.mul_(scale)
        return gpu.Workload(model, w.text, w.schedule, w.sampler, w.device)

    # a "compile" path with 10% larger logits: outside LOGIT_RTOL
    wrong, twin_off = gpu.PathSpec("compile", "sdpa"), gpu.PathSpec("graphs", "sdpa")
    runners[wrong.name] = gpu.make_runner(perturbed(1.1), eager, None)
    # a "graphs" path 1e-3 off its twin (eager): within the tolerance, but not identical as a replay must be
    runners[twin_off.name] = gpu.make_runner(perturbed(1.001), eager, None)
    rows = {r.name: r for r in gpu.check(w, runners, [eager, wrong, twin_off], seed=0)}
    assert rows["eager sdpa"].problems == []
    assert rows["compile sdpa"].logit_rel > gpu.LOGIT_RTOL
    assert any("differ by" in p for p in rows["compile sdpa"].problems)
    assert rows["graphs sdpa"].twin_identical is False
    assert 0 < rows["graphs sdpa"].logit_rel <= gpu.LOGIT_RTOL
    assert any("differs from eager sdpa" in p for p in rows["graphs sdpa"].problems)


@pytest.mark.slow
def test_gpu_benchmark_smoke_mode_checks_compile_against_eager_then_times_both(
    gpu: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    rows, best = gpu.run_benchmark(
        torch.device("cpu"), True, ["eager", "compile"], 1, 1, 0, "1M", 1.0, False, scales=3
    )
    by_name = {r.name: r for r in rows}
    assert set(by_name) == {"eager sdpa", "compile sdpa"} == set(best)
    compiled = by_name["compile sdpa"]
    assert compiled.problems == [] and compiled.logit_rel <= gpu.LOGIT_RTOL
    assert 0.0 < compiled.bits_equal_ref <= 1.0 and compiled.logit_max_abs >= 0.0
    out = capsys.readouterr().out
    assert "| compile sdpa |" in out and "of bf16 mm" in out and "PROBLEM" not in out


def test_gpu_benchmark_paths_put_eager_sdpa_first_and_add_the_twins_a_replay_is_checked_against(
    gpu: ModuleType,
) -> None:
    specs = gpu.path_specs(["compile+graphs", "graphs"], torch.device("cpu"))
    assert [s.name for s in specs] == ["eager sdpa", "compile sdpa", "graphs sdpa", "compile+graphs sdpa"]
    assert [s.twin for s in specs] == [None, None, "eager sdpa", "compile sdpa"]
