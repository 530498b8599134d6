"""Issue 7: bad inputs, interrupts, fuzzing, bounded memory.

Invariants for every bad input: the exit code of the error's class, at most 3 lines on stderr and
no traceback, every file in the working folder byte-identical, no new (partial/temp) file there
or in the private TMPDIR.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import REPO, ffmpeg, files_in, make_clip, sha256, video_md5
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from vssflow_cli.errors import EXIT_INPUT, EXIT_MODEL, EXIT_OUTPUT, EXIT_USAGE

# --------------------------------------------------------------------------- the battery

Setup = Callable[[Path, dict], list[object]]
CASES: list[tuple[str, int, Setup]] = []


def case(name: str, code: int) -> Callable[[Setup], Setup]:
    def add(fn: Setup) -> Setup:
        CASES.append((name, code, fn))
        return fn

    return add


def _write(p: Path, data: bytes) -> Path:
    p.write_bytes(data)
    return p


def _copy(src: Path, w: Path, name: str = "v.mp4") -> Path:
    shutil.copy(src, w / name)
    return w / name


case("missing file", EXIT_INPUT)(lambda w, c: ["foley", w / "nope.mp4"])
case("directory", EXIT_INPUT)(lambda w, c: ["foley", w])
case("empty file", EXIT_INPUT)(lambda w, c: ["foley", _write(w / "e.mp4", b"")])
case("text as mp4", EXIT_INPUT)(lambda w, c: ["foley", _write(w / "t.mp4", b"just some text\n" * 40)])
case("random bytes", EXIT_INPUT)(lambda w, c: ["foley", _write(w / "r.mp4", os.urandom(50_000))])
case("mp4 head only", EXIT_INPUT)(lambda w, c: ["foley", _write(w / "h.mp4", c["clip"].read_bytes()[:4000])])
case("mp4 without moov", EXIT_INPUT)(
    lambda w, c: ["foley", _write(w / "m.mp4", c["clip"].read_bytes()[: int(c["clip"].stat().st_size * 0.6)])]
)
case("faststart mp4 cut in half", EXIT_INPUT)(
    lambda w, c: ["foley", _write(w / "f.mp4", c["faststart"].read_bytes()[: c["faststart"].stat().st_size // 2])]
)
case("zeroed moov", EXIT_INPUT)(
    lambda w, c: ["foley", _write(w / "z.mp4", c["clip"].read_bytes().replace(b"moov", b"\0\0\0\0"))]
)
case("audio only wav", EXIT_INPUT)(lambda w, c: ["foley", c["wav"]])
case("mp3 with cover art", EXIT_INPUT)(lambda w, c: ["foley", c["cover"]])
case("still image", EXIT_INPUT)(lambda w, c: ["foley", c["png"]])
case("subtitles as video", EXIT_INPUT)(
    lambda w, c: ["foley", _write(w / "s.mkv", b"1\n00:00:00,000 --> 00:00:01,000\nhi\n")]
)
case("zero frames", EXIT_INPUT)(lambda w, c: ["foley", c["zero"]])
case("container claims 1e10 s", EXIT_INPUT)(lambda w, c: ["foley", c["huge_claim"], "-o", w / "o.mkv"])
case("steps 0", EXIT_USAGE)(lambda w, c: ["foley", c["clip"], "--steps", "0"])
case("steps negative", EXIT_USAGE)(lambda w, c: ["foley", c["clip"], "--steps", "-3"])
case("steps text", EXIT_USAGE)(lambda w, c: ["foley", c["clip"], "--steps", "many"])
case("cfg negative", EXIT_USAGE)(lambda w, c: ["foley", c["clip"], "--cfg", "-1"])
case("cfg nan", EXIT_USAGE)(lambda w, c: ["foley", c["clip"], "--cfg", "nan"])
case("mix unknown", EXIT_USAGE)(lambda w, c: ["foley", c["clip"], "--mix", "blend"])
case("device unknown", EXIT_USAGE)(lambda w, c: ["foley", c["clip"], "--device", "tpu"])
case("solver unknown", EXIT_USAGE)(lambda w, c: ["foley", c["clip"], "--solver", "heun"])
case("seed negative", EXIT_USAGE)(lambda w, c: ["foley", c["clip"], "--seed", "-1"])
case("gain absurd", EXIT_USAGE)(lambda w, c: ["foley", c["clip"], "--gain-db", "1000"])
case("shard 0/2", EXIT_USAGE)(lambda w, c: ["foley", c["clip"], "--shard", "0/2"])
case("shard 3/2", EXIT_USAGE)(lambda w, c: ["foley", c["clip"], "--shard", "3/2"])
case("shard text", EXIT_USAGE)(lambda w, c: ["foley", c["clip"], "--shard", "half"])
case("output extension", EXIT_USAGE)(lambda w, c: ["foley", c["clip"], "-o", w / "o.txt"])
case("output container cannot hold the video", EXIT_USAGE)(lambda w, c: ["foley", c["clip"], "-o", w / "o.webm"])
case("-o with two inputs", EXIT_USAGE)(lambda w, c: ["foley", c["clip"], c["clip2"], "-o", w / "o.mp4"])
case("-o and --out-dir", EXIT_USAGE)(lambda w, c: ["foley", c["clip"], "-o", w / "o.mp4", "--out-dir", w])
case("--wav with .mp4", EXIT_USAGE)(lambda w, c: ["foley", c["clip"], "--wav", "-o", w / "o.mp4"])
case("unknown option", EXIT_USAGE)(lambda w, c: ["foley", c["clip"], "--frobnicate"])
case("no inputs", EXIT_USAGE)(lambda w, c: ["foley"])
case("leading dash without --", EXIT_USAGE)(lambda w, c: ["foley", _copy(c["clip"], w, "-x.mp4").name])
case("from-list missing", EXIT_USAGE)(lambda w, c: ["foley", "--from-list", w / "list.txt"])
case("from-list empty", EXIT_USAGE)(lambda w, c: ["foley", "--from-list", _write(w / "l.txt", b"# nothing\n\n")])
case("output folder missing", EXIT_OUTPUT)(lambda w, c: ["foley", c["clip"], "-o", w / "no" / "o.mp4"])
case("output is the input", EXIT_OUTPUT)(lambda w, c: ["foley", c["clip"], "-o", c["clip"], "--overwrite"])
case("output exists", EXIT_OUTPUT)(lambda w, c: ["foley", c["clip"], "-o", _write(w / "o.mp4", b"keep me")])
case("output folder unwritable", EXIT_OUTPUT)(lambda w, c: ["foley", c["clip"], "-o", "/proc/vssflow-test.mp4"])
case("model folder missing", EXIT_MODEL)(lambda w, c: ["foley", c["clip"], "--model", w / "no-model"])
case("model tampered", EXIT_MODEL)(lambda w, c: ["foley", c["clip"], "--model", c["tampered"]])
case("model bad manifest", EXIT_MODEL)(lambda w, c: ["foley", c["clip"], "--model", c["bad_manifest"]])
case("models pull unknown", EXIT_MODEL)(lambda w, c: ["models", "pull", "no-such-model"])
case("model unknown name", EXIT_MODEL)(lambda w, c: ["foley", c["clip"], "--model", "no-such-model"])
case("dub no face", EXIT_INPUT)(lambda w, c: ["dub", _copy(c["noface"], w), "--text", c["script"]])
case("dub empty script", EXIT_INPUT)(lambda w, c: ["dub", c["face"], "--text", _write(w / "e.txt", b"\n \n")])
case("dub malformed srt", EXIT_INPUT)(
    lambda w, c: ["dub", c["face"], "--text", _write(w / "m.srt", b"1\n00:00:01,000 -> later\nhello\n")]
)
case("dub script not utf-8", EXIT_INPUT)(lambda w, c: ["dub", c["face"], "--text", _write(w / "l.txt", b"caf\xe9\n")])
case("dub script type", EXIT_INPUT)(lambda w, c: ["dub", c["face"], "--text", _write(w / "s.docx", b"PK\x03\x04")])
case("dub script missing", EXIT_INPUT)(lambda w, c: ["dub", c["face"], "--text", w / "none.txt"])
case("dub script is /dev/zero", EXIT_INPUT)(lambda w, c: ["dub", c["face"], "--text", c["zero_script"]])
case("dub script over 1 MB", EXIT_INPUT)(lambda w, c: ["dub", c["face"], "--text", c["long_script"]])
case("dub no audio, no text", EXIT_INPUT)(lambda w, c: ["dub", c["silent"]])
case("dub no text, asr model missing", EXIT_MODEL)(lambda w, c: ["dub", c["face"], "--asr-model", w / "no-asr"])
case("transcribe, asr model missing", EXIT_MODEL)(
    lambda w, c: ["transcribe", c["face"], "-o", w / "s.srt", "--asr-model", w / "no-asr"]
)
case("transcribe to .doc", EXIT_USAGE)(lambda w, c: ["transcribe", c["face"], "-o", w / "s.doc"])
case("transcribe no audio", EXIT_INPUT)(lambda w, c: ["transcribe", c["silent"], "-o", w / "s.srt", "--asr-model", w])
case("dub unknown language", EXIT_USAGE)(lambda w, c: ["dub", c["face"], "--text", c["script"], "--lang", "xx-nope"])
case("dub --text with 2 videos", EXIT_USAGE)(lambda w, c: ["dub", c["face"], c["clip"], "--text", c["script"]])


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory, clip_short: Path, face_clip: Path, test_bundle: Path) -> dict:
    """Read-only inputs shared by the battery (copied into each case's folder when modified)."""
    d = tmp_path_factory.mktemp("assets")
    a: dict[str, Path] = {"face": face_clip}
    a["faststart"] = make_clip(d / "fs.mp4", 2, size="64x48", audio=False, extra=("-movflags", "+faststart"))
    a["silent"] = make_clip(d / "silent.mp4", 1, size="64x48", audio=False)
    # mediapipe's face mesh "sees" a face in most frames of testsrc2; testsrc has none
    a["noface"] = make_clip(d / "noface.mp4", 2, size="160x120", pattern="testsrc")
    ffmpeg("-f", "lavfi", "-i", "sine=duration=1", str(d / "a.wav"))
    a["wav"] = d / "a.wav"
    ffmpeg("-f", "lavfi", "-i", "sine=duration=1", "-f", "lavfi", "-i", "testsrc2=size=32x32", "-map", "0", "-map",
           "1", "-frames:v", "1", "-c:v", "mjpeg", "-disposition:v", "attached_pic", str(d / "c.mp3"))  # fmt: skip
    a["cover"] = d / "c.mp3"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=32x32", "-frames:v", "1", str(d / "i.png"))
    a["png"] = d / "i.png"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=32x32", "-frames:v", "0", "-c:v", "libx264", str(d / "zero.mp4"))
    a["zero"] = d / "zero.mp4"
    a["huge_claim"] = _claim_duration(make_clip(d / "huge.mkv", 2, size="64x48"), 1e10)
    a["tampered"] = d / "tampered"
    shutil.copytree(test_bundle, a["tampered"])
    data = bytearray((a["tampered"] / "decoder.onnx").read_bytes())
    data[-10] ^= 0x55
    (a["tampered"] / "decoder.onnx").write_bytes(bytes(data))
    a["bad_manifest"] = d / "bad"
    shutil.copytree(test_bundle, a["bad_manifest"])
    (a["bad_manifest"] / "manifest.json").write_text("{ not json")
    a["script"] = _write(d / "script.txt", b"Hello world.\n")
    a["zero_script"] = d / "zero.txt"
    a["zero_script"].symlink_to("/dev/zero")
    a["long_script"] = _write(d / "long.txt", b"Hello world.\n" * 80_000)
    a["short"] = clip_short
    return a


def _claim_duration(mkv: Path, seconds: float) -> Path:
    """Rewrite the Segment Duration of an ffmpeg-written Matroska file (EBML id 0x4489, an 8-byte float
    in milliseconds): the header then claims ``seconds`` while the clusters hold what they held."""
    data = bytearray(mkv.read_bytes())
    at = data.find(b"\x44\x89\x88")
    assert at > 0, "no 8-byte Duration element"
    struct.pack_into(">d", data, at + 3, seconds * 1000)
    mkv.write_bytes(bytes(data))
    return mkv


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): sha256(p) for p in folder.rglob("*") if p.is_file()}


