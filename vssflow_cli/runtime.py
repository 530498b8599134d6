"""ONNX Runtime inference: sessions (providers, threads, cache) and the :class:`Synthesizer`.

This module never imports torch. onnxruntime is imported lazily (inside functions) so
``vssflow --help`` stays fast.

Providers: CUDA execution provider then CPU. ``device="cuda"`` without a usable CUDA provider is
a ModelError; ``"auto"`` falls back to CPU and records why in ``Synthesizer.device_note``.
Threads: intra-op threads default to the physical cores available to this process; inter-op is 1
(the graphs are one chain of ops); idle threads do not spin (see :func:`get_session`). Sessions
are cached per (graph file, providers, threads, spinning).
Precision: a bundle may ship ``dit-int8.onnx`` (dynamic int8 quantization of ``dit.onnx``). ``"auto"`` runs it on
CPU, where it is about twice as fast, and the float graph on CUDA; ``"fp32"`` / ``"int8"`` force one.
On CUDA the DiT runs with IO binding so the conditions (constant over the ODE steps) are copied to
the GPU once per sampling run instead of once per step; on CPU plain ``run`` is as fast.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from vssflow_cli.bundle import INT8_ROLE, Manifest, load_manifest
from vssflow_cli.config import ModelConfig, condition_names, condition_shapes, conditions, feature_ids
from vssflow_cli.errors import ModelError, UsageError
from vssflow_cli.models import resolve_model

log = logging.getLogger(__name__)

CPU_EP = "CPUExecutionProvider"
CUDA_EP = "CUDAExecutionProvider"
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "int8")
_ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64,
              "tensor(double)": np.float64, "tensor(int32)": np.int32}


# --------------------------------------------------------------------------- hardware / providers

def physical_cores() -> int:
    """Physical cores usable by this process (SMT siblings counted once)."""
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count() or 1
    cores: set[tuple[str, str]] = set()
    try:
        phys = core = None
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, val = line.partition(":")
                key = key.strip()
                if key == "physical id":
                    phys = val.strip()
                elif key == "core id":
                    core = val.strip()
                elif not key and phys is not None and core is not None:
                    cores.add((phys, core))
                    phys = core = None
        if phys is not None and core is not None:
            cores.add((phys, core))
    except OSError:
        pass
    return max(1, min(usable, len(cores))) if cores else max(1, usable)


def available_providers() -> list[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())


def providers_for(device: str) -> list[str]:
    """Execution providers for ``device`` ("auto" | "cpu" | "cuda"), in priority order.

    "cuda" without onnxruntime's CUDA provider raises ModelError; "auto" falls back to CPU.
    """
    if device not in DEVICES:
        raise UsageError(f"unknown device {device!r} — use one of: {', '.join(DEVICES)}")
    if device == "cpu":
        return [CPU_EP]
    has_cuda = CUDA_EP in available_providers()
    if device == "cuda" and not has_cuda:
        raise ModelError(
            "CUDA requested but onnxruntime has no CUDA provider — install onnxruntime-gpu "
            "(pip install 'vssflow[gpu]' after uninstalling onnxruntime) or use --device cpu"
        )
    return [CUDA_EP, CPU_EP] if has_cuda else [CPU_EP]


# --------------------------------------------------------------------------- sessions

_SESSIONS: dict[tuple[str, int, int, tuple[str, ...], int, bool], Any] = {}
_SESSIONS_LOCK = threading.Lock()


def get_session(path: str | os.PathLike, providers: list[str], threads: int | None = None, spin: bool = False):
    """A cached ``onnxruntime.InferenceSession`` for (file, providers, intra-op threads, spinning).

    ``spin``: let idle intra-op threads busy-wait between ops (ORT's default). Off here: on a
    machine shared with other processes spinning threads steal each other's cores; measured
    on a loaded 2-core box, 2 threads took 233 ms/step with spinning vs 124 ms without.
    """
    import onnxruntime as ort

    real = os.path.realpath(path)
    st = os.stat(real)
    n = int(threads or physical_cores())
    key = (real, st.st_size, st.st_mtime_ns, tuple(providers), n, bool(spin))
    with _SESSIONS_LOCK:
        sess = _SESSIONS.get(key)
        if sess is None:
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = n
            opts.inter_op_num_threads = 1
            opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            opts.log_severity_level = 3  # errors only; CUDA fallback is reported by us
            opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
            try:  # open via the given path: external data resolves next to it (HF cache files are symlinks)
                sess = ort.InferenceSession(str(path), opts, providers=list(providers))
            except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph types
                first = (str(e).splitlines() or [type(e).__name__])[0][:300]
                raise ModelError(
                    f"cannot load ONNX graph {path} ({first}) — re-export or re-download the bundle"
                ) from e
            _SESSIONS[key] = sess
    return sess


def clear_session_cache() -> None:
    with _SESSIONS_LOCK:
        _SESSIONS.clear()


# --------------------------------------------------------------------------- synthesizer

def check_contract(manifest: Manifest) -> None:
    """ModelError unless the bundle was made with this code's phoneme vocabulary and feature extractors.

    A model's phoneme embedding rows and condition channels mean what its training features meant:
    with other ids the shapes still match and the output is silently wrong.
    """
    from vssflow_cli.text import PHONEME_VOCAB

    have = tuple(manifest.phoneme_vocab)
    if have != tuple(PHONEME_VOCAB):
        n = min(len(have), len(PHONEME_VOCAB))
        first = next((i for i in range(n) if have[i] != PHONEME_VOCAB[i]), n)
        raise ModelError(
            f"model bundle {manifest.root}: phoneme vocabulary differs from this vssflow's ({len(have)} vs "
            f"{len(PHONEME_VOCAB)} symbols, first difference at id {first}) — use a bundle exported by this "
            "vssflow version"
        )
    want = feature_ids(manifest.config)
    if dict(manifest.features) != want:
        diff = sorted(k for k in set(want) | set(manifest.features) if manifest.features.get(k) != want.get(k))
        got = ", ".join(f"{k}={manifest.features.get(k)}" for k in diff)
        exp = ", ".join(f"{k}={want.get(k)}" for k in diff)
        raise ModelError(
            f"model bundle {manifest.root}: feature extractors {got} differ from this vssflow's {exp} — "
            "use a bundle exported by this vssflow version"
        )


Conds = Mapping[str, np.ndarray]


class Synthesizer:
    """Runs a bundle: DiT velocity + ODE sampler (CFG batched) + latent decoder + vocoder.

    Attributes: ``manifest`` (:class:`Manifest`), ``config`` (:class:`ModelConfig`),
    ``device_used`` ("cpu" | "cuda"), ``device_note`` (why CPU was used under "auto", or ""),
    ``precision`` (of the DiT graph in use: "fp32" | "fp16" | "int8"),
    ``threads`` (intra-op threads), ``last_nfe`` (velocity evaluations of the last ``sample``).
    """

    def __init__(
        self,
        bundle_dir: str | os.PathLike | Manifest,
        device: str = "auto",
        threads: int | None = None,
        *,
        verify: bool = True,
        io_binding: bool | None = None,
        spin: bool = False,
        precision: str = "auto",
    ):
        if precision not in PRECISIONS:
            raise UsageError(f"unknown precision {precision!r} — use one of: {', '.join(PRECISIONS)}")
        self.manifest = bundle_dir if isinstance(bundle_dir, Manifest) else load_manifest(bundle_dir, verify=verify)
        self.config: ModelConfig = self.manifest.config
        check_contract(self.manifest)
        self.threads = int(threads or physical_cores())
        self.providers = providers_for(device)
        self.device_note = ""
        if device == "auto" and CUDA_EP not in self.providers:
            self.device_note = "onnxruntime has no CUDA provider: running on CPU"
        self.spin = spin
        role = self._dit_role(precision)
        self.precision = "int8" if role == INT8_ROLE else str(self.manifest.extra.get("dit_precision", "fp32"))
        self._dit = get_session(self.manifest.path(role), self.providers, self.threads, spin)
        self.device_used = "cuda" if self._dit.get_providers()[0] == CUDA_EP else "cpu"
        if CUDA_EP in self.providers and self.device_used != "cuda":
            if device == "cuda":
                raise ModelError(
                    "CUDA requested but onnxruntime could not initialise it (CUDA/cuDNN libraries missing?) — "
                    "fix the CUDA install for onnxruntime-gpu or use --device cpu"
                )
            self.device_note = "onnxruntime's CUDA provider failed to initialise: running on CPU"
        if self.device_note:
            log.info(self.device_note)
        self._decoder = None
        self._encoder = None
        self._inputs = {i.name: i for i in self._dit.get_inputs()}
        self._check_graph_inputs()
        self._io_binding = (self.device_used == "cuda") if io_binding is None else bool(io_binding)
        self._bound: dict[str, tuple[np.ndarray, Any]] = {}
        self.last_nfe = 0

    def _dit_role(self, precision: str) -> str:
        has_int8 = self.manifest.has(INT8_ROLE)
        if precision == "int8" and not has_int8:
            raise ModelError(
                f"model bundle {self.manifest.root} ships no int8 DiT — re-export it with `vssflow export` "
                "(int8 is on by default) or use --precision fp32"
            )
        if precision == "int8" or (precision == "auto" and has_int8 and CUDA_EP not in self.providers):
            return INT8_ROLE
        return "dit"

    @classmethod
    def from_spec(
        cls, spec: str | None, device: str = "auto", threads: int | None = None, precision: str = "auto"
    ) -> Synthesizer:
        """Build from a ``--model`` value (see :func:`vssflow_cli.models.resolve_model`)."""
        return cls(resolve_model(spec), device=device, threads=threads, precision=precision)

    # ---- conditions

    @property
    def condition_names(self) -> tuple[str, ...]:
        return condition_names(self.config)

    def _check_graph_inputs(self) -> None:
        want = {"x", "t", *self.condition_names}
        have = set(self._inputs)
        if have != want or "v" not in {o.name for o in self._dit.get_outputs()}:
            raise ModelError(
                f"model bundle {self.manifest.root}: dit.onnx inputs {sorted(have)} do not match its config "
                f"(expected {sorted(want)} -> v) — re-export the bundle with `vssflow export`"
            )

    def condition_shapes(self, batch: int, n_frames: int) -> dict[str, tuple[int, ...]]:
        """Expected shape of every condition for a batch of ``batch`` windows of ``n_frames``."""
        return condition_shapes(self.config, batch, n_frames)

    def check_conditions(self, conds: Conds, n_frames: int, batch: int | None = None) -> dict[str, np.ndarray]:
        """Validate shapes/dtypes against the config; absent conditions become zeros.

        conds: name -> array with a batch dim (see ``vssflow_cli/config.py``). Returns C-contiguous
        arrays of each condition's dtype (float32, int64 for id tracks).
        """
        unknown = set(conds) - set(self.condition_names)
        if unknown:
            raise ModelError(
                f"model {self.manifest.name} takes conditions {', '.join(self.condition_names)}; "
                f"got unknown {', '.join(sorted(unknown))} — this bundle does not match the pipeline"
            )
        if batch is None:
            batch = next((int(np.shape(v)[0]) for v in conds.values()), 1)
        out: dict[str, np.ndarray] = {}
        for cond in conditions(self.config):
            name, shape = cond.name, cond.shape(self.config, batch, n_frames)
            if name not in conds:
                out[name] = np.zeros(shape, dtype=cond.dtype)
                continue
            a = np.asarray(conds[name])
            if a.shape != shape:
                feat = self.manifest.features.get(name, "")
                raise ModelError(
                    f"condition {name!r} has shape {a.shape} but model {self.manifest.name} expects {shape}"
                    + (f" (features {feat})" if feat else "")
                    + " — use a bundle made for this vssflow version's feature extractors"
                )
            if cond.vocab is not None:
                vocab = cond.vocab(self.config)
                if not np.issubdtype(a.dtype, np.integer):
                    raise ModelError(f"condition {name!r} must hold integer ids, got {a.dtype} — pass int64 ids")
                if a.size and (a.min() < 0 or a.max() >= vocab):
                    what = "phoneme" if name == "phonemes" else name
                    raise ModelError(
                        f"{what} ids must lie in [0, {vocab}), got [{a.min()}, {a.max()}] — the {what} vocabulary "
                        "does not match this model"
                    )
            out[name] = np.ascontiguousarray(a, dtype=cond.dtype)
        return out

    # ---- network calls

    def _typed(self, name: str, a: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(a, dtype=_ORT_TYPES.get(self._inputs[name].type, np.float32))

    def velocity(self, x: np.ndarray, t: np.ndarray, conds: Conds) -> np.ndarray:
        """One DiT evaluation: x (B, T, C), t (B,), conds (checked, batch B) -> v (B, T, C) float32."""
        if self._io_binding:
            return self._velocity_bound(x, t, conds)
        feed = {"x": self._typed("x", x), "t": self._typed("t", t)}
        for k, v in conds.items():
            feed[k] = self._typed(k, v)
        (v,) = self._dit.run(["v"], feed)
        return np.asarray(v, dtype=np.float32)

    def _device_value(self, name: str, a: np.ndarray):
        """OrtValue of a condition on the session's device; reused while the same array comes back.

        Conditions do not change during one sampling run (the sampler passes the same arrays at
        every step), so they are uploaded once. The array is kept referenced, so its id is unique.
        """
        import onnxruntime as ort

        hit = self._bound.get(name)
        if hit is not None and hit[0] is a:
            return hit[1]
        dev = "cuda" if self.device_used == "cuda" else "cpu"
        val = ort.OrtValue.ortvalue_from_numpy(self._typed(name, a), dev, 0)
        self._bound[name] = (a, val)
        return val

    def _velocity_bound(self, x: np.ndarray, t: np.ndarray, conds: Conds) -> np.ndarray:
        binding = self._dit.io_binding()
        binding.bind_cpu_input("x", self._typed("x", x))
        binding.bind_cpu_input("t", self._typed("t", t))
        for k, v in conds.items():
            binding.bind_ortvalue_input(k, self._device_value(k, v))
        binding.bind_output("v", "cpu")
        self._dit.run_with_iobinding(binding)
        return np.asarray(binding.copy_outputs_to_cpu()[0], dtype=np.float32)

    def sample(
        self,
        conds: Conds,
        n_frames: int,
        *,
        steps: int | None = None,
        cfg: float | None = None,
        solver: str | None = None,
        seed: int = 0,
        progress: Callable[[int, int], None] | None = None,
        batch: int | None = None,
        start: np.ndarray | None = None,
        t_start: float = 0.0,
        uncond: Conds | None = None,
        prompt_cfg: float | None = None,
        x0: np.ndarray | None = None,
    ) -> np.ndarray:
        """Generate latents (B, n_frames, latent_channels) float32 by integrating the guided velocity.

        conds: name -> (B, ...) arrays (absent ones are zeros); steps/cfg/solver default to the
        bundle's sampler settings. Conditional and unconditional branches run as one batch of 2B.
        ``start``/``t_start``: warm start from a guess of the latents (:func:`vssflow_cli.sampler.sample`).
        ``uncond``: conditions of the unconditional branch other than zeros (``prompt``: a negative prompt).
        ``prompt_cfg``: the text prompt's own guidance weight (a third branch, batch 3B; None: the bundle's
        ``prompt_cfg``, or the prompt guided with ``cfg`` like every other condition).
        ``x0``: the starting noise (B, n_frames, latent_channels) instead of noise drawn from ``seed``.
        """
        from vssflow_cli import sampler

        if n_frames < 1:
            raise UsageError(f"n_frames must be >= 1, got {n_frames}")
        checked = self.check_conditions(conds, n_frames, batch)
        B = next(iter(checked.values())).shape[0]
        unc = {k: v for k, v in self.check_conditions(uncond, n_frames, B).items() if k in uncond} if uncond else None
        d = self.manifest.sampler
        try:
            res = sampler.sample(
                self.velocity,
                checked,
                (B, n_frames, self.config.latent_channels),
                solver=solver or d.solver,
                steps=int(steps if steps is not None else d.steps),
                cfg=float(cfg if cfg is not None else d.cfg),
                seed=seed,
                progress=progress,
                x0=x0,
                start=start,
                t_start=t_start,
                uncond=unc,
                focus=("prompt",) if "prompt" in (conds or {}) else (),
                focus_cfg=prompt_cfg if prompt_cfg is not None else d.prompt_cfg,
            )
        except ValueError as e:  # bad solver / steps
            raise UsageError(f"{e}") from e
        finally:
            self._bound.clear()
        self.last_nfe = res.nfe
        return res.x

    @property
    def decoder(self):
        if self._decoder is None:
            self._decoder = get_session(self.manifest.path("decoder"), self.providers, self.threads, self.spin)
        return self._decoder

    def encode_logmel(self, logmel: np.ndarray) -> np.ndarray:
        """Log-mel (F, n_mels) -> latent (F // k, C) by the bundle's encoder.onnx (frames past a whole patch dropped).

        Models with an acoustic prior ship the encoder; the prior condition is a teacher log-mel encoded here.
        """
        from vssflow_cli.bundle import ENCODER_ROLE

        if self._encoder is None:
            self._encoder = get_session(self.manifest.path(ENCODER_ROLE), self.providers, self.threads, self.spin)
        k = self.config.audio.mel_per_latent
        m = np.asarray(logmel, dtype=np.float32)
        m = m[: len(m) // k * k][None]
        (z,) = self._encoder.run(["latent"], {"logmel": np.ascontiguousarray(m)})
        return np.asarray(z[0], dtype=np.float32)

    def logmel(self, latent: np.ndarray) -> np.ndarray:
        """Latent (B, T, C) -> log-mel (B, T * mel_per_latent, n_mels) float32 via decoder.onnx."""
        z = np.asarray(latent, dtype=np.float32)
        if z.ndim == 2:
            z = z[None]
        if z.ndim != 3 or z.shape[-1] != self.config.latent_channels:
            raise ModelError(
                f"latent has shape {np.shape(latent)}, model {self.manifest.name} expects (B, T, "
                f"{self.config.latent_channels}) — decode latents made by the same bundle"
            )
        (mel,) = self.decoder.run(["logmel"], {"latent": np.ascontiguousarray(z)})
        return np.asarray(mel, dtype=np.float32)

    def decode(self, latent: np.ndarray, *, vocoder_iters: int = 32) -> np.ndarray:
        """Latent (B, T, C) -> waveform (B, T * samples_per_latent) float32 at the model's sample rate."""
        from vssflow_cli.audio import vocode

        mels = self.logmel(latent)
        return np.stack([vocode(m, self.config.audio, iters=vocoder_iters) for m in mels]).astype(np.float32)

    def __repr__(self) -> str:
        return (f"Synthesizer({self.manifest.name!r}, device={self.device_used!r}, precision={self.precision!r}, "
                f"threads={self.threads}, "
                f"root={str(self.manifest.root)!r})")


def describe_device(synth: Synthesizer) -> dict[str, Any]:
    """Small dict for logs/bench: device, providers, threads, note."""
    return {"device": synth.device_used, "providers": list(synth.providers), "threads": synth.threads,
            "precision": synth.precision, "note": synth.device_note}

