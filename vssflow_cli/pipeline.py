"""One job: a video in, a video (or WAV) with generated foley or speech out.

``foley``: frames (25 fps, 64x64) -> visual + sync features -> per window: sample latents with
the video/sync conditions (lip and phonemes zeroed) -> decode to audio -> crossfade -> mux.

``dub``: script (``--text``, or a transcription of the original audio) -> segments placed in
time (timed cues keep their times, plain text goes where the lips move) -> phoneme ids stretched
over each span; frames (25 fps, ~640 px wide) -> lip features; per window: sample with phonemes,
lips and the video/sync features of the same frames (the model was trained on speech clips with
their talking-face video, and on speech mixed into scenes, so a dub may carry scene sound too).

Every window is sampled at the model's full window length, conditions zero-padded past the end of
a short clip, because that is the shape the model was trained on; the padding is cut afterwards.

Memory is bounded for long inputs: frames are streamed in chunks, only the small per-frame
features are kept (about 1 KB per frame), and the generated track is written incrementally to a
temp WAV that ffmpeg then muxes. The pipeline never prints: it reports through ``progress``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from vssflow_cli.errors import InputError, UsageError
from vssflow_cli.loudness import LOUDNESS_RANGE

if TYPE_CHECKING:
    import numpy as np

    from vssflow_cli.media import MediaInfo

FEATURE_FPS = 25.0  # frame rate of every visual feature (vision.FEATURE_FPS)
VIS_SIZE = 64  # frames for the visual/sync features are VIS_SIZE x VIS_SIZE (vision.VIS_SIZE)
LIP_WIDTH = 640  # frames for face landmarks are decoded this wide, aspect kept (faces >= ~4% of the width)
CHUNK_FRAMES = 250  # frames per decoded chunk (10 s at 25 fps)
OVERLAP_SECONDS = 1.0  # crossfade between consecutive model windows
WINDOW_BATCH = 4  # windows sampled together (one batched network call per step: ~25 % less time per window on 2 cores)
MIN_FACE_FRACTION = 0.3  # dub: share of frames that must show a face
TRUNCATED_FRACTION = 0.9  # fewer decoded frames than this share of the probed duration = corrupt
STAGES = ("transcribe", "decode", "features", "teacher", "sampling", "decode_audio", "mux")


class Progress(Protocol):
    """``progress(stage, done, total)``: ``stage`` in :data:`STAGES`; ``total`` None if unknown."""

    def __call__(self, stage: str, done: float, total: float | None) -> None: ...


def _no_progress(stage: str, done: float, total: float | None) -> None:
    pass


@dataclass(frozen=True)
class JobOptions:
    """Settings of one run, shared by every input. ``None`` means the model's / input's default."""

    steps: int | None = None
    cfg: float | None = None
    seed: int = 0
    solver: str | None = None
    mix: str | None = None  # None: "keep" if the video has sound (dub: its speech first), else "replace"
    gain_db: float | None = None  # dB from the reference level; None: -6 LU under the original for "add", else 0
    loudness: float | None = None  # target LUFS of the generated track; None: the task's (vssflow_cli.loudness)
    wav_only: bool = False
    lang: str | None = None  # espeak-ng voice; None: the transcription's language, else en-us
    device: str = "auto"
    precision: str = "auto"  # DiT graph: auto | fp32 | int8 (see vssflow_cli.runtime)
    model: str | None = None  # --model NAME|PATH, None = embedded default
    asr_model: str | None = None
    overwrite: bool = False
    warm_start: bool = False  # dub: start sampling from the teacher's latents (the bundle says where)
    prompt: str | None = None  # foley: what the sound should be ("footsteps on gravel")
    negative_prompt: str | None = None  # foley: what it should not be (the unconditional branch of the guidance)
    prompt_cfg: float | None = None  # foley: the prompt's own guidance weight; None: the model's
    fast_teacher: bool = False  # dub: the teacher without its waveform generator (mel head; teacher.speak_logmel)

    def __post_init__(self) -> None:
        if self.steps is not None and self.steps < 1:
            raise UsageError(f"--steps must be >= 1, got {self.steps}; try --steps 16")
        if self.cfg is not None and not (0.0 <= self.cfg <= 100.0 and math.isfinite(self.cfg)):
            raise UsageError(f"--cfg must be between 0 and 100, got {self.cfg}; try --cfg 3")
        if self.prompt_cfg is not None and not (0.0 <= self.prompt_cfg <= 100.0 and math.isfinite(self.prompt_cfg)):
            raise UsageError(f"--prompt-cfg must be between 0 and 100, got {self.prompt_cfg}; try --prompt-cfg 6")
        if self.prompt_cfg is not None and not self.prompt:
            raise UsageError("--prompt-cfg weights the --prompt: give a --prompt too, or drop --prompt-cfg")
        if self.seed < 0:
            raise UsageError(f"--seed must be >= 0, got {self.seed}")
        if self.mix is not None and self.mix not in ("replace", "add", "keep"):
            raise UsageError(f"--mix must be replace, add or keep, got {self.mix!r}")
        if self.gain_db is not None and not (-60.0 <= self.gain_db <= 24.0):
            raise UsageError(f"--gain-db must be between -60 and 24, got {self.gain_db}")
        lo, hi = LOUDNESS_RANGE
        if self.loudness is not None and not (lo <= self.loudness <= hi):
            raise UsageError(
                f"--loudness must be between {lo:g} and {hi:g} LUFS, got {self.loudness}; try --loudness -23"
            )
        if self.device not in ("auto", "cpu", "cuda"):
            raise UsageError(f"--device must be auto, cpu or cuda, got {self.device!r}")


@dataclass(frozen=True)
class Result:
    """What a job produced; ``stages`` holds seconds per stage (see :data:`STAGES`)."""

    task: str
    input: str
    output: str
    duration: float
    n_windows: int
    mix: str | None
    device: str
    model: str
    seed: int
    precision: str = "fp32"  # of the DiT graph that ran (int8 on CPU when the bundle ships one)
    stages: dict[str, float] = field(default_factory=dict)
    wall: float = 0.0
    segments: int | None = None  # dub: script segments placed
    warnings: tuple[str, ...] = ()  # what the user should know: subtitle streams left out, a script line too fast
    levels: dict[str, Any] | None = None  # loudness policy applied to the generated track (loudness.Levels)
    audio_tracks: tuple[str, ...] = ()  # the output's audio tracks in order, the first one default; () for a WAV

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["stages"] = {k: round(v, 4) for k, v in self.stages.items()}
        d["wall"] = round(self.wall, 4)
        return d


class _Clock:
    """Seconds per stage, accumulated over interleaved stages."""

    def __init__(self) -> None:
        self.stages: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        t = time.perf_counter()
        try:
            yield
        finally:
            self.stages[stage] = self.stages.get(stage, 0.0) + time.perf_counter() - t


# --------------------------------------------------------------------------- features


def _expected_frames(info: MediaInfo) -> int:
    return max(1, round(info.duration * FEATURE_FPS))


def _timed_frames(
    path: Path, info: MediaInfo, width: int, height: int, clock: _Clock, progress: Progress
) -> Iterator[np.ndarray]:
    from vssflow_cli.media import iter_frames

    expected = _expected_frames(info)
    frames = iter_frames(
        path, fps=FEATURE_FPS, width=width, height=height, chunk_frames=CHUNK_FRAMES, stream_index=info.video_index
    )
    done = 0
    try:
        while True:
            with clock("decode"):
                chunk = next(frames, None)
            if chunk is None:
                break
            done += len(chunk)
            progress("decode", done, expected)
            yield chunk
    finally:
        frames.close()
    if done < TRUNCATED_FRACTION * expected - 2:
        raise InputError(
            f"{path}: only {done / FEATURE_FPS:.1f} s of the {info.duration:.1f} s the file claims could be decoded; "
            "it is truncated or its header is corrupt, re-encode or repair it"
        )


class _Track:
    """A per-frame feature track filled chunk by chunk into one preallocated array (no copies)."""

    def __init__(self, expected: int) -> None:
        # ``expected`` follows the container's claimed duration, which may be absurd (1e10 s): reserve
        # at most an hour up front and grow past it
        self.capacity, self.n = min(expected, round(3600 * FEATURE_FPS)) + CHUNK_FRAMES, 0
        self.data: np.ndarray | None = None

    def append(self, x: np.ndarray) -> None:
        import numpy as np

        x = np.asarray(x, dtype=np.float32)
        if self.data is None:
            self.data = np.empty((self.capacity, *x.shape[1:]), np.float32)
        if self.n + len(x) > len(self.data):  # longer than probed: grow (rare)
            self.data = np.concatenate([self.data, np.empty_like(self.data)])
        self.data[self.n : self.n + len(x)] = x
        self.n += len(x)

    def array(self) -> np.ndarray:
        assert self.data is not None
        return self.data[: self.n]


def visual_features(path: Path, info: MediaInfo, clock: _Clock, progress: Progress) -> tuple[np.ndarray, np.ndarray]:
    """video (n, video_dim), sync (n, sync_dim) float32 at FEATURE_FPS for the whole clip."""
    from vssflow_cli.vision import VisualFeatureStream

    stream = VisualFeatureStream()
    expected = _expected_frames(info)
    video, sync = _Track(expected), _Track(expected)
    for chunk in _timed_frames(path, info, VIS_SIZE, VIS_SIZE, clock, progress):
        with clock("features"):
            v, s = stream.push(chunk)
            video.append(v)
            sync.append(s)
        progress("features", video.n, expected)
    return video.array(), sync.array()


def lip_features(
    path: Path, info: MediaInfo, clock: _Clock, progress: Progress, with_visual: bool = False
) -> Any:
    """lip (n, lip_dim) float32 at FEATURE_FPS; InputError if too few frames show a face.

    ``with_visual``: (lip, video, sync), the visual features of the same decoded frames resized to
    VIS_SIZE (one decode serves both; :func:`visual_features` returns the same two from its own decode).
    """
    import numpy as np

    from vssflow_cli.lips import LipTracker, require_face
    from vssflow_cli.media import display_size
    from vssflow_cli.vision import VisualFeatureStream, resize_frames

    w, h = display_size(info, LIP_WIDTH)
    expected = _expected_frames(info)
    feats, present = _Track(expected), _Track(expected)  # mouth crops are not kept: memory
    stream, video, sync = VisualFeatureStream(), _Track(expected), _Track(expected)
    with LipTracker(crops=False) as tracker:
        for chunk in _timed_frames(path, info, w, h, clock, progress):
            with clock("features"):
                r = tracker.push(chunk)
                feats.append(r.features)
                present.append(np.asarray(r.present, np.float32))
                if with_visual:
                    v, s = stream.push(resize_frames(chunk, VIS_SIZE))
                    video.append(v)
                    sync.append(s)
            progress("features", feats.n, expected)
    require_face(present.array() > 0.5, MIN_FACE_FRACTION, video=str(path))
    return (feats.array(), video.array(), sync.array()) if with_visual else feats.array()


def to_latent_frames(x: np.ndarray, n: int, src_fps: float, dst_fps: float) -> np.ndarray:
    """Resample a per-frame track (n_src, ...) to exactly ``n`` frames at ``dst_fps`` (nearest frame)."""
    import numpy as np

    if len(x) == 0:
        return np.zeros((n, *x.shape[1:]), x.dtype)
    if len(x) == n and src_fps == dst_fps:
        return x
    idx = np.floor((np.arange(n) + 0.5) * src_fps / dst_fps).astype(np.int64)
    return x[np.clip(idx, 0, len(x) - 1)]


# --------------------------------------------------------------------------- generation


class _TrackWriter:
    """Streams the generated track to a WAV, exactly ``n_total`` samples (padded/trimmed).

    A failed write (a full disk, most often a small TMPDIR) is an OutputError naming the file.
    """

    def __init__(self, path: Path, sr: int, n_total: int, subtype: str, gate: Callable | None = None) -> None:
        import soundfile as sf

        self.path, self.n_total, self.n, self.gate = path, n_total, 0, gate
        self.sample_bytes = 4 if subtype == "FLOAT" else 2
        fmt = "W64" if path.suffix == ".w64" else "WAV"  # Wave64: no 4 GB limit for the temp track
        with self._errors(1 << 16):
            self.f = sf.SoundFile(str(path), "w", samplerate=sr, channels=1, subtype=subtype, format=fmt)

    def _errors(self, needed: int) -> AbstractContextManager[None]:
        from vssflow_cli.output import audio_write_errors

        return audio_write_errors(self.path, needed)

    def write(self, samples: np.ndarray) -> None:
        import numpy as np

        take = samples[: max(0, self.n_total - self.n)]
        if self.gate is not None:
            take = self.gate(take, self.n)
        with self._errors(len(take) * self.sample_bytes):
            self.f.write(np.clip(take, -1.0, 1.0).astype(np.float32))
        self.n += len(take)

    def close(self) -> None:
        """Pad with silence to exactly ``n_total`` samples and close."""
        import numpy as np

        while self.n < self.n_total:
            k = min(self.n_total - self.n, 1 << 20)
            with self._errors(k * self.sample_bytes):
                self.f.write(np.zeros(k, np.float32))
            self.n += k
        with self._errors(1 << 16):
            self.f.close()

    def discard(self) -> None:
        """Close without padding (the file is being thrown away, maybe because writing failed)."""
        import soundfile as sf

        with contextlib.suppress(sf.LibsndfileError, OSError):
            self.f.close()


def _generate(
    synth: Any,
    conds: dict[str, np.ndarray],
    n_frames: int,
    opts: JobOptions,
    writer: _TrackWriter,
    clock: _Clock,
    progress: Progress,
    fixed: dict[str, np.ndarray] | None = None,
    uncond: dict[str, np.ndarray] | None = None,
) -> int:
    """Sample + decode every window and crossfade into ``writer``. conds: name -> (n_frames, ...); ``fixed``:
    name -> the one value of a per-window condition (the prompt's ids), given to every window; ``uncond``: the
    same for the unconditional branch (the negative prompt)."""
    import numpy as np

    from vssflow_cli.sampler import noise
    from vssflow_cli.windows import Crossfader, plan_windows

    cfg = synth.config
    window = int(cfg.window_frames)
    overlap = min(int(round(OVERLAP_SECONDS * cfg.latent_fps)), window // 2)
    plan = plan_windows(n_frames, window, overlap)
    fader = Crossfader(plan, n_frames, cfg.audio.samples_per_latent)
    total = len(plan)
    n = window  # every window is padded to the model's length, a short clip's single one too
    for g in range(0, total, WINDOW_BATCH):
        group = plan[g : g + WINDOW_BATCH]
        B = len(group)

        def step(k: int, steps: int, g: int = g, B: int = B) -> None:
            progress("sampling", g + B * k / max(steps, 1), total)

        batch = {}
        for name, a in conds.items():
            padded = np.zeros((B, n, *a.shape[1:]), a.dtype)
            for j, (s, e) in enumerate(group):
                padded[j, : e - s] = a[s:e]
            batch[name] = padded
        batch |= {name: np.repeat(a[None], B, axis=0) for name, a in (fixed or {}).items()}
        warm = warm_start(synth, batch) if "prior" in batch and opts.warm_start else {}
        if uncond:
            warm["uncond"] = {name: np.repeat(a[None], B, axis=0) for name, a in uncond.items()}
        # each window's noise from its own seed, as if it were sampled alone
        x0 = np.concatenate([noise(opts.seed + g + j, (1, n, cfg.latent_channels)) for j in range(B)])
        with clock("sampling"):
            latents = synth.sample(
                batch, n, steps=opts.steps, cfg=opts.cfg, solver=opts.solver, x0=x0, progress=step,
                prompt_cfg=opts.prompt_cfg, **warm,
            )
        progress("sampling", g + B, total)
        for j, (s, e) in enumerate(group):
            with clock("decode_audio"):
                wave = synth.decode(latents[j : j + 1, : e - s])[0]
                writer.write(fader.add(wave))
            progress("decode_audio", g + j + 1, total)
    return total


def warm_start(synth: Any, batch: dict[str, np.ndarray]) -> dict[str, Any]:
    """Sampler arguments that start a dub's ODE from its prior (the bundle's ``sampler.prior_start``; {} if 0)."""
    t0 = float(getattr(synth.manifest.sampler, "prior_start", 0.0))
    if t0 <= 0.0:
        return {}
    return {"start": batch["prior"], "t_start": t0}


def _generate_to(
    path: Path, subtype: str, synth: Any, conds: dict[str, np.ndarray], n: int, n_samples: int, opts: JobOptions,
    clock: _Clock, progress: Progress, gate: Callable | None = None, fixed: dict[str, np.ndarray] | None = None,
    uncond: dict[str, np.ndarray] | None = None,
) -> int:  # fmt: skip
    """Generate the whole track into the WAV ``path`` (exactly ``n_samples``); returns the window count.

    ``gate(samples, offset)``, if given, shapes the track as it is written (dub: silence outside the speech spans).
    ``fixed``/``uncond``: per-window conditions (:func:`_generate`).
    """
    writer = _TrackWriter(path, synth.config.audio.sample_rate, n_samples, subtype, gate)
    try:
        n_windows = _generate(synth, conds, n, opts, writer, clock, progress, fixed, uncond)
        writer.close()
    except BaseException:
        writer.discard()
        raise
    return n_windows


def _n_latent(info: MediaInfo, synth: Any) -> int:
    return max(1, int(round(info.duration * synth.config.latent_fps)))


def _check_output(out: Path, video: Path, info: MediaInfo, opts: JobOptions) -> None:
    """Before any work: a container that can hold the input's video, then a writable, non-clobbering path."""
    from vssflow_cli.mux import check_container
    from vssflow_cli.output import check_output_path

    check_container(out, info)
    check_output_path(out, overwrite=opts.overwrite, inputs=(video,))