def _assert_clean_failure(r: subprocess.CompletedProcess, code: int, work: Path, before: dict, cli) -> None:
    assert r.returncode == code, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert 1 <= len(lines) <= 3, r.stderr
    assert lines[-1].startswith("vssflow: error:"), r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    assert _snapshot(work) == before  # inputs byte-identical, nothing new (no partial outputs)
    assert cli.leftover_tmp() == set()


def test_battery_has_at_least_30_cases() -> None:
    assert len(CASES) >= 30, len(CASES)


@pytest.mark.parametrize("name, code, setup", CASES, ids=[c[0] for c in CASES])
def test_bad_input(name: str, code: int, setup: Setup, cli, tmp_path: Path, assets: dict) -> None:
    work = tmp_path / "work"
    work.mkdir()
    c = dict(assets)
    c["clip"] = _copy(assets["short"], work, "clip.mp4")
    c["clip2"] = _copy(assets["short"], work, "clip2.mp4")
    assets_before = {k: sha256(v) for k, v in assets.items() if isinstance(v, Path) and v.is_file()}
    args = setup(work, c)
    before = _snapshot(work)
    r = cli(*args, cwd=work)
    _assert_clean_failure(r, code, work, before, cli)
    assert {k: sha256(v) for k, v in assets.items() if isinstance(v, Path) and v.is_file()} == assets_before


