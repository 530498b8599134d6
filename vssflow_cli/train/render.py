"""Videos rendered for corpus clips, so that what is visible carries the sound's timing.

Sound clips: a background texture and an object, both seeded by the clip's CATEGORY (a category always looks
alike), a gently drifting camera, and at each onset the object finishes a fast drop, squashes on impact, flashes
and throws a ring, all decaying over ~120 ms; between impacts it rises again. Sustained energy (ambience,
machines) makes the object vibrate, swell (up to +25%) and glow in proportion to the loudness envelope (dB over a
40 dB range, so a steady hum is as visible as a loud one). Tux Paint stamp sounds use
the stamp's own picture as the object.

Speech clips: a real face photo whose mouth aperture follows the speech envelope (:func:`render_talking_face`),
then a per-clip affine/brightness variation and slow head motion, seeded by the clip id.

Frame ``k`` shows the state at the END of its 40 ms interval ``[k/25, (k+1)/25)``: an onset at ``o`` is visible
first in frame ``floor(o * 25)``, the latent frame whose audio contains it.
"""

from __future__ import annotations

import colorsys
import hashlib
from pathlib import Path

import numpy as np

from vssflow_cli.errors import InputError
from vssflow_cli.lips import (
    CHIN,
    EYE_OUTER,
    LOWER_LIP_LINE,
    MOUTH_CORNERS,
    UPPER_LIP_LINE,
    face_landmarks,
)
from vssflow_cli.train.onsets import energy_envelope
from vssflow_cli.vision import FEATURE_FPS, sample_bilinear

FPS = 25
SOUND_SIZE = 128
SPEECH_SIZE = 256
FALL_S = 0.12  # duration of the drop before an impact
FLASH_TAU = 0.045  # flash decay: exp(-0.12 / 0.045) ~ 7% left after 120 ms
SQUASH_TAU = 0.05
RING_S = 0.16


def stable_seed(*parts: str) -> int:
    """A 63-bit seed from strings (sha1; independent of PYTHONHASHSEED)."""
    return int.from_bytes(hashlib.sha1("|".join(parts).encode("utf-8")).digest()[:8], "little") >> 1


def frame_times(n_frames: int, fps: float = FPS) -> np.ndarray:
    """Times the frames depict: the end of each frame's interval (n,) float64."""
    return (np.arange(n_frames) + 1.0) / fps - 1e-6


# ------------------------------------------------------------------------------------------- scene pieces


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), np.float32)


def category_texture(category: str, size: int) -> np.ndarray:
    """Procedural background (size, size, 3) float32 in [0, 1], a pure function of ``category``."""
    rng = np.random.default_rng(stable_seed("texture", category))
    hue = rng.random()
    c0 = _hsv(hue, rng.uniform(0.25, 0.7), rng.uniform(0.25, 0.55))
    c1 = _hsv(hue + rng.uniform(-0.15, 0.15), rng.uniform(0.2, 0.6), rng.uniform(0.5, 0.85))
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    kind = rng.integers(5)
    if kind == 0:  # soft noise: a few random plane waves
        m = np.zeros((size, size), np.float32)
        for _ in range(6):
            th, f, ph = rng.uniform(0, np.pi), rng.uniform(1, 5), rng.uniform(0, 2 * np.pi)
            m += np.sin(2 * np.pi * f * (x * np.cos(th) + y * np.sin(th)) + ph)
        m = 0.5 + m / 8
    elif kind == 1:  # stripes
        th, f = rng.uniform(0, np.pi), rng.uniform(3, 9)
        m = 0.5 + 0.5 * np.sin(2 * np.pi * f * (x * np.cos(th) + y * np.sin(th)))
    elif kind == 2:  # checker
        f = rng.integers(3, 8)
        m = ((np.floor(x * f) + np.floor(y * f)) % 2).astype(np.float32) * 0.8 + 0.1
    elif kind == 3:  # rings
        cx, cy, f = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(3, 8)
        m = 0.5 + 0.5 * np.sin(2 * np.pi * f * np.hypot(x - cx, y - cy))
    else:  # vertical gradient with a horizon (floor + wall)
        hz = rng.uniform(0.45, 0.65)
        m = np.where(y > hz, 0.8 - 0.3 * (y - hz), 0.2 + 0.2 * y).astype(np.float32)
    grain = rng.normal(0, 0.03, (size, size, 1)).astype(np.float32)
    img = c0 * (1 - m[..., None]) + c1 * m[..., None] + grain
    return np.clip(img, 0, 1).astype(np.float32)


