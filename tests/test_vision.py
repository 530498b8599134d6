"""Visual features, face landmarks and lip tracking on a real photo (skimage's astronaut, public domain)."""

from __future__ import annotations

import numpy as np
import pytest

from vssflow_cli.config import tiny_config
from vssflow_cli.errors import InputError
from vssflow_cli.vision import (
    FEATURE_FPS,
    VIS_SIZE,
    VisualFeatureStream,
    motion_spans,
    resize_frames,
    sample_bilinear,
    visual_features,
)

skimage_data = pytest.importorskip("skimage.data")

N_TALK = 75  # 3 s at 25 fps
OUT_HW = (256, 256)


# --------------------------------------------------------------------------- visual features


def _moving_square(n: int, start: int) -> np.ndarray:
    """Grey frames; a white 12x12 square sits still, then moves right from frame ``start``."""
    frames = np.full((n, VIS_SIZE, VIS_SIZE, 3), 90, np.uint8)
    for i in range(n):
        x = 4 + max(0, i - start) * 3
        frames[i, 2:14, x : x + 12] = 255
    return frames


def test_feature_dims_match_the_tiny_config():
    cfg = tiny_config()
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (7, VIS_SIZE, VIS_SIZE, 3), dtype=np.uint8)
    video, sync = visual_features(frames)
    assert video.shape == (7, cfg.video_dim) and video.dtype == np.float32
    assert sync.shape == (7, cfg.sync_dim) and sync.dtype == np.float32
    assert FEATURE_FPS == cfg.latent_fps


def test_chunked_equals_whole_and_is_deterministic():
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (40, VIS_SIZE, VIS_SIZE, 3), dtype=np.uint8)
    v_all, s_all = VisualFeatureStream().push(frames)
    stream = VisualFeatureStream()
    parts = [stream.push(frames[a:b]) for a, b in ((0, 1), (1, 13), (13, 13), (13, 40))]
    np.testing.assert_array_equal(np.concatenate([p[0] for p in parts]), v_all)
    np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), s_all)
    v2, s2 = visual_features(frames)
    np.testing.assert_array_equal(v2, v_all)
    np.testing.assert_array_equal(s2, s_all)


def test_motion_is_local_and_onset_marks_its_start():
    frames = _moving_square(20, start=10)
    video, sync = visual_features(frames)
    motion = sync[:, :16].reshape(-1, 4, 4)
    assert np.all(sync[0] == 0)  # first frame: no motion
    assert np.all(sync[1:10] == 0)  # still square: no motion at all
    moving = motion[11:15]
    assert np.all(moving[:, 0, :].max(axis=1) > 0.3)  # the square's row of cells moves
    assert np.all(moving[:, 1:, :] == 0)  # other rows don't
    np.testing.assert_array_equal(video[:, 192:], sync[:, :16])
    onset = sync[:, 17]
    assert onset[11] > 0.05 and onset.argmax() in (11, 12)
    assert np.all(onset >= 0)
    # appearance: roughly zero-mean, unit-scale constants (grey 90 -> (90/255 - 0.5) / 0.25)
    assert abs(video[0, 191] - (90 / 255 - 0.5) / 0.25) < 1e-5


def test_motion_spans_open_where_something_moves_and_ring_on():
    rng = np.random.default_rng(0)
    frames = _moving_square(60, start=30)[:40]  # still for 30 frames, then 10 frames of motion
    noisy = np.clip(frames.astype(np.int16) + rng.integers(-3, 4, frames.shape), 0, 255).astype(np.uint8)
    _, sync = visual_features(noisy)  # sensor noise of +-3 levels is not motion
    spans = motion_spans(sync)
    assert len(spans) == 1
    s, e = spans[0]
    assert s == pytest.approx(31 / FEATURE_FPS - 0.2) and e == pytest.approx(40 / FEATURE_FPS + 1.0)
    _, still = visual_features(noisy[:30])
    assert motion_spans(still) == []
    assert motion_spans(np.zeros((0, 18), np.float32)) == []


def test_scene_cut_saturates_near_one():
    frames = np.zeros((2, VIS_SIZE, VIS_SIZE, 3), np.uint8)
    frames[1] = 255
    _, sync = visual_features(frames)
    assert sync[1, 16] == pytest.approx(1.0, abs=1e-5) and sync[1, 17] == pytest.approx(1.0, abs=1e-5)


def test_resize_frames_area_average():
    rng = np.random.default_rng(2)
    frames = rng.integers(0, 256, (2, 128, 128, 3), dtype=np.uint8)
    small = resize_frames(frames)
    block = frames.reshape(2, 64, 2, 64, 2, 3).astype(np.float64).mean(axis=(2, 4))
    np.testing.assert_array_equal(small, np.rint(block).astype(np.uint8))
    wide = np.full((1, 360, 640, 3), 77, np.uint8)
    assert np.all(resize_frames(wide) == 77) and resize_frames(wide).shape == (1, 64, 64, 3)
    video, _ = visual_features(wide)  # any size is resized first
    assert video.shape == (1, 208)