def _default_mix(opts: JobOptions, info: MediaInfo) -> str:
    """The user's --mix; by default "keep" (never drop the user's sound) or "replace" if there is none."""
    if not info.has_audio:
        return "replace"
    return opts.mix or "keep"


def _generated_first(task: str, opts: JobOptions, mix: str | None) -> bool:
    """A dub with no --mix keeps the original as a second track and makes its speech the first, default one
    (issue 11.5: the dub is what the user asked to hear); foley and an explicit ``--mix keep`` put the original
    first."""
    return task == "dub" and opts.mix is None and mix == "keep"


def _audio_tracks(task: str, opts: JobOptions, mix: str | None, info: MediaInfo) -> tuple[str, ...]:
    """The output's audio tracks in order, the first being the default one ("original" for kept ones)."""
    gen = f"vssflow {task}"
    if mix is None:
        return ()
    if mix == "add":
        return (f"original + {gen}",)
    if mix == "replace":
        return (gen,)
    originals = ("original",) * info.n_audio
    return (gen, *originals) if _generated_first(task, opts, mix) else (*originals, gen)


def _finish(
    task: str,
    video: Path,
    out: Path,
    info: MediaInfo,
    opts: JobOptions,
    synth: Any,
    build: Callable[[_Clock, Progress], dict[str, np.ndarray]],
    progress: Progress,
    t0: float,
    **extra: Any,
) -> Result:
    """Shared tail of foley/dub: generate the track into a WAV (or temp WAV + mux), atomically."""
    from vssflow_cli.loudness import level_track, write_with_gain
    from vssflow_cli.mux import mux, mux_warnings
    from vssflow_cli.output import atomic_output

    clock = _Clock()
    conds = build(clock, progress)
    gate = conds.pop("_gate", None)
    fixed, uncond = conds.pop("_fixed", None), conds.pop("_uncond", None)
    notes = tuple(conds.pop("_warnings", ()))
    n = _n_latent(info, synth)
    conds = {k: to_latent_frames(v, n, FEATURE_FPS, synth.config.latent_fps) for k, v in conds.items()}
    sr = synth.config.audio.sample_rate
    n_samples = int(round(info.duration * sr))
    mix = None if opts.wav_only else _default_mix(opts, info)
    with tempfile.TemporaryDirectory(prefix="vssflow-") as tmpdir:
        wav = Path(tmpdir) / "generated.w64"
        # the gate shapes the samples as they are written, so the levels are measured on the gated track
        n_windows = _generate_to(wav, "FLOAT", synth, conds, n, n_samples, opts, clock, progress, gate, fixed, uncond)
        progress("mux", 0, 1)
        with clock("mux"):
            levels = level_track(wav, task, loudness=opts.loudness, gain_db=opts.gain_db,
                                 video=video if mix == "add" else None, info=info)  # fmt: skip
            # without --overwrite the output is published only if nothing appeared there meanwhile (a second
            # run with the same -o): the startup check alone would let the later run replace the earlier one
            if opts.wav_only:
                with atomic_output(out, overwrite=opts.overwrite) as tmp:
                    write_with_gain(wav, tmp, levels.gain_db)
            else:
                mux(video, wav, out, mix=mix, gain_db=levels.gain_db, title=f"vssflow {task}", info=info,
                    speech=task == "dub", generated_first=_generated_first(task, opts, mix),
                    overwrite=opts.overwrite)  # fmt: skip
        progress("mux", 1, 1)
    return Result(
        task=task,
        input=str(video),
        output=str(out),
        duration=info.duration,
        n_windows=n_windows,
        mix=mix,
        device=str(getattr(synth, "device_used", "cpu")),
        model=str(getattr(getattr(synth, "manifest", None), "name", "unknown")),
        seed=opts.seed,
        precision=str(getattr(synth, "precision", "fp32")),
        stages=clock.stages | extra.pop("stages", {}),
        wall=time.perf_counter() - t0,
        warnings=notes + (() if opts.wav_only else tuple(mux_warnings(out, info))),
        levels=levels.to_dict(),
        audio_tracks=_audio_tracks(task, opts, mix, info),
        **extra,
    )


