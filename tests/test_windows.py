"""Window planning and crossfading: exact coverage, continuity, incremental == batch."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vssflow_cli.windows import Crossfader, crossfade, fade_curves, plan_windows


@settings(max_examples=300, deadline=None)
@given(n=st.integers(1, 5000), window=st.integers(2, 400), data=st.data())
def test_plan_covers_exactly(n: int, window: int, data: st.DataObject) -> None:
    overlap = data.draw(st.integers(0, window - 1))
    plan = plan_windows(n, window, overlap)
    assert plan[0][0] == 0 and plan[-1][1] == n
    if n <= window:
        assert plan == [(0, n)]
        return
    for (s0, e0), (s1, e1) in zip(plan, plan[1:]):
        assert e0 - s0 == window and e1 - s1 == window
        assert s0 < s1 and e0 - s1 >= overlap  # consecutive windows share at least `overlap`
    covered = np.zeros(n, int)
    for s, e in plan:
        covered[s:e] += 1
    assert covered.min() >= 1
    # no wasted window: the minimum number for this hop
    assert len(plan) == int(np.ceil((n - window) / (window - overlap))) + 1


def test_plan_examples() -> None:
    assert plan_windows(100, 125, 25) == [(0, 100)]
    assert plan_windows(125, 125, 25) == [(0, 125)]
    assert plan_windows(300, 125, 25) == [(0, 125), (88, 213), (175, 300)]
    with pytest.raises(ValueError):
        plan_windows(0, 125, 25)
    with pytest.raises(ValueError):
        plan_windows(10, 5, 5)


def test_fade_curves() -> None:
    out, inn = fade_curves(64, "equal_power")
    assert np.allclose(out**2 + inn**2, 1.0, atol=1e-6)
    out, inn = fade_curves(64, "linear")
    assert np.allclose(out + inn, 1.0, atol=1e-6)
    assert np.all(np.diff(inn) > 0) and np.all(np.diff(out) < 0)


@pytest.mark.parametrize("n, window, overlap, scale", [(300, 125, 25, 4), (875, 125, 25, 1), (90, 125, 25, 3)])
def test_linear_crossfade_of_one_signal_reconstructs_it(n: int, window: int, overlap: int, scale: int) -> None:
    signal = np.sin(np.arange(n * scale) / 17.0).astype(np.float32)
    plan = plan_windows(n, window, overlap)
    chunks = [signal[s * scale : e * scale] for s, e in plan]
    out = crossfade(chunks, plan, n, scale, kind="linear")
    assert out.shape == (n * scale,)
    assert np.allclose(out, signal, atol=1e-5)


def test_equal_power_keeps_the_power_of_independent_noise() -> None:
    rng = np.random.default_rng(0)
    n, window, overlap, scale = 2000, 125, 60, 64
    plan = plan_windows(n, window, overlap)
    chunks = [rng.standard_normal((e - s) * scale).astype(np.float32) for s, e in plan]
    out = crossfade(chunks, plan, n, scale)
    s1, e0 = plan[1][0] * scale, plan[0][1] * scale
    # inside an overlap, two independent unit-variance signals mix to unit variance again
    assert np.var(out[s1:e0]) == pytest.approx(1.0, rel=0.1)
    assert np.var(out) == pytest.approx(1.0, rel=0.05)


def test_crossfade_is_continuous_at_window_edges() -> None:
    n, window, overlap, scale = 400, 125, 25, 16
    plan = plan_windows(n, window, overlap)
    # each window holds a different constant: the join must ramp, never jump
    chunks = [np.full((e - s) * scale, float(i + 1), np.float32) for i, (s, e) in enumerate(plan)]
    out = crossfade(chunks, plan, n, scale, kind="linear")
    assert np.abs(np.diff(out)).max() <= 1.0 / (overlap * scale) * 1.01 + 1e-6
    assert out[0] == 1.0 and out[-1] == float(len(plan))


def test_incremental_equals_batch_and_emits_early() -> None:
    rng = np.random.default_rng(1)
    n, scale = 700, 8
    plan = plan_windows(n, 125, 25)
    chunks = [rng.standard_normal((e - s) * scale).astype(np.float32) for s, e in plan]
    fader = Crossfader(plan, n, scale)
    pieces = [fader.add(c) for c in chunks]
    assert fader.done
    assert len(pieces[0]) == plan[1][0] * scale  # samples before the next window are final at once
    assert np.array_equal(np.concatenate(pieces), crossfade(chunks, plan, n, scale))


def test_chunks_of_the_wrong_length_are_fitted() -> None:
    plan = plan_windows(300, 125, 25)
    chunks = [np.ones((e - s) * 4 + d, np.float32) for (s, e), d in zip(plan, (5, -3, 0))]
    out = crossfade(chunks, plan, 300, 4, kind="linear")
    assert out.shape == (1200,)
    with pytest.raises(ValueError):
        crossfade(chunks[:2], plan, 300, 4)
    with pytest.raises(ValueError):
        Crossfader([(0, 10), (20, 30)], 30)  # gap