def test_sample_bilinear_interpolates_and_clamps():
    img = np.array([[0.0, 10.0], [20.0, 30.0]], np.float32)
    out = sample_bilinear(img, np.array([0.5, -3.0, 1.0]), np.array([0.5, 0.0, 5.0]))
    np.testing.assert_allclose(out, [15.0, 0.0, 30.0])


# --------------------------------------------------------------------------- landmarks (real model, real photo)


@pytest.fixture(scope="module")
def astronaut():
    return skimage_data.astronaut()


@pytest.fixture(scope="module")
def astronaut_landmarks(astronaut):
    from vssflow_cli.lips import face_landmarks

    return face_landmarks(astronaut)


def test_landmarks_on_a_real_face(astronaut, astronaut_landmarks):
    from vssflow_cli.lips import lip_geometry

    pts = astronaut_landmarks
    assert pts is not None and pts.shape[0] in (468, 478)
    g = lip_geometry(pts, astronaut.shape[:2])
    # The astronaut's mouth is at about (224, 145) in the 512x512 photo, her eyes ~60 px apart.
    assert 200 < g["mouth"][0] < 250 and 125 < g["mouth"][1] < 165
    assert 45 < g["iod"] < 80
    assert 0.5 < g["width"] < 1.0  # mouth width / inter-ocular distance
    assert 0.45 < g["dy"] < 0.9 and abs(g["dx"]) < 0.15  # mouth below the eye midpoint
    x0, y0, x1, y1 = pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max(), pts[:, 1].max()
    assert x0 < g["mouth"][0] < x1 and (y0 + y1) / 2 < g["mouth"][1] < y1


def test_no_face_in_a_photo_without_people():
    from vssflow_cli.lips import face_landmarks

    assert face_landmarks(skimage_data.coffee()) is None


# --------------------------------------------------------------------------- talking face tracking


def _apertures(n: int) -> np.ndarray:
    t = np.arange(n) / FEATURE_FPS
    return np.clip(0.5 + 0.5 * np.sin(2 * np.pi * 2.3 * t) * np.sin(2 * np.pi * 0.4 * t + 0.6), 0, 1)


def _translation_path(n: int, image_hw, out_hw) -> np.ndarray:
    """Affines image -> output: fit the photo, then drift 40 px right and 20 px down, zoom 1 -> 1.1."""
    (h, w), (oh, ow) = image_hw, out_hw
    base = min(oh / h, ow / w)
    mats = np.zeros((n, 2, 3))
    for i in range(n):
        f = i / (n - 1)
        s = base * (1 + 0.1 * f)
        mats[i] = [[s, 0, ow / 2 - s * w / 2 + 40 * f], [0, s, oh / 2 - s * h / 2 + 20 * f]]
    return mats


@pytest.fixture(scope="module")
def talking(astronaut, astronaut_landmarks):
    from vssflow_cli.train.render import render_talking_face

    ap = _apertures(N_TALK)
    mats = _translation_path(N_TALK, astronaut.shape[:2], OUT_HW)
    frames = render_talking_face(
        astronaut, ap, np.random.default_rng(0), out_size=OUT_HW, head_motion=mats, landmarks=astronaut_landmarks
    )
    return frames, ap, mats


@pytest.fixture(scope="module")
def tracked(talking):
    from vssflow_cli.lips import LipResult, LipTracker

    frames = talking[0]
    with LipTracker() as tracker:
        return LipResult.concat([tracker.push(frames[:31]), tracker.push(frames[31:])])


def test_render_talking_face_output(talking, astronaut, astronaut_landmarks):
    frames, ap, mats = talking
    assert frames.shape == (N_TALK, *OUT_HW, 3) and frames.dtype == np.uint8
    # The dark mouth opening below the lip seam (carried along by the head motion) grows with the aperture.
    seam = (astronaut_landmarks[13, :2] + astronaut_landmarks[14, :2]) / 2
    at = np.einsum("nij,j->ni", mats[:, :, :2], seam) + mats[:, :, 2]
    patches = [frames[i, int(y) - 2 : int(y) + 14, int(x) - 4 : int(x) + 5] for i, (x, y) in enumerate(at)]
    dark = np.array([(p.mean(axis=2) < 90).sum() for p in patches])
    assert np.corrcoef(dark, ap)[0, 1] > 0.9
    assert dark[ap < 0.1].mean() < 15 and dark[ap > 0.9].mean() > 50
    with pytest.raises(InputError, match="no face"):
        from vssflow_cli.train.render import render_talking_face

        render_talking_face(skimage_data.coffee(), ap[:2], np.random.default_rng(0))