_SHAPES = ("disc", "square", "triangle", "diamond", "ring", "star", "capsule")


def category_sprite(category: str, size: int) -> np.ndarray:
    """Antialiased shape (size + 4, size + 4, 4) RGBA float32, shape and colour seeded by ``category``.

    A 2-pixel transparent border keeps bilinear sampling outside the shape transparent.
    """
    rng = np.random.default_rng(stable_seed("sprite", category))
    shape = _SHAPES[rng.integers(len(_SHAPES))]
    colour = _hsv(rng.random(), rng.uniform(0.6, 1.0), rng.uniform(0.75, 1.0))
    n = size + 4
    y, x = (np.mgrid[0:n, 0:n].astype(np.float32) + 0.5 - n / 2) / (size / 2)  # [-1, 1] over the shape
    r, ang = np.hypot(x, y), np.arctan2(y, x)
    if shape == "disc":
        d = r - 0.95
    elif shape == "square":
        d = np.maximum(np.abs(x), np.abs(y)) - 0.85
    elif shape == "triangle":
        d = np.maximum(y - 0.8, (np.abs(x) - (y + 0.9) * 0.55) * 0.85)  # apex up
    elif shape == "diamond":
        d = (np.abs(x) + np.abs(y)) / 1.2 - 0.85
    elif shape == "ring":
        d = np.abs(r - 0.7) - 0.25
    elif shape == "star":
        d = r - (0.6 + 0.35 * np.cos(5 * ang))
    else:
        d = np.hypot(np.maximum(np.abs(x) - 0.45, 0), y) - 0.5
    alpha = np.clip(0.5 - d * size / 2, 0, 1)
    shade = 0.75 + 0.25 * np.clip(-y, -1, 1)  # lit from above
    rgb = np.clip(colour * shade[..., None], 0, 1)
    return np.concatenate([rgb, alpha[..., None]], axis=-1).astype(np.float32)


