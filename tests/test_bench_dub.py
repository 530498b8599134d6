"""``vssflow bench``'s dub row: a talking clip from the example speaker, a full dub run, its stages."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest

from vssflow_cli import bench
from vssflow_cli.config import tiny_config
from vssflow_cli.media import probe
from vssflow_cli.train.untrained import random_bundle

SMALL = dataclasses.replace(tiny_config(), name="bench-dub", width=64, depth=2, heads=2, ffn_hidden=128,
                            cross_dim=32, window_frames=25)


def test_talking_clip_is_the_example_looped_and_scaled(tmp_path: Path) -> None:
    clip, script = bench.make_talking_clip(tmp_path / "t.mp4", 5.0)
    info = probe(clip)
    assert (info.width, info.height) == (640, 360) and abs(info.duration - 5.0) < 0.1 and not info.has_audio
    text = bench.EXAMPLE_SPEAKER.with_suffix(".txt").read_text(encoding="utf-8").strip()
    assert script.read_text(encoding="utf-8").splitlines() == [text, bench.OTHER_LINES[0]]  # 4.08 s: two loops
    with pytest.raises(FileNotFoundError, match="source checkout"):
        bench.make_talking_clip(tmp_path / "u.mp4", 1.0, source=tmp_path / "missing.mp4")


def test_run_bench_has_a_dub_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bundle = random_bundle(tmp_path / "b", SMALL)
    r = bench.run_bench(str(bundle), seconds=3.0, device="cpu", steps=1, repeats=2, warmup=1, torch_compare=False)
    json.dumps(r)
    d = r["dub"]
    assert d is not None and abs(d["audio_s"] - 3.0) < 0.1 and d["segments"] >= 1
    assert {"decode", "features", "sampling", "decode_audio", "mux"} <= set(d["stages"])
    assert sum(d["stages"].values()) <= d["processing_s"] * 1.01 + 1e-3
    assert math.isclose(d["rtf"], d["processing_s"] / d["audio_s"], rel_tol=1e-2)
    assert r["dub_fast"] is not None and r["dub_fast"]["segments"] == d["segments"]
    monkeypatch.setattr(bench, "EXAMPLE_SPEAKER", tmp_path / "nowhere.mp4")  # an installed wheel has no examples/
    r = bench.run_bench(str(bundle), seconds=1.0, device="cpu", steps=1, repeats=2, warmup=1, torch_compare=False)
    assert r["dub"] is None and any("dub not measured" in n for n in r["notes"])
