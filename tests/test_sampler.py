"""The network-free sampler: CFG batching with the real DiT, solver accuracy and orders."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from small_model import SMALL_SPK as SMALL

from vssflow_cli.export import dummy_inputs
from vssflow_cli.model.dit import VSSFlowDiT
from vssflow_cli.model.flow import torch_velocity
from vssflow_cli.sampler import cfg_velocity, sample, zero_conditions

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def dit():
    torch.manual_seed(0)
    model = VSSFlowDiT(SMALL).eval()
    torch.nn.init.normal_(model.out_proj.weight, std=0.05)  # non-zero velocity
    feed = dummy_inputs(model, T=20, batch=3, seed=1)
    x, t = feed.pop("x"), feed.pop("t")
    return model, x, t, feed


def test_cfg_one_is_the_conditional_prediction(dit) -> None:
    model, x, t, conds = dit
    fn = torch_velocity(model)
    np.testing.assert_array_equal(cfg_velocity(fn, conds, 1.0)(x, t), fn(x, t, conds))


def _recording(fn):
    """``fn`` that also records the batch size of every call, and the list it records into."""
    batches: list[int] = []

    def recording(xx, tt, cc):
        batches.append(xx.shape[0])
        return fn(xx, tt, cc)

    return recording, batches


def test_batched_cfg_equals_two_separate_calls(dit) -> None:
    model, x, t, conds = dit
    fn = torch_velocity(model)
    recording, batches = _recording(fn)
    guided = cfg_velocity(recording, conds, 3.0)(x, t)
    assert batches == [2 * x.shape[0]]  # one network call of 2B rows
    cond, uncond = fn(x, t, conds), fn(x, t, zero_conditions(conds))
    assert np.abs(cond - uncond).max() > 1e-3  # the conditions matter, so the check is not vacuous
    np.testing.assert_allclose(guided, uncond + 3.0 * (cond - uncond), atol=1e-5, rtol=1e-4)


def test_two_weight_guidance_is_three_branches_in_one_call(dit) -> None:
    # the prompt's own weight (the mechanism is per condition name; "video" stands in for it in this small model)
    model, x, t, conds = dit
    fn = torch_velocity(model)
    recording, batches = _recording(fn)
    guided = cfg_velocity(recording, conds, 3.0, focus=("video",), focus_cfg=7.0)(x, t)
    assert batches == [3 * x.shape[0]]
    c, u = fn(x, t, conds), fn(x, t, zero_conditions(conds))
    m = fn(x, t, conds | {"video": np.zeros_like(conds["video"])})
    assert np.abs(c - m).max() > 1e-4 and np.abs(m - u).max() > 1e-3  # both weights matter (atol 1e-5)
    np.testing.assert_allclose(guided, u + 3.0 * (m - u) + 7.0 * (c - m), atol=1e-5, rtol=1e-4)
    plain = cfg_velocity(fn, conds, 3.0)(x, t)  # equal weights (or no focus condition present): plain guidance
    np.testing.assert_array_equal(cfg_velocity(fn, conds, 3.0, focus=("video",), focus_cfg=3.0)(x, t), plain)
    np.testing.assert_array_equal(cfg_velocity(fn, conds, 3.0, focus=("prompt",), focus_cfg=7.0)(x, t), plain)


def test_zero_conditions_keeps_shapes_and_dtypes(dit) -> None:
    _, _, _, conds = dit
    z = zero_conditions(conds)
    for k, v in conds.items():
        assert z[k].shape == v.shape and z[k].dtype == v.dtype and not z[k].any()


def test_sample_with_real_dit_is_deterministic(dit) -> None:
    model, x, _, conds = dit
    fn = torch_velocity(model)
    seen = []
    a = sample(fn, conds, x.shape, solver="midpoint", steps=3, cfg=3.0, seed=5,
               progress=lambda i, n: seen.append((i, n)))
    b = sample(fn, conds, x.shape, solver="midpoint", steps=3, cfg=3.0, seed=5)
    c = sample(fn, conds, x.shape, solver="midpoint", steps=3, cfg=3.0, seed=6)
    assert a.x.shape == x.shape and a.x.dtype == np.float32 and a.nfe == 6
    np.testing.assert_array_equal(a.x, b.x)
    assert np.abs(a.x - c.x).max() > 0.1
    assert seen == [(1, 3), (2, 3), (3, 3)]


# An affine, time-dependent field with a closed form. Conditional: v = a x + b + c t;
# unconditional (all conditions zero): v = a x. Guided with weight w: v = a x + w (b + c t).
SHAPE = (2, 5, 3)
A = np.linspace(-1.5, 1.2, 3)  # per channel, includes contraction and growth
B_ = np.array([0.3, -0.7, 1.1])
C_ = np.array([0.5, 0.2, -0.4])


def linear_field(x: np.ndarray, t: np.ndarray, conds: dict[str, np.ndarray]) -> np.ndarray:
    on = conds["on"][:, None, None]  # (B, 1, 1): 1 conditional, 0 zeroed
    return A * x + on * (B_ + C_ * t[:, None, None])


def exact(x0: np.ndarray, w: float) -> np.ndarray:
    b, c = w * B_, w * C_
    return (x0 + b / A + c / A**2) * np.exp(A) - b / A - c / A - c / A**2


def noise(dtype=np.float64) -> np.ndarray:
    return np.random.default_rng(0).standard_normal(SHAPE).astype(dtype)


CONDS = {"on": np.ones(SHAPE[0], dtype=np.float64)}


def rel_err(x: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(x - ref).max() / np.abs(ref).max())


@pytest.mark.parametrize("w", [1.0, 2.5])
def test_euler_many_steps_and_dopri5_match_closed_form(w: float) -> None:
    x0 = noise()
    ref = exact(x0, w)
    euler = sample(linear_field, CONDS, SHAPE, solver="euler", steps=2000, cfg=w, x0=x0)
    assert euler.nfe == 2000 and rel_err(euler.x, ref) < 1e-3
    tight = sample(linear_field, CONDS, SHAPE, solver="dopri5", cfg=w, x0=x0, rtol=1e-8, atol=1e-8)
    assert rel_err(tight.x, ref) < 1e-7
    seen = []
    loose = sample(linear_field, CONDS, SHAPE, solver="dopri5", cfg=w, x0=x0.astype(np.float32),
                   progress=lambda i, n: seen.append(i))
    assert loose.x.dtype == np.float32 and rel_err(loose.x, ref) < 2e-5
    assert loose.nfe < tight.nfe < 500
    assert seen[-1] == 1000 and seen == sorted(seen)


@pytest.mark.parametrize("solver,order,stages", [("euler", 1, 1), ("midpoint", 2, 2), ("rk4", 4, 4)])
def test_fixed_step_solvers_converge_at_their_order(solver: str, order: int, stages: int) -> None:
    x0 = noise()
    ref = exact(x0, 2.0)
    errs = []
    for steps in (8, 16, 32):
        res = sample(linear_field, CONDS, SHAPE, solver=solver, steps=steps, cfg=2.0, x0=x0)
        assert res.nfe == stages * steps
        errs.append(np.abs(res.x - ref).max())
    rates = np.log2(np.array(errs[:-1]) / np.array(errs[1:]))
    assert np.all(np.abs(rates - order) < 0.25), rates


def test_seeded_noise_is_float32_and_reproducible() -> None:
    a = sample(linear_field, CONDS, SHAPE, solver="euler", steps=1, cfg=1.0, seed=3)
    b = sample(linear_field, CONDS, SHAPE, solver="euler", steps=1, cfg=1.0, seed=3)
    x0 = np.random.default_rng(3).standard_normal(SHAPE, dtype=np.float32)
    assert a.x.dtype == np.float32
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_allclose(a.x, x0 + linear_field(x0, np.zeros(2), CONDS), rtol=1e-6)


def test_bad_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="solver"):
        sample(linear_field, CONDS, SHAPE, solver="heun")
    with pytest.raises(ValueError, match="x0"):
        sample(linear_field, CONDS, SHAPE, x0=np.zeros((1, 2, 3)))
    with pytest.raises(ValueError, match="batch"):
        sample(linear_field, {"on": np.ones(3)}, SHAPE)


def test_sampler_does_not_import_torch() -> None:
    code = "import sys, vssflow_cli.sampler; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])