def foley(
    video: str | os.PathLike[str], out: str | os.PathLike[str], opts: JobOptions, synth: Any,
    progress: Progress | None = None,
) -> Result:  # fmt: skip
    """Generate sound effects for ``video`` and write ``out`` (a video, or a WAV if ``opts.wav_only``)."""
    from vssflow_cli.media import probe

    t0 = time.perf_counter()
    progress = progress or _no_progress
    video, out = Path(video), Path(out)
    info = probe(video)
    _check_output(out, video, info, opts)
    prompts = prompt_conditions(synth.config, opts, getattr(getattr(synth, "manifest", None), "name", "the model"))

    def build(clock: _Clock, progress: Progress) -> dict[str, np.ndarray]:
        v, s = visual_features(video, info, clock, progress)
        conds = {"video": v, "sync": s, "_gate": motion_gate(s, synth.config.audio.sample_rate), **prompts}
        if synth.config.prior_dim:  # the model was trained to hear "nothing is said here" as the silent prior
            from vssflow_cli.prior import prior_track

            a = synth.config.audio
            conds["prior"] = synth.encode_logmel(prior_track(len(v) * a.mel_per_latent, [], a.n_mels))
        return conds

    return _finish("foley", video, out, info, opts, synth, build, progress, t0)


def prompt_conditions(config: Any, opts: JobOptions, model: str) -> dict[str, Any]:
    """The per-window prompt conditions of a foley run (``_fixed``, ``_uncond``) and a warning naming the words
    the model does not know (``_warnings``); {} without a prompt. UsageError if the model has no prompt input."""
    import numpy as np

    from vssflow_cli.prompt import prompt_ids, unknown_words

    if not (opts.prompt or opts.negative_prompt):
        return {}
    if not config.prompt_words:
        raise UsageError(
            f"model {model} takes no text prompt; drop --prompt/--negative-prompt or use a model trained with prompts"
        )
    out: dict[str, Any] = {"_warnings": []}
    for key, text in (("_fixed", opts.prompt), ("_uncond", opts.negative_prompt)):
        if not text:
            continue
        ids = prompt_ids(text, config.prompt_words, config.prompt_tokens)
        unknown = unknown_words(text, config.prompt_words)
        flag = "--prompt" if key == "_fixed" else "--negative-prompt"
        if unknown:
            out["_warnings"].append(
                f"{flag}: model {model} does not know {', '.join(repr(w) for w in unknown)}; "
                f"it knows {len(config.prompt_words)} words (listed in its MODEL.md), the rest are ignored"
            )
        if not np.any(ids):
            out["_warnings"].append(f"{flag} {text!r} holds no word the model knows: generating without it")
            continue
        out[key] = {"prompt": ids}
    return out