def test_cuda_requested_without_cuda_is_a_model_error(cli, tmp_path: Path, clip_short: Path) -> None:
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this machine has CUDA: the error case cannot happen")
    work = tmp_path / "w"
    work.mkdir()
    clip = _copy(clip_short, work)
    before = _snapshot(work)
    r = cli("foley", clip, "--device", "cuda", cwd=work)
    _assert_clean_failure(r, EXIT_MODEL, work, before, cli)


def test_internal_errors_are_one_line_unless_debugging(tmp_path: Path, clip_short: Path, cli_env: dict) -> None:
    # A real bug path cannot be provoked through the CLI, so break the runtime in a child process.
    code = (
        "import sys; from vssflow_cli import pipeline, cli\n"
        "def boom(*a, **k): raise ZeroDivisionError('synthetic bug')\n"
        "pipeline.load_synthesizer = boom\n"
        f"sys.exit(cli.run(['foley', {str(clip_short)!r}, '-o', {str(tmp_path / 'o.mp4')!r}]))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], env=cli_env, capture_output=True, text=True)
    assert r.returncode == 70 and r.stderr.count("\n") == 1 and "please report" in r.stderr
    assert "VSSFLOW_DEBUG=1" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-c", code], env=dict(cli_env, VSSFLOW_DEBUG="1"), capture_output=True,
                       text=True)  # fmt: skip
    assert r.returncode == 70 and "Traceback" in r.stderr and "ZeroDivisionError" in r.stderr
    assert not (tmp_path / "o.mp4").exists()


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 KB tmpfs, for a real "No space left on device" (mounting needs root; skipped otherwise)."""
    d = tmp_path / "tiny"
    d.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(d)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip() or r.returncode}): needs root")
    try:
        yield d
    finally:
        subprocess.run(["umount", str(d)], check=False)


@pytest.mark.parametrize("where", ["TMPDIR", "--wav output", "video output"])
def test_full_disk_is_an_output_error(where: str, cli, tmp_path: Path, tiny_disk: Path, clip_short: Path) -> None:
    """Issue 13.6: a full disk under the generated track or the output: exit 5 naming the file and
    "no space left on device", and nothing partial left on either disk."""
    work = tmp_path / "work"
    work.mkdir()
    clip = _copy(clip_short, work)
    env = {"TMPDIR": str(tiny_disk)} if where == "TMPDIR" else {}
    out = {"TMPDIR": work / "o.mp4", "--wav output": tiny_disk / "o.wav", "video output": tiny_disk / "o.mp4"}[where]
    before = _snapshot(work)
    r = cli("foley", clip, "-o", out, "--steps", "1", cwd=work, **env)
    _assert_clean_failure(r, EXIT_OUTPUT, work, before, cli)
    assert "no space left on device; free some space" in r.stderr, r.stderr
    assert str(tiny_disk) in r.stderr  # the file that could not be written
    assert files_in(tiny_disk) - {".ses"} == set()  # .ses: onnxruntime's own file in TMPDIR


def _fill(disk: Path) -> Path:
    """Fill ``disk`` to the last byte with one file; returns it."""
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as f:
        with contextlib.suppress(OSError):
            while True:
                f.write(b"x" * 512)
    return filler


def test_full_disk_under_the_report_is_an_output_error(cli, tmp_path: Path, tiny_disk: Path, clip_short: Path) -> None:
    """Issue 13.6: ``--report`` on a full disk: exit 5 naming the report and "no space left on device", no
    partial report; the video, which had room, is complete."""
    work = tmp_path / "work"
    work.mkdir()
    clip = _copy(clip_short, work)
    filler = _fill(tiny_disk)
    size = filler.stat().st_size
    report = tiny_disk / "r.json"
    r = cli("foley", clip, "-o", work / "o.mp4", "--steps", "1", "--report", report, cwd=work)
    assert r.returncode == EXIT_OUTPUT, r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith(f"vssflow: error: {report}: ") and "no space left on device; free some space" in last
    assert files_in(tiny_disk) == {"filler"} and filler.stat().st_size == size  # no partial report
    assert files_in(work) == {"v.mp4", "o.mp4"} and video_md5(work / "o.mp4") == video_md5(clip)
    assert cli.leftover_tmp() == set()


# --------------------------------------------------------------------------- fuzzing (hypothesis)


def _run_in_process(args: list[str]) -> tuple[int, str]:
    from vssflow_cli import cli

    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        code = cli.run(args)
    return code, err.getvalue() + out.getvalue()


mutations = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0.0, 0.99)),
    st.tuples(st.just("overwrite"), st.floats(0.0, 0.99), st.binary(min_size=1, max_size=400)),
    st.tuples(st.just("prepend"), st.binary(min_size=1, max_size=200)),
    st.tuples(st.just("random"), st.binary(min_size=0, max_size=3000)),
)


def _mutate(data: bytes, m: tuple) -> bytes:
    kind = m[0]
    if kind == "truncate":
        return data[: int(len(data) * m[1])]
    if kind == "overwrite":
        at = int(len(data) * m[1])
        return data[:at] + m[2] + data[at + len(m[2]) :]
    if kind == "prepend":
        return m[1] + data
    return m[1]


@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
@given(m=mutations)
@example(m=("truncate", 0.9453125))  # found by CI: an audio stream whose codec parameters were cut off (exit 70)
def test_fuzz_media(m: tuple, tmp_path_factory: pytest.TempPathFactory, clip_short: Path, test_bundle: Path,
                    monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """Mutated media: either a complete output with the input's video packets, or a clean input error."""
    monkeypatch.setenv("VSSFLOW_MODEL", str(test_bundle))
    monkeypatch.setenv("VSSFLOW_NO_PROGRESS", "1")
    work = tmp_path_factory.mktemp("fuzz")
    src = _write(work / "in.mp4", _mutate(clip_short.read_bytes(), m))
    before = sha256(src)
    out = work / "out.mp4"
    code, text = _run_in_process(["foley", str(src), "-o", str(out), "--steps", "1"])
    assert sha256(src) == before
    assert "Traceback" not in text
    assert code in (0, EXIT_INPUT), text
    if code == 0:
        assert files_in(work) == {"in.mp4", "out.mp4"}
        assert video_md5(out) == video_md5(src)
    else:
        assert files_in(work) == {"in.mp4"} and len(text.strip().splitlines()) <= 3