def test_tracker_follows_the_face(tracked, talking, astronaut_landmarks):
    _, _, mats = talking
    assert tracked.present.all()
    centres = (tracked.boxes[:, :2] + tracked.boxes[:, 2:]) / 2
    face_centre = astronaut_landmarks[:, :2].mean(axis=0)
    expected = np.einsum("nij,j->ni", mats[:, :, :2], face_centre) + mats[:, :, 2]
    width = np.median(tracked.boxes[:, 2] - tracked.boxes[:, 0])
    err = np.linalg.norm(centres - expected, axis=1)
    assert err.max() < 0.15 * width, err.max()
    assert centres[-1, 0] - centres[0, 0] > 30  # it moved right with the face


def test_aperture_feature_follows_the_drawn_mouth(tracked, talking):
    _, ap, _ = talking
    f = tracked.features
    assert f.shape == (N_TALK, 8) and f.dtype == np.float32
    assert np.corrcoef(f[:, 1], ap)[0, 1] > 0.8  # inner aperture
    assert np.corrcoef(f[:, 2], ap)[0, 1] > 0.8  # outer aperture
    assert np.corrcoef(f[1:, 4], np.diff(ap))[0, 1] > 0.3  # velocity (noisier)
    assert np.all(f[:, 0] == 1.0)
    # the face grows by 10% over the clip: the scale feature rises
    assert f[-5:, 7].mean() > f[:5, 7].mean() * 1.04


def test_mouth_crops_are_stable_and_show_the_mouth(tracked, talking):
    crops = tracked.crops
    _, ap, _ = talking
    assert crops.shape == (N_TALK, 88, 88) and crops.dtype == np.uint8
    # the centre of the crop is darker when the mouth is open
    centre = crops[:, 34:54, 24:64].astype(np.float64).mean(axis=(1, 2))
    assert np.corrcoef(centre, ap)[0, 1] < -0.7


def test_chunking_does_not_change_the_track(talking, tracked):
    from vssflow_cli.lips import LipTracker

    with LipTracker() as tracker:
        whole = tracker.push(talking[0])
    np.testing.assert_array_equal(whole.features, tracked.features)
    np.testing.assert_array_equal(whole.crops, tracked.crops)


def test_lip_motion_spans_find_the_speech(astronaut, astronaut_landmarks):
    from vssflow_cli.lips import LipTracker, lip_motion_spans
    from vssflow_cli.train.render import render_talking_face

    n = 100  # closed 1 s, talking 2 s (frames 25..75), closed 1 s
    ap = np.zeros(n)
    ap[25:75] = 0.5 + 0.5 * np.sin(2 * np.pi * 3.0 * np.arange(50) / FEATURE_FPS - np.pi / 2)
    frames = render_talking_face(
        astronaut, ap, np.random.default_rng(3), out_size=(192, 192), head_motion=0.5, landmarks=astronaut_landmarks
    )
    with LipTracker() as tracker:
        res = tracker.push(frames)
    spans = lip_motion_spans(res.features, FEATURE_FPS)
    assert len(spans) == 1, spans
    start, end = spans[0]
    assert abs(start - 1.0) < 0.3 and abs(end - 3.0) < 0.3
    assert lip_motion_spans(np.zeros((50, 8), np.float32)) == []
    # a closed mouth on a moving head is not speech (landmark jitter stays under the threshold)
    still = render_talking_face(
        astronaut, np.zeros(n), np.random.default_rng(4), out_size=(192, 192), head_motion=1.5,
        landmarks=astronaut_landmarks,
    )
    with LipTracker() as tracker:
        assert lip_motion_spans(tracker.push(still).features, FEATURE_FPS) == []


def test_require_face(tracked):
    from vssflow_cli.lips import LipTracker, require_face

    require_face(tracked, 0.5)
    coffee = np.repeat(skimage_data.coffee()[None, ::2, ::2], 4, axis=0)
    with LipTracker() as tracker:
        res = tracker.push(coffee)
    assert not res.present.any() and np.all(res.features == 0) and np.all(res.crops == 0)
    with pytest.raises(InputError) as e:
        require_face(res, 0.2, video="clip.mp4")
    msg = str(e.value)
    assert "no face found in clip.mp4" in msg and "vssflow foley" in msg and "\n" not in msg
    half = np.concatenate([np.ones(10, bool), np.zeros(90, bool)])
    with pytest.raises(InputError, match="only 10%"):
        require_face(half, 0.3)


def test_small_faces_are_found_and_the_largest_face_is_tracked(astronaut):
    from vssflow_cli.lips import LipTracker

    big = resize_frames(astronaut[None], 240)[0]  # face ~44 px wide
    small = resize_frames(astronaut[None], 130)[0]  # face ~24 px: 4% of a 640-wide frame
    frame = np.full((360, 640, 3), 120, np.uint8)
    frame[110:240, 500:630] = small
    with LipTracker() as tracker:
        alone = tracker.push(np.stack([frame] * 2))
    assert alone.present.all()  # only the tiled search finds a face this small
    assert 500 < alone.boxes[0, 0] and alone.boxes[0, 2] < 630
    frame[60:300, 40:280] = big
    with LipTracker() as tracker:
        both = tracker.push(np.stack([frame] * 3))
    assert both.present.all() and np.all(both.boxes[:, 2] < 280)  # the larger face, every frame