def motion_gate(sync: np.ndarray, sr: int, fps: float = FEATURE_FPS) -> Callable[[np.ndarray, int], np.ndarray]:
    """Foley's gate: silence is a result, so the track is faded out where nothing in the picture moves (the DiT
    alone gave some still pictures a sound from how they look). ``sync`` (n, SYNC_DIM) at ``fps``."""
    from vssflow_cli.prior import SpanGate
    from vssflow_cli.vision import motion_spans

    return SpanGate(motion_spans(sync, fps), sr, pad_s=0.0)


def _script_segments(
    video: Path, script: Path | None, info: MediaInfo, opts: JobOptions, clock: _Clock, progress: Progress
) -> tuple[list[Any], str]:
    """The script's segments and the espeak-ng voice to speak them with (transcribed: the detected language)."""
    from vssflow_cli.text import parse_script

    if script is not None:
        return parse_script(script), opts.lang or "en-us"
    if not info.has_audio:
        raise InputError(f"{video}: no audio to transcribe and no script; pass --text script.txt (or .srt/.vtt)")
    from vssflow_cli.media import read_audio
    from vssflow_cli.transcribe import transcribe_full

    progress("transcribe", 0, 1)
    with clock("transcribe"):
        t = transcribe_full(read_audio(video, 16000), opts.asr_model, opts.lang, opts.device)
    progress("transcribe", 1, 1)
    if not t.segments:
        raise InputError(f"{video}: no speech found in the original audio; pass the words with --text script.txt")
    return t.segments, opts.lang or t.voice


