"""``vssflow bench``: analytic FLOPs, timing helpers, the test clip, and a short real run."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest

from vssflow_cli import bench
from vssflow_cli.config import ModelConfig, paper_config, tiny_config
from vssflow_cli.errors import UsageError
from vssflow_cli.train.untrained import random_bundle

# Small DiT, but the tiny model's condition widths: the pipeline's real feature extractors feed it.
SMALL = dataclasses.replace(tiny_config(), name="bench-test", width=64, depth=2, heads=2, ffn_hidden=128,
                            cross_dim=32, window_frames=25)


@pytest.mark.parametrize("cfg", [tiny_config(), paper_config(), SMALL,
                                 ModelConfig(speaker_dim=7, width=32, heads=2, cross_dim=16)])
def test_step_flops_match_the_model_code(cfg: ModelConfig) -> None:
    from vssflow_cli.model import dit

    assert bench.TIME_FREQ_DIM == dit.TIME_FREQ_DIM
    for T in (1, 125, 250):
        assert bench.dit_step_flops(cfg, T, batch=2) == 2 * dit.step_flops(cfg, T)


def test_tiny_step_flops_are_plausible() -> None:
    # ~2 FLOP per parameter per token, times 126 tokens and batch 2, plus attention (~6M params)
    g = bench.dit_step_flops(tiny_config(), 125) / 1e9
    assert 2.5 < g < 5.0


def test_timed_blocks_counts_and_units() -> None:
    calls = {"a": 0, "b": 0}

    def a() -> None:
        calls["a"] += 1

    def b() -> None:
        calls["b"] += 1
        sum(range(20000))

    ms = bench.timed_blocks({"a": a, "b": b}, repeats=6, warmup=2, rounds=3)
    assert calls == {"a": 2 + 3 * (1 + 2), "b": 2 + 3 * (1 + 2)}
    assert len(ms["a"]) == len(ms["b"]) == 6
    assert 0 < min(ms["a"]) < min(ms["b"]) < 1000
    assert 0.1 < bench.matmul_gflops(256, repeats=3) < 1e5


def test_make_clip_has_video_and_audio(tmp_path: Path) -> None:
    from vssflow_cli.media import probe

    info = probe(bench.make_clip(tmp_path / "c.mp4", 1.5))
    assert info.has_audio and abs(info.duration - 1.5) < 0.1


@pytest.fixture(scope="module")
def bench_bundle(tmp_path_factory) -> Path:
    return random_bundle(tmp_path_factory.mktemp("bench") / "b", SMALL)


def test_run_bench_reports_sane_numbers(bench_bundle: Path) -> None:
    r = bench.run_bench(str(bench_bundle), seconds=2.0, device="cpu", steps=2, repeats=3, warmup=1)
    json.dumps(r)  # --json output
    for key in ("rtf", "stages", "step_ms_ort", "step_ms_torch", "step_gflop", "matmul_gflops",
                "share_of_peak", "device", "threads"):
        assert key in r, key
    assert r["device"] == "cpu" and r["threads"] >= 1 and r["model"] == "random-bench-test"
    assert r["T"] == SMALL.window_frames and r["steps"] == 2 and r["nfe"] == 4  # midpoint: 2 per step
    assert abs(r["audio_s"] - 2.0) < 0.1
    assert {"decode", "features", "sampling", "decode_audio", "mux"} <= set(r["stages"])
    assert all(v >= 0 for v in r["stages"].values())
    assert sum(r["stages"].values()) <= r["processing_s"] * 1.01 + 1e-3
    assert math.isclose(r["rtf"], r["processing_s"] / r["audio_s"], rel_tol=1e-2)
    assert 0 < r["step_ms_ort"] < 5000 and 0 < r["step_ms_torch"] < 5000
    assert r["step_gflop"] == round(bench.dit_step_flops(SMALL, SMALL.window_frames) / 1e9, 4)
    assert 0 < r["best_ms_ort"] <= r["step_ms_ort"]
    # random_bundle exports the int8 graph too: what runs on CPU by default; the fp32 graph is timed beside it
    assert r["precision"] == "int8" and 0 < r["best_ms_ort_fp32"] <= r["step_ms_ort_fp32"] < 5000
    assert math.isclose(r["speedup_vs_torch"], r["step_ms_torch"] / r["step_ms_ort"], rel_tol=0.01)
    assert math.isclose(r["speedup_fp32_vs_torch"], r["step_ms_torch"] / r["step_ms_ort_fp32"], rel_tol=0.01)
    # share of peak is that of the float32 graph (int8 FLOPs are not comparable with an fp32 sgemm peak)
    assert math.isclose(r["achieved_gflops"], r["step_gflop"] / (r["best_ms_ort_fp32"] / 1000), rel_tol=0.02)
    assert r["matmul_gflops"] > 0.5 and r["matmul_gflops_ort"] > 0.5  # onnx is installed here
    best = max(r["matmul_gflops"], r["matmul_gflops_ort"])
    assert math.isclose(r["share_of_peak"], r["achieved_gflops"] / best, rel_tol=0.02)
    assert r["share_of_peak"] > 0  # no upper bound: other processes can slow the matmul probe arbitrarily


def test_run_bench_without_checkpoint_reports_none(tmp_path: Path, bench_bundle: Path) -> None:
    from vssflow_cli.bundle import load_manifest, write_bundle

    m = load_manifest(bench_bundle)
    lean = write_bundle(tmp_path / "lean", config=m.config, phoneme_vocab=list(m.phoneme_vocab),
                        files={"dit": m.path("dit"), "decoder": m.path("decoder")}, name="lean")
    r = bench.run_bench(str(lean), seconds=1.0, device="cpu", steps=1, repeats=2, warmup=1)
    assert r["step_ms_torch"] is None and any("no checkpoint" in n for n in r["notes"])
    assert r["precision"] == "fp32" and r["step_ms_ort_fp32"] == r["step_ms_ort"] and r["speedup_vs_torch"] is None
    with pytest.raises(UsageError, match="seconds"):
        bench.run_bench(str(lean), seconds=0)
