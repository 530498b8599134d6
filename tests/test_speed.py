"""The fast paths keep their meaning: lip tracking without crops, landmark reading, the face-mesh-only import,
the banded area resize, and dub's single decode."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO

from vssflow_cli import lips, media, pipeline
from vssflow_cli.vision import _area_matrix, resize_frames, visual_features


def dense_resize(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The reference: the full (h, H) and (w, W) area matrices applied to every frame."""
    my, mx = _area_matrix(frames.shape[1], size[0]), _area_matrix(frames.shape[2], size[1])
    out = np.tensordot(frames.astype(np.float64), mx.astype(np.float64), axes=([2], [1]))  # (n, H, c, w)
    out = np.tensordot(out, my.astype(np.float64), axes=([1], [1])).transpose(0, 3, 2, 1)  # (n, h, w, c)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("hw,size", [((360, 640), (64, 64)), ((240, 426), (64, 64)), ((144, 176), (64, 64)),
                                     ((61, 99), (64, 64)), ((64, 64), (8, 8)), ((50, 30), (50, 10))])
def test_banded_resize_is_the_area_average(hw, size) -> None:
    frames = np.random.default_rng(0).integers(0, 256, (20, *hw, 3), dtype=np.uint8)
    out = resize_frames(frames, size)  # 20 frames: more than one block of 16
    assert out.shape == (20, *size, 3) and out.dtype == np.uint8
    diff = np.abs(out.astype(int) - dense_resize(frames, size).astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01  # float32 rounding at .5 only


@pytest.fixture(scope="module")
def face_frames(face_clip: Path) -> np.ndarray:
    return np.concatenate(list(media.iter_frames(face_clip, fps=25, width=240, height=240)))[:40]


def test_tracking_without_crops_gives_the_same_track(face_frames: np.ndarray) -> None:
    with lips.LipTracker() as tracker:
        full = tracker.push(face_frames)
    with lips.LipTracker(crops=False) as tracker:
        lean = lips.LipResult.concat([tracker.push(face_frames[:15]), tracker.push(face_frames[15:])])
    assert full.present.all() and full.crops.shape == (40, 88, 88)
    assert lean.crops.shape == (40, 0, 0)
    np.testing.assert_array_equal(lean.features, full.features)
    np.testing.assert_array_equal(lean.boxes, full.boxes)


def test_landmarks_read_from_wire_bytes_equal_the_message_loop(face_frames: np.ndarray) -> None:
    from mediapipe.framework.formats import landmark_pb2

    mesh = lips._face_mesh(static=True, max_faces=1, refine=False)
    try:
        (face,) = mesh.process(face_frames[0]).multi_face_landmarks
    finally:
        mesh.close()
    loop = np.array([(p.x, p.y, p.z) for p in face.landmark], np.float32) * np.array([240, 240, 240], np.float32)
    np.testing.assert_array_equal(lips._to_pixels(face, 240, 240), loop)
    other = landmark_pb2.NormalizedLandmarkList()  # a zero coordinate, then a landmark with visibility: the loop
    other.landmark.add(x=0.0, y=0.5, z=-0.25)
    other.landmark.add(x=0.25, y=0.75, z=0.0, visibility=0.9)
    np.testing.assert_array_equal(lips._to_pixels(other, 4, 2), [[0, 1, -1], [1, 1.5, 0]])
    del other.landmark[1]
    np.testing.assert_array_equal(lips._to_pixels(other, 4, 2), [[0, 1, -1]])


def test_the_face_mesh_import_leaves_out_the_rest_of_mediapipe() -> None:
    code = """
import sys
from vssflow_cli import lips
fm = lips._import_face_mesh()
assert "matplotlib" not in sys.modules and "mediapipe.tasks" not in sys.modules, "pulled in the rest"
assert lips._import_face_mesh() is fm
import mediapipe as mp  # another user of mediapipe in the same process gets all of it
assert mp.solutions.face_mesh is fm and mp.__version__ and mp.tasks.BaseOptions and mp.Image
assert mp.solutions.drawing_utils and "matplotlib" in sys.modules
try:
    mp.no_such_thing
except AttributeError:
    print("ok")
"""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]


def test_dub_decodes_the_video_once(synth, face_clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, int]] = []
    real = media.iter_frames

    def counting(path, **kw):
        calls.append((kw["width"], kw["height"]))
        return real(path, **kw)

    monkeypatch.setattr(media, "iter_frames", counting)
    script = tmp_path / "s.txt"
    script.write_text("Hello there, this is a test.\n", encoding="utf-8")
    opts = pipeline.JobOptions(steps=1, overwrite=True, mix="replace", wav_only=True)
    res = pipeline.dub(face_clip, tmp_path / "d.wav", script, opts, synth)
    assert calls == [(240, 240)] and res.segments >= 1  # the lip frames serve the visual features too
    assert {"decode", "features", "sampling"} <= set(res.stages)


def test_visual_features_of_the_lip_frames_match_their_own_decode(face_clip: Path) -> None:
    info = media.probe(face_clip)
    clock = pipeline._Clock()
    lip, video, sync = pipeline.lip_features(face_clip, info, clock, lambda *a: None, with_visual=True)
    own_video, own_sync = pipeline.visual_features(face_clip, info, clock, lambda *a: None)
    assert video.shape == own_video.shape and sync.shape == own_sync.shape and len(lip) == len(video)
    # ffmpeg's area scaler (in YUV) against the exact RGB area average: appearance std is ~1 unit
    assert np.abs(video - own_video).mean() < 0.03 and np.abs(sync - own_sync).mean() < 0.01
    frames = np.concatenate(list(media.iter_frames(face_clip, fps=25, width=240, height=240)))
    np.testing.assert_allclose(video, visual_features(frames)[0], atol=1e-5)