def face_spans(lip: np.ndarray, fps: float = FEATURE_FPS, min_len_s: float = 0.3) -> list[tuple[float, float]]:
    """Spans (start_s, end_s) where a face is on screen (lip feature 0 = present), gaps under 0.2 s bridged."""
    import numpy as np

    from vssflow_cli.text import merge_spans

    present = np.asarray(lip)[:, 0] > 0.5 if len(lip) else np.zeros(0, bool)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], present.astype(np.int8), [0]])))
    return merge_spans([(a / fps, b / fps) for a, b in zip(edges[::2], edges[1::2])], max_gap=0.2, min_len=min_len_s)


def _intersect(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> list[tuple[float, float]]:
    return [(max(s, c), min(e, d)) for s, e in a for c, d in b if min(e, d) > max(s, c)]


def _speaking_spans(
    video: Path, info: MediaInfo, lip_spans: list[tuple[float, float]], faces: list[tuple[float, float]]
) -> list[tuple[float, float]]:
    """Where untimed script text goes: lip motion, narrowed to voice activity when the video has sound.

    Voice activity inside the lip-motion spans is the on-screen speaker talking. When the two never overlap,
    lip motion alone is used, else voice activity while a face is on screen; never a stretch without a face.
    """
    if not info.has_audio:
        return lip_spans
    from vssflow_cli.media import read_audio
    from vssflow_cli.text import merge_spans
    from vssflow_cli.vad import speech_spans

    voice = speech_spans(read_audio(video, 16000))
    both = _intersect(lip_spans, voice)
    return merge_spans(both, max_gap=0.3) or lip_spans or merge_spans(_intersect(voice, faces), min_len=0.3)


def dub(
    video: str | os.PathLike[str], out: str | os.PathLike[str], script: str | os.PathLike[str] | None,
    opts: JobOptions, synth: Any, progress: Progress | None = None,
) -> Result:  # fmt: skip
    """Generate lip-synced speech of ``script`` (or of a transcription of the original audio)."""
    import numpy as np

    from vssflow_cli.lips import lip_motion_spans
    from vssflow_cli.media import probe
    from vssflow_cli.prior import SpanGate, speaking_rate_warnings
    from vssflow_cli.text import phoneme_ids, phoneme_track, phonemize, place_segments

    t0 = time.perf_counter()
    progress = progress or _no_progress
    video, out = Path(video), Path(out)
    script_path = Path(script) if script is not None else None
    if opts.lang:
        phonemize("a", opts.lang)  # an unknown --lang fails now, not after decoding the video
    info = probe(video)
    _check_output(out, video, info, opts)
    pre = _Clock()
    segments, voice = _script_segments(video, script_path, info, opts, pre, progress)
    placed_count: list[int] = []
    notes: list[str] = []
    # the teacher reads the script's lines while the video is decoded and its lips tracked: the reading needs only
    # the words; placing it on its span comes later (_teacher_prior finds the sentences in the teacher's memo)
    reading = _ReadAhead([seg.text for seg in segments], voice, opts.fast_teacher) if synth.config.prior_dim else None

    def build(clock: _Clock, progress: Progress) -> dict[str, Any]:
        lip, video_feats, sync = lip_features(video, info, clock, progress, with_visual=True)
        with clock("features"):
            faces = face_spans(lip)
            speaking = _speaking_spans(video, info, lip_motion_spans(lip, FEATURE_FPS), faces)
            if not speaking and any(seg.start is None for seg in segments):
                speaking = faces  # a face that never visibly moves its mouth: speak while it is on screen
            placed = place_segments(segments, info.duration, speaking)
            if not placed:
                raise InputError(
                    f"{script_path or video}: no script line falls inside the video's "
                    f"{info.duration:.1f} s; check the cue times"
                )
            spans = [(s, e, phoneme_ids(phonemize(text, voice))) for s, e, text in placed]
            track = phoneme_track(spans, len(lip), FEATURE_FPS)
        placed_count.append(len(placed))
        notes.extend(speaking_rate_warnings(placed))
        conds: dict[str, Any] = {"phonemes": track.astype(np.int64), "lip": lip}
        if synth.config.prior_dim:
            with clock("teacher"):  # what is left of the reading once the lips are tracked, and its placing
                if reading is not None:
                    reading.result()
                conds["prior"] = _teacher_prior(synth, placed, lip, voice, opts.fast_teacher)
        # speech only inside the placed spans: the lips elsewhere must not make the model talk
        conds["lip"] = lip * _span_mask(placed, len(lip), FEATURE_FPS)[:, None]
        conds["_gate"] = SpanGate([(s, e) for s, e, _ in placed], synth.config.audio.sample_rate)
        conds.update(video=video_feats, sync=sync)
        return conds

    opts = dataclasses.replace(opts, warm_start=True)
    try:
        res = _finish("dub", video, out, info, opts, synth, build, progress, t0, stages=pre.stages)
    finally:
        if reading is not None:
            reading.cancel()
    return dataclasses.replace(
        res, segments=placed_count[0] if placed_count else None, warnings=(*res.warnings, *notes)
    )


def _span_mask(placed: list[tuple[float, float, str]], n: int, fps: float, pad_s: float = 0.1) -> np.ndarray:
    """(n,) float32: 1 on frames inside a placed span (widened by ``pad_s``), else 0."""
    import numpy as np

    mask = np.zeros(n, np.float32)
    for s, e, _ in placed:
        mask[max(0, int((s - pad_s) * fps)) : max(0, int(np.ceil((e + pad_s) * fps)))] = 1.0
    return mask


class _ReadAhead:
    """The teacher reading a script's lines in a background thread (ONNX Runtime and mediapipe release the GIL);
    the readings stay in the teacher's memo. ``cancel`` stops it after the line it is on, so a dub that fails
    (no face, bad cues) exits without waiting for the rest of the script."""

    def __init__(self, lines: list[str], lang: str, fast: bool):
        import threading
        from concurrent.futures import ThreadPoolExecutor

        from vssflow_cli.teacher import get_teacher

        teacher = get_teacher()
        self._stop = threading.Event()

        def read() -> None:
            for line in lines:
                if self._stop.is_set():
                    return
                teacher.speak_logmel(line, lang, fast=fast)

        pool = ThreadPoolExecutor(1, thread_name_prefix="vssflow-teacher")
        self._future = pool.submit(read)
        pool.shutdown(wait=False)

    def result(self) -> None:
        """Wait for the reading (re-raising its error)."""
        self._future.result()

    def cancel(self) -> None:
        self._stop.set()


def _teacher_prior(
    synth: Any, placed: list[tuple[float, float, str]], lip: np.ndarray, lang: str, fast: bool = False
) -> np.ndarray:
    """The prior condition (n, prior_dim) of a dub: each segment read by the teacher and warped onto its span."""
    from vssflow_cli.prior import dub_prior
    from vssflow_cli.teacher import get_teacher

    teacher = get_teacher()
    readings = [teacher.speak_logmel(text, lang, fast=fast) for _, _, text in placed]
    track, _ = dub_prior(placed, readings, lip, len(lip), synth.config.audio, FEATURE_FPS)
    return synth.encode_logmel(track)


def load_synthesizer(opts: JobOptions) -> Any:
    """The model for ``opts.model`` on ``opts.device`` (loaded once per CLI call)."""
    from vssflow_cli.runtime import Synthesizer

    return Synthesizer.from_spec(opts.model, device=opts.device, precision=opts.precision)