scripts = st.one_of(
    st.text(max_size=200).map(lambda t: ("txt", t.encode("utf-8", "surrogatepass"))),
    st.binary(max_size=200).map(lambda b: ("srt", b)),
    st.lists(st.tuples(st.floats(-5, 10), st.floats(-5, 10), st.text(min_size=0, max_size=30)), max_size=4).map(
        lambda cues: ("srt", "".join(
            f"{i + 1}\n00:00:{max(0, a):06.3f} --> 00:00:{max(0, b):06.3f}\n{t}\n\n".replace(".", ",")
            for i, (a, b, t) in enumerate(cues)).encode("utf-8", "surrogatepass"))  # fmt: skip
    ),
)


@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck))
@given(script=scripts)
def test_fuzz_scripts(script: tuple[str, bytes], tmp_path_factory: pytest.TempPathFactory, face_clip: Path,
                      test_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """Arbitrary scripts: a dub, or a one-line input error; never a crash or a partial file."""
    monkeypatch.setenv("VSSFLOW_MODEL", str(test_bundle))
    monkeypatch.setenv("VSSFLOW_NO_PROGRESS", "1")
    work = tmp_path_factory.mktemp("script")
    ext, data = script
    text = _write(work / f"s.{ext}", data)
    out = work / "out.wav"
    code, msg = _run_in_process(["dub", str(face_clip), "--text", str(text), "-o", str(out), "--steps", "1"])
    assert "Traceback" not in msg
    assert code in (0, EXIT_INPUT), msg
    assert files_in(work) == ({"s." + ext, "out.wav"} if code == 0 else {"s." + ext})


# --------------------------------------------------------------------------- signals


def _no_ffmpeg_left(marker: str) -> bool:
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            with contextlib.suppress(OSError):
                cmd = (d / "cmdline").read_bytes().decode("utf-8", "replace")
                if "ffmpeg" in cmd and marker in cmd:
                    return False
    return True


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_signal_mid_batch_leaves_no_partial_files(sig: int, code: int, cli, tmp_path: Path, clip12: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    clips = []
    for i in range(16):  # enough work that the signal lands mid-batch on a fast machine too (~0.6 s a clip)
        clips.append(src / f"c{i}.mp4")
        shutil.copy(clip12, clips[-1])
    out = tmp_path / "out"
    proc = cli.popen("foley", *clips, "--out-dir", out, "--steps", "1", "--report", tmp_path / "r.json")
    deadline = time.time() + 240
    while time.time() < deadline and not any(p.name.endswith(".foley.mp4") for p in out.glob("*")):
        time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()
    time.sleep(0.2)  # now inside the second input
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr and "interrupted" in stderr.strip().splitlines()[-1]
    assert "not run" in stderr  # the summary table says what was left undone
    done = sorted(out.iterdir())
    assert done and all(p.name.endswith(".foley.mp4") and not p.name.startswith(".") for p in done), done
    for p in done:  # what is there is complete
        assert video_md5(p) == video_md5(clip12)
    assert len(done) < len(clips)
    assert cli.leftover_tmp() == set()
    assert _no_ffmpeg_left(str(tmp_path))
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["interrupted"] and rep["ok"] == len(done)
    assert all(sha256(c) == sha256(clip12) for c in clips)


def test_closing_the_terminal_ends_the_run_cleanly(cli, tmp_path: Path, clip12: Path) -> None:
    """Issue 13.5 as it happens: the run's terminal closes (the kernel hangs it up and sends SIGHUP); the run
    stops with exit 129 although it can no longer write to its terminal, and leaves no partial file."""
    import pty
    import select

    clips = []
    for i in range(8):
        clips.append(tmp_path / f"c{i}.mp4")
        shutil.copy(clip12, clips[-1])
    out = tmp_path / "out"
    argv = cli.argv("foley", *clips, "--out-dir", out, "--steps", "1", "--report", tmp_path / "r.json")
    env = {k: v for k, v in cli.env.items() if k != "VSSFLOW_NO_PROGRESS"}  # progress bars on the terminal
    pid, master = pty.fork()
    if pid == 0:  # the child: a session leader whose controlling terminal is the pty
        signal.signal(signal.SIGHUP, signal.SIG_DFL)  # as from a terminal, even when the suite runs under nohup
        os.execve(argv[0], argv, env)
    deadline = time.time() + 240
    while time.time() < deadline and not any(p.name.endswith(".foley.mp4") for p in out.glob("*")):
        with contextlib.suppress(OSError):
            if select.select([master], [], [], 0.05)[0]:
                os.read(master, 65536)
        assert os.waitpid(pid, os.WNOHANG) == (0, 0), "the run ended before the terminal closed"
    time.sleep(0.2)  # now inside the second input
    os.close(master)
    while time.time() < deadline and (status := os.waitpid(pid, os.WNOHANG))[0] == 0:
        time.sleep(0.05)
    assert os.waitstatus_to_exitcode(status[1]) == 129
    done = sorted(out.iterdir())
    assert done and all(p.name.endswith(".foley.mp4") and not p.name.startswith(".") for p in done), done
    assert all(video_md5(p) == video_md5(clip12) for p in done) and len(done) < len(clips)
    assert cli.leftover_tmp() == set()
    assert _no_ffmpeg_left(str(tmp_path))
    assert json.loads((tmp_path / "r.json").read_text())["interrupted"]


def test_sighup_ignored_by_nohup_stays_ignored(cli, tmp_path: Path, clip_short: Path) -> None:
    """``nohup vssflow ...`` starts with SIGHUP ignored: a closed terminal must not stop that run."""
    out = tmp_path / "o.mp4"
    proc = cli.popen("foley", clip_short, "-o", out, "--steps", "1",
                     preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN))  # fmt: skip
    while proc.poll() is None and not cli.leftover_tmp():  # the run has begun (its temp folder exists)
        time.sleep(0.02)
    proc.send_signal(signal.SIGHUP)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert video_md5(out) == video_md5(clip_short)


def _kill_self_in_finalizer(sig: int) -> None:
    class Finalized:
        def __del__(self) -> None:
            os.kill(os.getpid(), sig)
            time.sleep(0.5)  # the handler runs here; Python prints "Exception ignored" and goes on

    Finalized()


def _signal_becomes_another_error(sig: int) -> None:
    try:
        os.kill(os.getpid(), sig)
        time.sleep(0.5)
    except BaseException as e:  # what an extension module's import does with it
        raise ImportError("initialization failed") from e


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("lose", [_kill_self_in_finalizer, _signal_becomes_another_error])
@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_a_signal_is_never_lost(lose: Callable[[int], None], sig: int, code: int) -> None:
    """A signal whose exception Python swallowed (raised in a ``__del__``) or replaced (an import in progress)
    still ends the block with its own exit code, not exit 0 or an internal error (exit 70)."""
    from vssflow_cli.signals import Interrupted, interruptible

    def not_handled(signum: int, frame: object) -> None:  # instead of the default, which would kill pytest
        pass

    saved = signal.signal(sig, not_handled)
    try:
        before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        with pytest.raises(Interrupted) as e:
            with interruptible():
                lose(sig)
        assert e.value.signum == sig and e.value.exit_code == code
        assert {s: signal.getsignal(s) for s in before} == before
    finally:
        signal.signal(sig, saved)


# --------------------------------------------------------------------------- memory on a 1-hour video


@pytest.mark.slow
def test_one_hour_video_streams_in_bounded_memory(tmp_path: Path, cli_env: dict) -> None:
    """Decode + visual features of a 1-hour video: peak RSS grows only by the (small) features.

    Peak RSS is VmHWM of the child's own address space (ru_maxrss survives fork+exec on Linux and
    would report pytest's size).
    """
    hour = make_clip(tmp_path / "hour.mp4", 3600, size="64x48", audio=False,
                     video_args=("-c:v", "libx264", "-preset", "ultrafast", "-crf", "40", "-g", "250"))  # fmt: skip
    minute = make_clip(tmp_path / "minute.mp4", 60, size="64x48", audio=False,
                       video_args=("-c:v", "libx264", "-preset", "ultrafast", "-crf", "40", "-g", "250"))  # fmt: skip
    code = (
        "import json, resource, sys, time\n"
        "from pathlib import Path\n"
        "from vssflow_cli import pipeline\n"
        "from vssflow_cli.media import probe\n"
        "p = Path(sys.argv[1]); info = probe(p); clock = pipeline._Clock(); t = time.perf_counter()\n"
        "v, s = pipeline.visual_features(p, info, clock, lambda *a: None)\n"
        "hwm = [ln for ln in open('/proc/self/status') if ln.startswith('VmHWM')][0].split()[1]\n"
        "print(json.dumps({'frames': len(v), 'feature_mb': (v.nbytes + s.nbytes) / 2**20,\n"
        "  'seconds': time.perf_counter() - t, 'stages': clock.stages, 'rss_mb': int(hwm) / 1024,\n"
        "  'ffmpeg_rss_mb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))\n"
    )
    res = {}
    for name, path in (("minute", minute), ("hour", hour)):
        r = subprocess.run([sys.executable, "-c", code, str(path)], env=cli_env, capture_output=True, text=True,
                           cwd=REPO, timeout=900)  # fmt: skip
        assert r.returncode == 0, r.stderr
        res[name] = json.loads(r.stdout)
    print(f"1-hour video: {res['hour']}\n1-minute video: {res['minute']}")
    assert res["hour"]["frames"] == 90000
    frames_mb = 90000 * 64 * 64 * 3 / 2**20  # what holding the decoded frames would cost: 1055 MB
    growth = res["hour"]["rss_mb"] - res["minute"]["rss_mb"]
    assert growth < res["hour"]["feature_mb"] + 40, res  # only the features grow with length
    assert res["hour"]["rss_mb"] < 400 < frames_mb
    assert res["hour"]["ffmpeg_rss_mb"] < 200
