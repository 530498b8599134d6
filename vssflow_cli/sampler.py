"""Network-free ODE sampling with classifier-free guidance (numpy only; never imports torch).

The same code drives the torch model (``vssflow_cli.model.flow.torch_velocity``) and the ONNX
Runtime graph. A *velocity function* has the signature::

    fn(x: np.ndarray (B, T, C), t: np.ndarray (B,), conds: dict[str, np.ndarray]) -> (B, T, C)

Sampling integrates dx/dt = v(x, t) from t = 0 (noise, x0 ~ N(0, I) float32 drawn from
``np.random.default_rng(seed)``) to t = 1 (data).

Guidance: with ``cfg = w != 1`` the guided velocity is ``u + w (c - u)``, where c is the
conditional and u the unconditional prediction (every condition zeroed). Both are evaluated as
ONE batch of 2B rows per function evaluation; with ``w == 1`` only the conditional call is made.
A separate weight for some conditions (``focus``, e.g. the text prompt, with ``focus_cfg = w_f``) adds a third
branch m, every condition but those (as in InstructPix2Pix's two-weight guidance):
``u + w (m - u) + w_f (c - m)``, one batch of 3B; ``w_f == w`` is plain guidance again.

Solvers (all share one signature, like k-diffusion's):

=========  ===========================================  ==========================
solver     method                                       evaluations (``nfe``)
=========  ===========================================  ==========================
euler      explicit Euler, ``steps`` uniform steps       steps
midpoint   explicit midpoint (RK2), order 2              2 * steps
rk4        classic Runge-Kutta, order 4                  4 * steps
dopri5     Dormand-Prince 5(4), adaptive (rtol, atol)    varies (reference setup)
=========  ===========================================  ==========================

``nfe`` counts guided-velocity evaluations (each one network call of batch 2B under CFG).
``progress(i, total)`` is called after every step: fixed-step solvers report (step, steps);
dopri5 reports the reached time in thousandths, (round(1000 t), 1000).
The state is float32 unless ``x0`` is given in another float dtype (e.g. float64 for tests);
``t`` is passed to ``fn`` in the state's dtype.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

VelocityFn = Callable[[np.ndarray, np.ndarray, dict[str, np.ndarray]], np.ndarray]
GuidedFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
ProgressFn = Callable[[int, int], None]
Solver = Literal["euler", "midpoint", "rk4", "dopri5"]
SOLVERS: tuple[str, ...] = ("euler", "midpoint", "rk4", "dopri5")
MAX_ADAPTIVE_STEPS = 10_000


@dataclass(frozen=True)
class SampleResult:
    """x: (B, T, C) the sample at t = 1; nfe: guided-velocity evaluations used."""

    x: np.ndarray
    nfe: int


def zero_conditions(conds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The unconditional branch: every condition zeroed (same shapes and dtypes)."""
    return {k: np.zeros_like(v) for k, v in conds.items()}


def cfg_velocity(
    fn: VelocityFn, conds: dict[str, np.ndarray], cfg: float, uncond: dict[str, np.ndarray] | None = None,
    focus: tuple[str, ...] = (), focus_cfg: float | None = None,
) -> GuidedFn:
    """Bind conditions and guidance weights: returns fn'(x (B,T,C), t (B,)) -> (B,T,C).

    ``uncond``: conditions of the unconditional branch that are not zeros (a negative prompt), same shapes.
    ``focus``/``focus_cfg``: conditions guided with their own weight (module docstring); ignored when
    ``focus_cfg`` is None or equals ``cfg``, or no focus condition is given.
    """
    uncond = uncond or {}
    focus = tuple(k for k in focus if k in conds)
    if focus and focus_cfg is not None and focus_cfg != cfg:
        return _two_weight_velocity(fn, conds, cfg, uncond, focus, float(focus_cfg))
    if cfg == 1.0:
        return lambda x, t: fn(x, t, conds)
    both = {
        k: np.concatenate([v, uncond[k] if k in uncond else np.zeros_like(v)], axis=0) for k, v in conds.items()
    }  # (2B, ...)

    def guided(x: np.ndarray, t: np.ndarray) -> np.ndarray:
        B = x.shape[0]
        out = fn(np.concatenate([x, x], axis=0), np.concatenate([t, t], axis=0), both)  # (2B,T,C)
        cond, uncond = out[:B], out[B:]
        return uncond + cfg * (cond - uncond)

    return guided


