"""espeak-ng's formant synthesiser through ctypes: real (robotic) speech for the evaluation's espeak row and tests."""

from __future__ import annotations

import functools
import threading

import numpy as np

from vssflow_cli.errors import UsageError
from vssflow_cli.text import resolve_language


def _voice_struct():
    import ctypes

    class EspeakVoice(ctypes.Structure):  # espeak_VOICE in speak_lib.h
        _fields_ = [
            ("name", ctypes.c_char_p), ("languages", ctypes.c_char_p), ("identifier", ctypes.c_char_p),
            ("gender", ctypes.c_ubyte), ("age", ctypes.c_ubyte), ("variant", ctypes.c_ubyte),
            ("xx1", ctypes.c_ubyte), ("score", ctypes.c_int), ("spare", ctypes.c_void_p),
        ]

    return EspeakVoice


_ESPEAK_LOCK = threading.Lock()


@functools.lru_cache(maxsize=1)
def _espeak_lib():
    """libespeak-ng from espeakng-loader, initialised for synchronous synthesis to memory."""
    import ctypes

    import espeakng_loader

    lib = ctypes.CDLL(espeakng_loader.get_library_path())
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    audio_output_synchronous = 2
    rate = lib.espeak_Initialize(audio_output_synchronous, 0, espeakng_loader.get_data_path().encode(), 0)
    if rate <= 0:
        raise RuntimeError("espeak-ng failed to initialise")
    voice_type = _voice_struct()
    lib.espeak_SetVoiceByProperties.argtypes = [ctypes.POINTER(voice_type)]
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_Synth.argtypes = [
        ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
        ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
    ]
    callback_type = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)
    chunks: list[np.ndarray] = []

    def on_audio(wav, n, _events):
        if n > 0:
            chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0

    callback = callback_type(on_audio)  # must stay referenced: returned into the cache
    lib.espeak_SetSynthCallback(callback)
    return lib, rate, chunks, voice_type, callback


def _resample(wave: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Band-limited resampling of a whole clip through the FFT (fine for short clips)."""
    if sr_in == sr_out or wave.size == 0:
        return wave.astype(np.float32)
    n_out = int(round(wave.size * sr_out / sr_in))
    spec = np.fft.rfft(wave)
    keep = n_out // 2 + 1
    spec = spec[:keep] if spec.size >= keep else np.pad(spec, (0, keep - spec.size))
    return (np.fft.irfft(spec, n_out) * (n_out / wave.size)).astype(np.float32)


def espeak_speech(text: str, lang: str = "en-us", sample_rate: int = 16000, wpm: int = 160) -> np.ndarray:
    """Speak ``text`` with espeak-ng's formant synthesiser; float32 mono at ``sample_rate``.

    A robotic but real speech signal, available offline. ``wpm`` is
    the speaking rate in words per minute.
    """
    import ctypes

    lang = resolve_language(lang)
    lib, rate, chunks, voice_type, _ = _espeak_lib()
    espeak_rate_param = 1
    with _ESPEAK_LOCK:
        chunks.clear()
        voice = voice_type(languages=lang.encode())
        if lib.espeak_SetVoiceByProperties(ctypes.byref(voice)) != 0:
            raise UsageError(f"espeak-ng has no voice for '{lang}' — pick another language code")
        lib.espeak_SetParameter(espeak_rate_param, int(wpm), 0)
        data = text.encode("utf-8") + b"\0"
        buf = ctypes.create_string_buffer(data)
        pos_character, chars_utf8 = 1, 1
        lib.espeak_Synth(buf, len(data), 0, pos_character, 0, chars_utf8, None, None)
        lib.espeak_Synchronize()
        wave = np.concatenate(chunks) if chunks else np.zeros(0, np.int16)
        chunks.clear()
    return _resample(wave.astype(np.float32) / 32768.0, rate, sample_rate)