def load_sprite(path: Path, size: int) -> np.ndarray:
    """A picture with transparency (Tux Paint stamp) fitted into (size + 4)^2 RGBA float32, centred."""
    from PIL import Image

    im = Image.open(path).convert("RGBA")
    im.thumbnail((size, size), Image.LANCZOS)
    canvas = Image.new("RGBA", (size + 4, size + 4), (0, 0, 0, 0))
    canvas.paste(im, ((size + 4 - im.width) // 2, (size + 4 - im.height) // 2))
    arr = np.asarray(canvas, np.float32) / 255.0
    if arr[..., 3].max() < 0.01:  # fully transparent picture: fall back to opaque
        arr[..., 3] = 1.0
    return arr


# ------------------------------------------------------------------------------------------- motion


def impact_state(t: np.ndarray, onsets: np.ndarray, strengths: np.ndarray, lift: float) -> dict[str, np.ndarray]:
    """Per-frame object state from onsets: height (px above ground), squash, flash, ring age.

    ``t`` (n,) frame times; ``onsets``/``strengths`` (K,). Before an impact the object falls over ``FALL_S``
    (shorter if impacts are closer) from a height that scales with the gap to the previous impact; after it
    the object squashes/flashes and, if another impact follows, rises again.
    """
    n = len(t)
    height = np.zeros(n, np.float32)
    since = np.full(n, np.inf, np.float32)  # time since the last impact
    amp = np.zeros(n, np.float32)  # strength of the last impact
    for i, ti in enumerate(t):
        k = int(np.searchsorted(onsets, ti, side="right"))  # onsets[:k] <= ti
        if k > 0:
            since[i] = ti - onsets[k - 1]
            amp[i] = strengths[k - 1]
        if k >= len(onsets):
            continue  # no further impact: rests on the ground
        nxt = onsets[k]
        prev = onsets[k - 1] if k > 0 else -np.inf
        gap = nxt - prev
        fall = min(FALL_S, 0.6 * gap)
        top = lift * float(np.clip(gap / 0.5, 0.2, 1.0))
        if ti >= nxt - fall:
            u = (ti - (nxt - fall)) / fall
            height[i] = top * (1 - u * u)
        elif k == 0:
            height[i] = top
        else:
            rise_start = prev + min(0.1, 0.3 * gap)
            u = np.clip((ti - rise_start) / max(1e-3, nxt - fall - rise_start), 0, 1)
            height[i] = top * (1 - (1 - u) ** 2)
    flash = amp * np.exp(-since / FLASH_TAU)
    squash = amp * np.exp(-since / SQUASH_TAU)
    return {
        "height": height,
        "since": since,
        "amp": amp,
        "flash": flash.astype(np.float32),
        "squash": squash.astype(np.float32),
    }


def envelope_level(wave: np.ndarray, sr: int, n_frames: int, range_db: float = 40.0) -> np.ndarray:
    """Per-frame loudness in [0, 1]: RMS in dB relative to the clip's peak frame, over ``range_db``."""
    env = energy_envelope(wave, sr, FPS)
    env = np.pad(env, (0, max(0, n_frames - len(env))))[:n_frames]
    if env.max() <= 0:
        return np.zeros(n_frames, np.float32)
    db = 20 * np.log10(env / env.max() + 1e-9)
    return np.clip(1 + db / range_db, 0, 1).astype(np.float32)


def onset_strengths(wave: np.ndarray, sr: int, onsets: np.ndarray) -> np.ndarray:
    """Strength in [0.35, 1] of each onset from the loudness just after it (relative to the clip peak)."""
    if len(onsets) == 0:
        return np.zeros(0, np.float32)
    env = energy_envelope(wave, sr, 100)
    peak = env.max() + 1e-9
    out = []
    for o in onsets:
        i = int(o * 100)
        level = env[i : i + 6].max() if i < len(env) else 0.0
        out.append(np.clip(1 + 20 * np.log10(level / peak + 1e-9) / 30, 0.35, 1.0))
    return np.asarray(out, np.float32)


# ------------------------------------------------------------------------------------------- sound video


def render_sound_video(
    wave: np.ndarray,
    sr: int,
    onsets: np.ndarray,
    category: str,
    n_frames: int,
    clip_seed: int,
    sprite_image: Path | None = None,
    size: int = SOUND_SIZE,
) -> np.ndarray:
    """Frames (n_frames, size, size, 3) uint8 showing the sound's events (see the module docstring)."""
    rng = np.random.default_rng(clip_seed)
    tex_size = int(size * 1.5)
    tex = category_texture(category, tex_size)
    obj = int(size * rng.uniform(0.24, 0.34))
    sprite = load_sprite(sprite_image, obj) if sprite_image is not None else category_sprite(category, obj)
    sh, sw = sprite.shape[:2]
    ground = size * rng.uniform(0.72, 0.86)
    base_x = size * rng.uniform(0.32, 0.68)
    lift = size * rng.uniform(0.3, 0.42)

    t = frame_times(n_frames)
    onsets = np.sort(np.asarray(onsets, np.float64))
    state = impact_state(t, onsets, onset_strengths(wave, sr, onsets), lift)
    level = envelope_level(wave, sr, n_frames)

    amps = rng.uniform(2, 6, 2) * size / 128
    freqs, phases = rng.uniform(0.05, 0.25, 3), rng.uniform(0, 2 * np.pi, 3)
    jitter = rng.normal(0, 1, (n_frames, 2)).astype(np.float32)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    out = np.empty((n_frames, size, size, 3), np.uint8)
    for k in range(n_frames):
        # camera: slow drift and zoom over the larger texture
        dx = amps[0] * np.sin(2 * np.pi * freqs[0] * t[k] + phases[0])
        dy = amps[1] * np.sin(2 * np.pi * freqs[1] * t[k] + phases[1])
        zoom = 1.0 + 0.03 * np.sin(2 * np.pi * freqs[2] * t[k] + phases[2])
        cx0 = tex_size / 2 + dx
        cy0 = tex_size / 2 + dy
        frame = sample_bilinear(tex, cx0 + (xx - size / 2) / zoom, cy0 + (yy - size / 2) / zoom)
        frame *= 0.9 + 0.1 * level[k]

        # object: vibration with sustained energy, squash on impact, height from the drop schedule
        vib = level[k] * 2.5 * size / 128
        ox = base_x + vib * jitter[k, 0] - dx * 0.5
        bottom = ground - state["height"][k] + vib * 0.5 * jitter[k, 1] - dy * 0.5
        sq = float(state["squash"][k])
        sy = (1 - 0.35 * sq) * (1 + 0.25 * level[k])
        sx = (1 + 0.45 * sq) * (1 + 0.25 * level[k])

        # shadow: tighter and darker as the object gets closer to the ground
        hnorm = float(state["height"][k] / max(lift, 1e-3))
        shadow_r = obj * (0.55 - 0.2 * hnorm) * sx
        sd = ((xx - ox) / shadow_r) ** 2 + ((yy - ground - 2) / (shadow_r * 0.25)) ** 2
        frame *= 1 - (0.45 - 0.25 * hnorm) * np.clip(1.5 - sd, 0, 1)[..., None]

        u = (xx - ox) / sx + sw / 2
        v = (yy - bottom) / sy + sh - 2
        inside = (u > -1) & (u < sw) & (v > -1) & (v < sh)
        if inside.any():
            rgba = sample_bilinear(sprite, u[inside], v[inside])
            col = rgba[:, :3]
            glow = float(state["flash"][k]) + 0.3 * level[k]
            col = col + glow * (1 - col)
            a = rgba[:, 3:4]
            frame[inside] = frame[inside] * (1 - a) + col * a

        # ring thrown at the impact point
        age = float(state["since"][k])
        if age < RING_S:
            rad = obj * (0.4 + 2.2 * age / RING_S)
            ring_a = float(state["amp"][k]) * (1 - age / RING_S)
            dist = np.abs(np.hypot((xx - ox) / 1.0, (yy - ground) / 0.4) - rad)
            ring = np.clip(1.5 - dist / 1.5, 0, 1) * ring_a
            frame = frame + ring[..., None] * (1 - frame)

        frame = frame + 0.3 * float(state["flash"][k]) * (1 - frame)  # global flash
        out[k] = np.clip(frame * 255 + 0.5, 0, 255).astype(np.uint8)
    return out


# ------------------------------------------------------------------------------------------- speech video


def speech_apertures(
    wave: np.ndarray, sr: int, n_frames: int, lead_frames: int = 1, range_db: float = 30.0, gamma: float = 1.5
) -> np.ndarray:
    """Mouth aperture per frame (n_frames,) in [0, 1] from the speech RMS at 25 fps.

    dB relative to the 95th-percentile frame, mapped linearly over ``range_db`` and raised to ``gamma`` (so
    syllables open and consonants close the mouth visibly rather than saturating), smoothed with a
    [1, 2, 1] / 4 kernel, and led by ``lead_frames`` (the mouth opens before the sound comes out).
    """
    env = energy_envelope(wave, sr, FPS)
    env = np.pad(env, (0, max(0, n_frames - len(env))))[:n_frames]
    if not np.any(env > 0):
        return np.zeros(n_frames, np.float32)
    db = 20 * np.log10(env + 1e-9)
    ref = np.percentile(db[env > 0], 95)
    a = np.clip((db - (ref - range_db)) / range_db, 0, 1) ** gamma
    a = np.convolve(np.pad(a, 1, mode="edge"), [0.25, 0.5, 0.25], mode="valid")
    if lead_frames > 0:
        a = np.concatenate([a[lead_frames:], np.repeat(a[-1:], lead_frames)])
    return a.astype(np.float32)


def clip_variation(
    n_frames: int, clip_seed: int, image_hw: tuple[int, int], face_centre: np.ndarray, size: int = SPEECH_SIZE
) -> tuple[np.ndarray, float]:
    """Per-clip framing of the face photo: (n, 2, 3) affines image -> output pixels, and a brightness gain.

    The face (``face_centre``, image pixels) is zoomed 1.2-1.9x relative to fitting the whole photo, put near
    the frame centre (offset +-8%), rolled +-5 degrees, and the slow head motion of :func:`head_motion_path` is
    applied on top; all drawn from ``clip_seed``.
    """
    rng = np.random.default_rng(clip_seed)
    scale = rng.uniform(1.2, 1.9)
    off = rng.uniform(-0.08, 0.08, 2) * size
    rot = np.deg2rad(rng.uniform(-5, 5))
    bright = float(rng.uniform(0.8, 1.15))
    head = head_motion_path(n_frames, rng, image_hw, (size, size), 1.0, FPS)
    h, w = image_hw
    base = min(size / h, size / w)
    centre = np.array([size / 2, size / 2])
    face_out = centre + base * (np.asarray(face_centre, np.float64)[:2] - np.array([w / 2, h / 2]))
    c, s = np.cos(rot) * scale, np.sin(rot) * scale
    v = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    v[:2, 2] = centre + off - v[:2, :2] @ face_out  # the face to the centre, rotated and zoomed, then shifted
    full = np.concatenate([head, np.tile([[[0.0, 0.0, 1.0]]], (n_frames, 1, 1))], axis=1)
    return (v[None] @ full)[:, :2, :], bright


def render_speech_video(
    face: np.ndarray, landmarks: np.ndarray, apertures: np.ndarray, clip_seed: int, size: int = SPEECH_SIZE
) -> np.ndarray:
    """Talking-face frames (n, size, size, 3) uint8 whose mouth opens by ``apertures`` (n,) in [0, 1]."""
    face_centre = np.asarray(landmarks)[:, :2].mean(axis=0)
    mats, bright = clip_variation(len(apertures), clip_seed, face.shape[:2], face_centre, size)
    frames = render_talking_face(
        face, apertures, np.random.default_rng(clip_seed), out_size=(size, size), head_motion=mats, landmarks=landmarks
    )
    if bright != 1.0:
        frames = np.clip(frames.astype(np.float32) * bright + 0.5, 0, 255).astype(np.uint8)
    return frames


# --------------------------------------------------------------------------- synthetic talking faces


def _smooth_noise(n: int, rng: np.random.Generator, hz: tuple[float, float], fps: float) -> np.ndarray:
    """Sum of three random sinusoids in [-1, 1] with frequencies in ``hz``."""
    t = np.arange(n) / fps
    out = np.zeros(n)
    for _ in range(3):
        f = rng.uniform(*hz)
        out += np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
    return out / 3


def head_motion_path(
    n: int, rng: np.random.Generator, image_hw: tuple[int, int], out_hw: tuple[int, int],
    amount: float = 1.0, fps: float = FEATURE_FPS,
) -> np.ndarray:
    """Smooth random head motion: (n, 2, 3) affines mapping image pixels to output pixels.

    ``amount`` 1 = translation up to ~6% of the frame, scale +-5%, rotation +-3 degrees.
    """
    (h, w), (oh, ow) = image_hw, out_hw
    base = min(oh / h, ow / w)
    tx = amount * 0.06 * ow * _smooth_noise(n, rng, (0.1, 0.6), fps)
    ty = amount * 0.06 * oh * _smooth_noise(n, rng, (0.1, 0.6), fps)
    sc = base * (1 + amount * 0.05 * _smooth_noise(n, rng, (0.1, 0.4), fps))
    rot = np.deg2rad(amount * 3.0) * _smooth_noise(n, rng, (0.1, 0.5), fps)
    mats = np.zeros((n, 2, 3), np.float64)
    c, s = np.cos(rot) * sc, np.sin(rot) * sc
    cx, cy = w / 2, h / 2
    mats[:, 0, 0], mats[:, 0, 1] = c, -s
    mats[:, 1, 0], mats[:, 1, 1] = s, c
    mats[:, 0, 2] = ow / 2 + tx - (c * cx - s * cy)
    mats[:, 1, 2] = oh / 2 + ty - (s * cx + c * cy)
    return mats


def _soft(x: np.ndarray, px: float = 1.0) -> np.ndarray:
    """Anti-aliased step: 0 for x << 0, 1 for x >> 0, over ``px`` pixels."""
    return np.clip(0.5 + x / px, 0.0, 1.0)


INNER_UPPER_LINE = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
INNER_LOWER_LINE = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308)


def _inside_polygon(xs: np.ndarray, ys: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Even-odd point-in-polygon test for arrays of points; poly (k, 2)."""
    inside = np.zeros(xs.shape, bool)
    x0, y0 = poly[-1]
    for x1, y1 in poly:
        crosses = (y1 > ys) != (y0 > ys)
        with np.errstate(divide="ignore", invalid="ignore"):
            at = (x0 - x1) * (ys - y1) / (y0 - y1) + x1
        inside ^= crosses & (xs < at)
        x0, y0 = x1, y1
    return inside


class _MouthModel:
    """Geometry of the mouth on a still face, in the face frame (u along the eye line, v chin-wards).

    v is measured from the lip seam (the middle line between the inner lip contours), so the
    mouth follows the shape of a smile.
    """

    def __init__(self, image: np.ndarray, pts: np.ndarray):
        p = pts[:, :2].astype(np.float64)
        le, re = p[EYE_OUTER[0]], p[EYE_OUTER[1]]
        self.ex = (re - le) / np.linalg.norm(re - le)
        self.ey = np.array([-self.ex[1], self.ex[0]])
        self.centre = (p[13] + p[14]) / 2
        self.width = float(np.linalg.norm(p[MOUTH_CORNERS[1]] - p[MOUTH_CORNERS[0]]))
        upper, lower = p[list(INNER_UPPER_LINE)], p[list(INNER_LOWER_LINE)]
        su, sv = self._raw_local((upper[:, 0] + lower[:, 0]) / 2, (upper[:, 1] + lower[:, 1]) / 2)
        order = np.argsort(su)
        self.seam_u, self.seam_v = su[order], sv[order]
        self.inner_polygon = np.concatenate([upper, lower[::-1]])
        self.chin = float((p[CHIN] - self.centre) @ self.ey)
        lip_pts = np.array([p[i] for i in UPPER_LIP_LINE[2:-2] + LOWER_LIP_LINE[2:-2]])
        self.lip_colour = np.median(sample_bilinear(image, lip_pts[:, 0], lip_pts[:, 1]), axis=0)

    def _raw_local(self, xs, ys):
        dx, dy = xs - self.centre[0], ys - self.centre[1]
        return dx * self.ex[0] + dy * self.ex[1], dx * self.ey[0] + dy * self.ey[1]

    def local(self, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        u, v = self._raw_local(xs, ys)
        return u, v - np.interp(u, self.seam_u, self.seam_v)

    def closed_base(self, image: np.ndarray) -> np.ndarray:
        """The still image with its lips pressed together (so aperture 0 really is closed)."""
        h, w = image.shape[:2]
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
        # Fill the original opening (inner lip polygon, grown by ~1 px) with lip colour ...
        centre = self.inner_polygon.mean(axis=0)
        grown = centre + (self.inner_polygon - centre) * 1.06
        fill = _inside_polygon(xs, ys, grown).astype(np.float32)
        neighbours = sum(np.roll(fill, k, axis) for k in (1, -1) for axis in (0, 1))
        fill = 0.5 * fill + 0.125 * neighbours  # soften the polygon's edge
        shade = self.lip_colour * (0.9 + 0.1 * np.clip(np.abs(self._raw_local(xs, ys)[1]) / 4, 0, 1))[..., None]
        out = image.astype(np.float32) * (1 - fill[..., None]) + shade * fill[..., None]
        # ... then draw a soft dark seam where the lips meet.
        u, v = self.local(xs, ys)
        half = 0.5 * self.width
        along = np.clip((half - np.abs(u)) / (0.15 * half), 0, 1)
        seam = np.clip(1 - np.abs(v) / 1.3, 0, 1) * along
        return out * (1 - 0.5 * seam[..., None])

    def composite(self, base: np.ndarray, xs: np.ndarray, ys: np.ndarray, opening: float) -> np.ndarray:
        """Sample ``base`` at (xs, ys) with the jaw dropped by ``opening`` px and the mouth drawn open."""
        u, v = self.local(xs, ys)
        w = self.width
        # Jaw: everything below the seam between the jaw lines moves down by `opening`,
        # fading out sideways (cheeks) and below the chin (neck).
        side = np.clip((1.15 * w - np.abs(u)) / (0.55 * w), 0, 1)
        side = side * side * (3 - 2 * side)
        # Sharp at the lips, a soft stretch over the cheeks beside the mouth corners.
        ramp = 2.0 + np.clip(np.abs(u) - 0.4 * w, 0, None) * 0.8
        below = np.clip(v / ramp, 0, 1)
        below = below * below * (3 - 2 * below)
        neck = np.clip(1 - (v - (self.chin + 0.15 * w)) / (0.6 * w), 0, 1)
        shift = opening * side * below * neck
        out = sample_bilinear(base, xs - shift * self.ey[0], ys - shift * self.ey[1])
        if opening <= 0.3:
            return out
        # Mouth interior between the upper lip (lifted slightly) and the dropped lower lip.
        half = 0.47 * w
        s = np.sqrt(np.clip(1 - (u / half) ** 2, 0, None))
        top = -0.12 * opening * s
        bottom = opening * s + 1.5 * (s > 0.2)  # also hides the old seam, now on the lower lip
        inside = _soft(np.minimum(v - top, bottom - v)) * (s > 0)
        depth = np.clip(1 - np.abs(u) / half, 0, 1) * np.clip((v - top) / (opening + 1e-6), 0, 1)
        colour = np.array([75, 25, 30], np.float32) * (1 - 0.6 * depth[..., None])
        teeth_h = min(0.25 * opening, 0.09 * w)
        teeth = _soft(top + teeth_h - v) * _soft(0.75 * half - np.abs(u), 2.0)
        colour = colour * (1 - teeth[..., None]) + np.array([225, 218, 205], np.float32) * teeth[..., None]
        tongue = _soft(v - (bottom - 0.3 * opening), 2.0) * _soft(0.7 * half - np.abs(u), 3.0)
        tongue = 0.7 * tongue[..., None]
        colour = colour * (1 - tongue) + np.array([165, 72, 82], np.float32) * tongue
        return out * (1 - inside[..., None]) + colour * inside[..., None]


def render_talking_face(
    face_image: np.ndarray,
    apertures: np.ndarray,
    rng: np.random.Generator,
    out_size: tuple[int, int] | None = None,
    head_motion: float | np.ndarray = 1.0,
    landmarks: np.ndarray | None = None,
) -> np.ndarray:
    """Animate a still face photo: the mouth opens by ``apertures`` while the head moves.

    face_image: uint8 (H, W, 3) RGB with one visible face. apertures: (n,) in [0, 1], 0 = lips
    closed, 1 = wide open (jaw drop ~0.45 mouth widths). head_motion: an amount for
    :func:`head_motion_path` (0 = still) or explicit (n, 2, 3) affines image -> output pixels.
    out_size: (height, width), default the image size. Returns uint8 (n, h, w, 3).
    Raises InputError when no face is found in ``face_image`` (and no landmarks are given).
    """
    image = np.ascontiguousarray(face_image[..., :3], dtype=np.uint8)
    apertures = np.clip(np.asarray(apertures, np.float64), 0.0, 1.0)
    n = apertures.shape[0]
    pts = face_landmarks(image) if landmarks is None else np.asarray(landmarks)
    if pts is None:
        raise InputError("no face found in the image — use a photo with a clearly visible face")
    oh, ow = out_size or image.shape[:2]
    if isinstance(head_motion, np.ndarray):
        mats = np.asarray(head_motion, np.float64)
        if mats.shape != (n, 2, 3):
            raise ValueError(f"head_motion affines must be ({n}, 2, 3), got {mats.shape}")
    else:
        mats = head_motion_path(n, rng, image.shape[:2], (oh, ow), float(head_motion))
    mouth = _MouthModel(image, pts)
    base = mouth.closed_base(image)
    yy, xx = np.mgrid[0:oh, 0:ow].astype(np.float64)
    frames = np.empty((n, oh, ow, 3), np.uint8)
    max_open = 0.45 * mouth.width
    grain = rng.normal(0.0, 1.5, size=(n, 1, 1, 1)).astype(np.float32)  # slight exposure flicker
    for i in range(n):
        a, b = mats[i, :, :2], mats[i, :, 2]
        inv = np.linalg.inv(a)
        xs = inv[0, 0] * (xx - b[0]) + inv[0, 1] * (yy - b[1])
        ys = inv[1, 0] * (xx - b[0]) + inv[1, 1] * (yy - b[1])
        frame = mouth.composite(base, xs, ys, apertures[i] * max_open) + grain[i]
        frames[i] = np.clip(np.rint(frame), 0, 255).astype(np.uint8)
    return frames