def _two_weight_velocity(fn: VelocityFn, conds: dict[str, np.ndarray], cfg: float, uncond: dict[str, np.ndarray],
                         focus: tuple[str, ...], focus_cfg: float) -> GuidedFn:
    def off(k: str, v: np.ndarray) -> np.ndarray:
        return uncond[k] if k in uncond else np.zeros_like(v)

    three = {
        k: np.concatenate([v, off(k, v) if k in focus else v, off(k, v)], axis=0) for k, v in conds.items()
    }  # (3B, ...): c, m (all but the focus), u

    def guided(x: np.ndarray, t: np.ndarray) -> np.ndarray:
        B = x.shape[0]
        out = fn(np.concatenate([x, x, x], axis=0), np.concatenate([t, t, t], axis=0), three)  # (3B,T,C)
        c, m, u = out[:B], out[B : 2 * B], out[2 * B :]
        return u + cfg * (m - u) + focus_cfg * (c - m)

    return guided


class _Counted:
    """Wraps the guided velocity: scalar time -> (B,) array, output in the state dtype, counts calls."""

    def __init__(self, fn: GuidedFn, batch: int, dtype: np.dtype):
        self.fn, self.batch, self.dtype, self.nfe = fn, batch, dtype, 0

    def __call__(self, x: np.ndarray, t: float) -> np.ndarray:
        self.nfe += 1
        tt = np.full((self.batch,), t, dtype=self.dtype)
        return np.asarray(self.fn(x, tt), dtype=self.dtype)


def _fixed_step(f: _Counted, x: np.ndarray, solver: str, steps: int, progress: ProgressFn | None,
                t_start: float = 0.0):
    ts = np.linspace(t_start, 1.0, steps + 1)
    for i in range(steps):
        t, h = float(ts[i]), float(ts[i + 1] - ts[i])
        if solver == "euler":
            x = x + h * f(x, t)
        elif solver == "midpoint":
            k1 = f(x, t)
            x = x + h * f(x + 0.5 * h * k1, t + 0.5 * h)
        else:  # rk4
            k1 = f(x, t)
            k2 = f(x + 0.5 * h * k1, t + 0.5 * h)
            k3 = f(x + 0.5 * h * k2, t + 0.5 * h)
            k4 = f(x + h * k3, t + h)
            x = x + (h / 6.0) * (k1 + 2 * k2 + 2 * k3 + k4)
        if progress is not None:
            progress(i + 1, steps)
    return x


# Dormand-Prince 5(4) tableau; B5 gives the solution, B5 - B4 the error estimate.
_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0)
_A = (
    (),
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
)
_B5 = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0)
_B4 = (5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40)
_E = tuple(b5 - b4 for b5, b4 in zip(_B5, _B4, strict=True))


def _rms(a: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(a, dtype=np.float64))))


def _dopri5(f: _Counted, x: np.ndarray, rtol: float, atol: float, progress: ProgressFn | None):
    t = 0.0
    k1 = f(x, t)
    # Initial step size (Hairer, Norsett & Wanner, II.4): one extra evaluation.
    scale = atol + rtol * np.abs(x)
    d0, d1 = _rms(x / scale), _rms(k1 / scale)
    h0 = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
    d2 = _rms((f(x + h0 * k1, t + h0) - k1) / scale) / h0
    h1 = max(1e-6, h0 * 1e-3) if max(d1, d2) <= 1e-15 else (0.01 / max(d1, d2)) ** 0.2
    h = min(100 * h0, h1, 1.0)

    for _ in range(MAX_ADAPTIVE_STEPS):
        if t >= 1.0:
            return x
        h = min(h, 1.0 - t)
        ks = [k1]
        for i in range(1, 6):
            xi = x + h * sum(a * k for a, k in zip(_A[i], ks, strict=True))
            ks.append(f(xi, t + _C[i] * h))
        x_new = x + h * sum(b * k for b, k in zip(_B5[:6], ks, strict=True))
        k7 = f(x_new, t + h)  # first stage of the next step (FSAL)
        ks.append(k7)
        err = h * sum(e * k for e, k in zip(_E, ks, strict=True) if e != 0.0)
        norm = _rms(err / (atol + rtol * np.maximum(np.abs(x), np.abs(x_new))))
        if norm <= 1.0:
            t = 1.0 if 1.0 - (t + h) < 1e-12 else t + h
            x, k1 = x_new, k7
            if progress is not None:
                progress(round(1000 * t), 1000)
        factor = 10.0 if norm == 0.0 else min(10.0, max(0.2, 0.9 * norm ** -0.2))
        h = h * factor
    raise RuntimeError(
        f"dopri5 did not reach t = 1 in {MAX_ADAPTIVE_STEPS} steps: loosen rtol/atol or use a fixed-step solver"
    )


