"""Voice activity: silero-vad's shipped ONNX model run through onnxruntime (no torch).

The silero-vad package ships two ONNX forms of the same network (16 kHz, 512-sample frames,
each prefixed with the previous frame's last 64 samples as context):

- ``silero_vad_16k_sequence.onnx``: ``input (T, 576)``, LSTM ``h``/``c`` ``(1, 1, 128)`` ->
  ``speech_probs (T,)``: a whole block of frames per call (used when present);
- ``silero_vad.onnx``: ``input (1, 576)``, ``state (2, 1, 128)``, ``sr`` int64 -> ``output (1, 1)``,
  ``stateN``: one frame per call (fallback for older packages).
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np

from vssflow_cli.errors import ModelError

SAMPLE_RATE = 16000
FRAME = 512  # samples per VAD frame (32 ms)
CONTEXT = 64
_BLOCK = 512  # frames per call of the sequence model (~16 s)


# silero-vad's sequence model (MIT, Silero Team; data/silero_vad.LICENSE) ships inside vssflow, because the
# silero-vad package itself depends on torch, which the inference install must not pull in.
VENDORED = Path(__file__).resolve().parent / "data" / "silero_vad_16k_sequence.onnx"
VENDORED_SHA256 = "9ccdacc4719d8aa7e45a77536bfabec45a03ba1f2fad5e241ab4060b24238a85"


def _candidates() -> list[tuple[Path, str]]:
    """ONNX models to try, in order: the vendored one, then those of an installed silero-vad package."""
    out = [(VENDORED, "sequence")]
    # find_spec does not execute the package (whose import pulls in torch).
    spec = importlib.util.find_spec("silero_vad")
    if spec is not None and spec.submodule_search_locations:
        data = Path(next(iter(spec.submodule_search_locations))) / "data"
        out += [(data / "silero_vad_16k_sequence.onnx", "sequence"), (data / "silero_vad.onnx", "stream")]
    return out


@functools.lru_cache(maxsize=1)
def _session():
    import hashlib

    import onnxruntime as ort

    for path, kind in _candidates():
        if not path.is_file():
            continue
        if path == VENDORED and hashlib.sha256(path.read_bytes()).hexdigest() != VENDORED_SHA256:
            raise ModelError(f"voice activity model {path} is damaged (sha256 mismatch) — reinstall vssflow")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"]), kind
    raise ModelError("no voice activity model found — reinstall vssflow (it ships silero-vad's ONNX model)")


def _frames_with_context(wave: np.ndarray) -> np.ndarray:
    """(n_frames, CONTEXT + FRAME): each 512-sample frame (last one zero-padded) with its context."""
    n = max(1, -(-wave.size // FRAME))
    frames = np.zeros((n, FRAME), dtype=np.float32)
    frames.reshape(-1)[: wave.size] = wave
    ctx = np.zeros((n, CONTEXT), dtype=np.float32)
    ctx[1:] = frames[:-1, -CONTEXT:]
    return np.concatenate([ctx, frames], axis=1)


def speech_probs(wave16k: np.ndarray) -> np.ndarray:
    """Speech probability per 32 ms frame, shape (ceil(len / 512),) float32."""
    wave = np.ascontiguousarray(wave16k, dtype=np.float32).reshape(-1)
    if wave.size == 0:
        return np.zeros(0, dtype=np.float32)
    sess, kind = _session()
    frames = _frames_with_context(wave)
    if kind == "sequence":
        h = np.zeros((1, 1, 128), np.float32)
        c = np.zeros((1, 1, 128), np.float32)
        out = []
        for i in range(0, len(frames), _BLOCK):
            p, h, c = sess.run(["speech_probs", "hn", "cn"], {"input": frames[i : i + _BLOCK], "h": h, "c": c})
            out.append(p)
        return np.concatenate(out).astype(np.float32)
    state = np.zeros((2, 1, 128), np.float32)
    sr = np.array(SAMPLE_RATE, dtype=np.int64)
    probs = np.empty(len(frames), np.float32)
    for i, frame in enumerate(frames):
        p, state = sess.run(["output", "stateN"], {"input": frame[None], "state": state, "sr": sr})
        probs[i] = p.reshape(-1)[0]
    return probs


def speech_spans(
    wave16k: np.ndarray,
    threshold: float = 0.5,
    min_speech_s: float = 0.25,
    min_silence_s: float = 0.1,
    pad_s: float = 0.03,
) -> list[tuple[float, float]]:
    """Speech spans (start_s, end_s) in a 16 kHz mono wave, sorted and non-overlapping.

    Hysteresis on the frame probabilities: speech starts at ``p >= threshold`` and ends after
    ``min_silence_s`` below ``threshold - 0.15``; spans shorter than ``min_speech_s`` are dropped
    and the rest padded by ``pad_s`` on both sides (clipped to the wave).
    """
    probs = speech_probs(wave16k)
    dur = np.asarray(wave16k).size / SAMPLE_RATE
    hop = FRAME / SAMPLE_RATE
    off = threshold - 0.15
    spans: list[tuple[float, float]] = []
    start, quiet_since = None, None
    for i, p in enumerate(probs):
        t = i * hop
        if start is None:
            if p >= threshold:
                start, quiet_since = t, None
            continue
        if p < off:
            if quiet_since is None:
                quiet_since = t
            if t + hop - quiet_since >= min_silence_s:
                spans.append((start, quiet_since))
                start, quiet_since = None, None
        else:
            quiet_since = None
    if start is not None:
        spans.append((start, quiet_since if quiet_since is not None else len(probs) * hop))
    out: list[tuple[float, float]] = []
    for s, e in spans:
        if e - s < min_speech_s:
            continue
        s, e = max(0.0, s - pad_s), min(dur, e + pad_s)
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], e)
        else:
            out.append((s, e))
    return out