def noise(seed: int, shape: tuple[int, ...]) -> np.ndarray:
    """The starting noise of :func:`sample` for ``seed``: float32 standard normal of ``shape`` (B, T, C)."""
    return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)


def sample(
    fn: VelocityFn,
    conds: dict[str, np.ndarray],
    shape: tuple[int, int, int],
    *,
    solver: Solver = "euler",
    steps: int = 16,
    cfg: float = 3.0,
    seed: int = 0,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    progress: ProgressFn | None = None,
    x0: np.ndarray | None = None,
    start: np.ndarray | None = None,
    t_start: float = 0.0,
    uncond: dict[str, np.ndarray] | None = None,
    focus: tuple[str, ...] = (),
    focus_cfg: float | None = None,
) -> SampleResult:
    """Integrate the guided velocity from noise (t = 0) to data (t = 1).

    fn: velocity function (module docstring); conds: name -> (B, ...) arrays;
    shape: (B, T, C) of the latent; solver/steps: see the table above (steps unused by dopri5);
    cfg: guidance weight (1 = conditional only); seed: noise seed (ignored if x0 is given);
    x0: optional (B, T, C) starting noise; uncond: the unconditional branch's non-zero conditions (a negative
    prompt; :func:`cfg_velocity`); focus/focus_cfg: conditions with their own guidance weight (the module
    docstring). Returns :class:`SampleResult`.

    Warm start (``start`` (B, T, C) and ``t_start`` in (0, 1), fixed-step solvers): the ODE begins at
    ``t_start`` from the point of the OT path between the noise and ``start``, ``(1 - t) x0 + t start``, instead of
    at pure noise: a guess of the data (dubbing: the teacher's reading as latents) keeps its coarse content and the
    network re-renders the rest over ``steps`` steps of the remaining interval (SDEdit on the flow's own path).
    """
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}: use one of {', '.join(SOLVERS)}")
    if solver != "dopri5" and steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    for name, c in conds.items():
        if c.shape[0] != shape[0]:
            raise ValueError(f"condition {name!r} has batch {c.shape[0]}, the latent has {shape[0]}")
    if x0 is None:
        x = noise(seed, shape)
    else:
        if tuple(x0.shape) != tuple(shape):
            raise ValueError(f"x0 has shape {x0.shape}, expected {tuple(shape)}")
        x = np.array(x0, dtype=x0.dtype if np.issubdtype(x0.dtype, np.floating) else np.float32)
    if start is not None and t_start > 0.0:
        if solver == "dopri5":
            raise ValueError("a warm start needs a fixed-step solver (euler, midpoint, rk4), not dopri5")
        if not 0.0 < t_start < 1.0 or tuple(start.shape) != tuple(shape):
            raise ValueError(f"warm start: t_start must be in (0, 1) and start of shape {tuple(shape)}")
        x = ((1.0 - t_start) * x + t_start * np.asarray(start, dtype=x.dtype)).astype(x.dtype)
    else:
        t_start = 0.0
    for name, c in (uncond or {}).items():
        if name not in conds or c.shape != conds[name].shape:
            raise ValueError(f"unconditional {name!r} must match the condition's shape {conds.get(name, c).shape}")
    f = _Counted(cfg_velocity(fn, conds, cfg, uncond, focus, focus_cfg), shape[0], x.dtype)
    if solver == "dopri5":
        x = _dopri5(f, x, rtol, atol, progress)
    else:
        x = _fixed_step(f, x, solver, steps, progress, t_start)
    return SampleResult(x=x, nfe=f.nfe)
