"""Model bundles: a folder with ``manifest.json`` and the ONNX graphs the runtime needs.

Layout (format ``vssflow-bundle-1``)::

    <bundle>/manifest.json
    <bundle>/dit.onnx                  role "dit": velocity network (inputs x, t, conditions -> v)
    <bundle>/decoder.onnx              role "decoder": latent (B, T, C) -> logmel (B, 4T, n_mels)
    <bundle>/encoder.onnx              role "encoder" (models with a prior): logmel (B, 4T, n_mels) -> latent
    <bundle>/checkpoint.safetensors    role "checkpoint" (optional): torch weights for bench / fine-tuning

The manifest carries the full :class:`ModelConfig`, the phoneme vocabulary, the feature extractor
names, sampler defaults, licence, provenance, and ``files: {file name: {role, sha256, bytes,
required}}``, keyed by file name so the bundle can be checked with the manifest alone. Nothing here
imports torch or onnxruntime.

Where bundles come from: :mod:`vssflow_cli.models`; how they are made from a checkpoint:
:func:`vssflow_cli.export.export_bundle`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from vssflow_cli.config import ModelConfig, conditions, feature_ids
from vssflow_cli.errors import ModelError, OutputError
from vssflow_cli.output import copy_file, write_text

FORMAT = "vssflow-bundle-1"
MANIFEST = "manifest.json"
REQUIRED_ROLES = ("dit", "decoder")
INT8_ROLE = "dit-int8"  # optional dynamically quantized DiT, preferred on CPU
ENCODER_ROLE = "encoder"  # latent codec encoder, shipped by models with an acoustic prior (prior_dim > 0)
DEFAULT_LICENCE = "MIT (code) / weights: see weights/LICENSES.md"
MAX_STEPS = 1000  # the largest `--steps` a user may type


@dataclass(frozen=True)
class SamplerDefaults:
    solver: str = "midpoint"
    steps: int = 16
    cfg: float = 3.0
    # dubbing with an acoustic prior: start the ODE at this flow time from the prior's latents (0 = from noise);
    # see vssflow_cli.sampler.sample's warm start
    prior_start: float = 0.0
    # foley with a text prompt: the prompt's own guidance weight (vssflow_cli.sampler's two-weight guidance, one
    # more network branch); None = the prompt is guided with cfg like every other condition
    prompt_cfg: float | None = None

    def to_dict(self) -> dict[str, Any]:
        d = {"solver": self.solver, "steps": self.steps, "cfg": self.cfg, "prior_start": self.prior_start}
        return d | ({"prompt_cfg": self.prompt_cfg} if self.prompt_cfg is not None else {})


@dataclass(frozen=True)
class FileEntry:
    """One file of a bundle; ``path`` is relative to the bundle folder."""

    path: str
    sha256: str
    bytes: int
    required: bool = True


@dataclass(frozen=True)
class Manifest:
    """A parsed ``manifest.json``; ``root`` is the bundle folder it was read from."""

    root: Path
    name: str
    version: str
    config: ModelConfig
    files: Mapping[str, FileEntry]
    phoneme_vocab: tuple[str, ...]
    features: Mapping[str, str]
    sampler: SamplerDefaults
    licence: str
    created_from: str | None = None
    training: Mapping[str, Any] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)
    format: str = FORMAT

    def has(self, role: str) -> bool:
        """True if the bundle lists ``role`` and the file is present on disk."""
        entry = self.files.get(role)
        return entry is not None and (self.root / entry.path).is_file()

    def path(self, role: str) -> Path:
        """Absolute path of the file for ``role``; ModelError if the bundle has none."""
        if not self.has(role):
            raise ModelError(
                f"model bundle {self.root}: no {role!r} file "
                f"(has {', '.join(sorted(r for r in self.files if self.has(r)))}) — use a bundle that ships it"
            )
        return self.root / self.files[role].path

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "name": self.name,
            "version": self.version,
            "config": self.config.to_dict(),
            "files": {  # keyed by file name, so any tool can check a bundle with the manifest alone
                e.path: {"role": role, "sha256": e.sha256, "bytes": e.bytes, "required": e.required}
                for role, e in sorted(self.files.items())
            },
            "phoneme_vocab": list(self.phoneme_vocab),
            "features": dict(self.features),
            "sampler": self.sampler.to_dict(),
            "licence": self.licence,
            "created_from": self.created_from,
            "training": dict(self.training),
            "extra": dict(self.extra),
        }


# --------------------------------------------------------------------------- hashing

_HASH_CACHE: dict[tuple[str, int, int, int, int, int], str] = {}
_HASH_LOCK = threading.Lock()
_RACY_NS = 2_000_000_000
HASH_CACHE_FILE = "hashes.json"  # in $XDG_CACHE_HOME/vssflow (default ~/.cache/vssflow)
HASH_CACHE_MAX = 512  # entries kept on disk (one per file path; the most recently hashed win)
_disk_loaded = False


def hash_cache_path() -> Path:
    """Where verified digests persist across runs: ``$XDG_CACHE_HOME/vssflow/hashes.json``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "vssflow" / HASH_CACHE_FILE


def _stat_key(real: str, st: os.stat_result) -> tuple[str, int, int, int, int, int]:
    return (real, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)


def _read_disk_cache(path: Path) -> dict[str, dict[str, Any]]:
    """The on-disk entries {real path: {size, mtime_ns, ctime_ns, ino, dev, sha256}}; {} if absent or unreadable."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    entries = raw.get("files") if isinstance(raw, dict) and raw.get("version") == 1 else None
    return {k: v for k, v in entries.items() if isinstance(v, dict)} if isinstance(entries, dict) else {}


def _entry_key(real: str, e: dict[str, Any]) -> tuple[str, int, int, int, int, int] | None:
    try:
        key = (real, int(e["size"]), int(e["mtime_ns"]), int(e["ctime_ns"]), int(e["ino"]), int(e["dev"]))
        digest = str(e["sha256"])
    except (KeyError, TypeError, ValueError):
        return None
    return key if len(digest) == 64 else None


def _load_disk_cache() -> None:
    """Merge the on-disk entries into the in-memory cache, once per process."""
    global _disk_loaded
    if _disk_loaded:
        return
    _disk_loaded = True
    for real, e in _read_disk_cache(hash_cache_path()).items():
        key = _entry_key(real, e)
        if key is not None:
            _HASH_CACHE.setdefault(key, str(e["sha256"]))


def _save_to_disk(key: tuple[str, int, int, int, int, int], digest: str) -> None:
    """Add one digest to the on-disk cache (read, merge, atomic rewrite); any failure only costs a re-hash later."""
    path = hash_cache_path()
    real, size, mtime_ns, ctime_ns, ino, dev = key
    try:
        entries = _read_disk_cache(path)
        entries.pop(real, None)  # re-inserted last: the newest entries survive the cap
        entries[real] = {"size": size, "mtime_ns": mtime_ns, "ctime_ns": ctime_ns, "ino": ino, "dev": dev,
                         "sha256": digest}
        entries = {k: v for k, v in entries.items() if k == real or os.path.exists(k)}  # drop deleted files
        entries = dict(list(entries.items())[-HASH_CACHE_MAX:])
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text(path, json.dumps({"version": 1, "files": entries}, indent=0) + "\n")
    except (OSError, OutputError):  # a read-only or full cache folder must never fail a run
        return


def file_sha256(path: str | os.PathLike, *, cache: bool = True) -> str:
    """Hex sha256 of a file; digests of settled files are cached in memory and on disk.

    The cache (:func:`hash_cache_path`, one entry per real path) is keyed by the file's real path, size,
    mtime, ctime, inode and device, so a repeat run skips re-reading an unchanged 60 MB bundle. What that
    trusts: that content does not change while all of these stay the same. Rewriting a file in place moves
    its mtime and ctime; restoring the mtime afterwards (``touch -d``, ``os.utime``, ``cp -p``) still moves
    the ctime, which only the kernel sets; replacing the file (rename, copy) changes the inode. Not caught:
    changes that bypass the file system (raw writes to the block device, a clock set back, a rewrite plus
    mtime restore within one timestamp tick of a metadata change), and whoever can write the cache file
    itself (it is the user's own: such a user can replace the bundle too). The cache holds digests, not
    verdicts: :func:`verify_files` still compares each one with the manifest. Files modified within 2 s
    of now are never cached, since a second write in the same timestamp tick could keep (size, mtime)
    equal (git's "racy clean" rule). ``cache=False`` always reads the file.
    """
    real = os.path.realpath(path)  # HF cache snapshots are symlinks to blobs
    st = os.stat(real)
    key = _stat_key(real, st)
    if cache:
        with _HASH_LOCK:
            _load_disk_cache()
            hit = _HASH_CACHE.get(key)
        if hit is not None:
            return hit
    digest = _hash_file(real)
    if cache and time.time_ns() - st.st_mtime_ns > _RACY_NS:
        with _HASH_LOCK:
            _HASH_CACHE[key] = digest
            _save_to_disk(key, digest)
    return digest


def _hash_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fix_hint(name: str) -> str:
    return f"re-download with `vssflow models pull {name}` or re-export"


def verify_files(manifest: Manifest, pull_name: str | None = None) -> None:
    """Check presence, size and sha256 of every file listed in the manifest (optional ones if present).

    ``pull_name``: what the error tells the user to pull (default: the manifest's name).
    """
    hint = _fix_hint(pull_name or manifest.name)
    for role, entry in sorted(manifest.files.items()):
        p = manifest.root / entry.path
        if not p.is_file():
            if not entry.required:
                continue
            raise ModelError(f"model bundle {manifest.root}: missing {entry.path} ({role}) — {hint}")
        size = p.stat().st_size
        if size != entry.bytes or file_sha256(p) != entry.sha256:
            raise ModelError(
                f"model bundle {manifest.root}: sha256 mismatch for {entry.path} — {hint}"
            )


# --------------------------------------------------------------------------- reading

def bundle_dir(path: str | os.PathLike) -> Path:
    """The bundle folder of a folder or ``manifest.json`` path."""
    p = Path(path).expanduser()
    return p.parent if p.name == MANIFEST else p


def load_manifest(path: str | os.PathLike, verify: bool = True) -> Manifest:
    """Read ``<path>/manifest.json`` (or the manifest file itself); verify files' sha256 if asked.

    Raises ModelError (one line naming the file and the fix) on a missing/invalid manifest,
    an unsupported format, a value out of its sane range (:func:`check_ranges`), a missing required
    file, a hash mismatch, or (when verifying) graph inputs that disagree with the config (:func:`check_graphs`).
    """
    root = bundle_dir(path).resolve()
    mpath = root / MANIFEST
    if not mpath.is_file():
        raise ModelError(
            f"model bundle {root}: no {MANIFEST} — pass a bundle folder made by `vssflow export` "
            "or a model name from `vssflow models list`"
        )
    try:
        raw = json.loads(mpath.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelError(f"model bundle {root}: unreadable {MANIFEST} ({e}) — {_fix_hint(root.name)}") from e
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        fmt = raw.get("format") if isinstance(raw, dict) else None
        raise ModelError(
            f"model bundle {root}: format {fmt!r} is not {FORMAT!r} — upgrade vssflow or re-export the bundle"
        )
    try:
        name = str(raw.get("name") or root.name)
        manifest = Manifest(
            root=root,
            name=name,
            version=str(raw.get("version", "")),
            config=ModelConfig.from_dict(raw["config"]),
            files={
                str(e["role"]): FileEntry(str(path), str(e["sha256"]), int(e["bytes"]), bool(e.get("required", True)))
                for path, e in raw["files"].items()
            },
            phoneme_vocab=tuple(str(s) for s in raw.get("phoneme_vocab", ())),
            features=dict(raw.get("features", {})),
            sampler=SamplerDefaults(**raw.get("sampler", {})),
            licence=str(raw.get("licence", "")),
            created_from=raw.get("created_from"),
            training=dict(raw.get("training") or {}),
            extra=dict(raw.get("extra") or {}),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ModelError(f"model bundle {root}: invalid {MANIFEST} ({e!r}) — re-export the bundle") from e
    for entry in manifest.files.values():
        if Path(entry.path).is_absolute() or ".." in Path(entry.path).parts:
            raise ModelError(f"model bundle {root}: file path {entry.path!r} leaves the bundle — re-export it")
    missing_roles = [r for r in REQUIRED_ROLES if r not in manifest.files]
    if missing_roles:
        raise ModelError(
            f"model bundle {root}: manifest lists no {', '.join(missing_roles)} graph — re-export the bundle"
        )
    check_ranges(manifest)
    if verify:
        verify_files(manifest)
        check_graphs(manifest)
    return manifest


# --------------------------------------------------------------------------- sanity of the manifest's values

_REFIX = "re-export the bundle or pull it again"
_DIM = (0, 1 << 16)  # a condition's width; 0 = the model has no such input
# dotted manifest field -> (low, high) inclusive; ints where both bounds are ints. Bounds that depend on another
# field are filled in by check_ranges (hop <= n_fft, frequencies <= Nyquist).
_RANGES: dict[str, tuple[float, float]] = {
    "config.latent_channels": (1, 4096),
    "config.window_frames": (1, 4096),  # 164 s at 25 latent frames / s
    "config.width": (1, 1 << 16), "config.depth": (1, 1024), "config.heads": (1, 1024),
    "config.ffn_hidden": (1, 1 << 18), "config.cross_dim": (1, 1 << 16),
    "config.video_dim": _DIM, "config.lip_dim": _DIM, "config.sync_dim": _DIM, "config.speaker_dim": _DIM,
    "config.prior_dim": _DIM, "config.phoneme_dim": _DIM, "config.phoneme_vocab": (1, 1 << 16),
    "config.cond_dropout": (0.0, 1.0), "config.prompt_tokens": (1, 1024),
    "config.audio.sample_rate": (1000, 384_000), "config.audio.n_fft": (16, 1 << 16),
    "config.audio.hop": (1, 1 << 16), "config.audio.n_mels": (1, 1024),
    "config.audio.fmin": (0.0, 192_000.0), "config.audio.fmax": (0.0, 192_000.0),
    "config.audio.mel_per_latent": (1, 64),
    "sampler.steps": (1, MAX_STEPS), "sampler.cfg": (0.0, 100.0), "sampler.prior_start": (0.0, 0.99),
    "sampler.prompt_cfg": (0.0, 100.0),
}  # fmt: skip


def _bad(m: Manifest, name: str, value: Any, why: str) -> ModelError:
    return ModelError(f"model bundle {m.root}: manifest field {name}={json.dumps(value)} {why} — {_REFIX}")


def check_ranges(manifest: Manifest) -> None:
    """ModelError naming the field unless every number of the config and the sampler defaults is of its
    type and in a sane range, and the solver is one the sampler knows (numbers only: no file is read)."""
    from vssflow_cli.sampler import SOLVERS

    c, a = manifest.config, manifest.config.audio
    values = {f"config.{k}": v for k, v in dataclasses.asdict(c).items() if k not in ("name", "audio", "prompt_words")}
    words = c.prompt_words
    if not all(isinstance(w, str) and w for w in words) or len(set(words)) != len(words):
        raise _bad(manifest, "config.prompt_words", list(words)[:8], "is not a list of distinct words")
    values |= {f"config.audio.{k}": v for k, v in dataclasses.asdict(a).items()}
    values |= {f"sampler.{k}": v for k, v in manifest.sampler.to_dict().items() if k != "solver"}
    ranges = dict(_RANGES)
    if isinstance(a.n_fft, int) and isinstance(a.sample_rate, int):
        ranges["config.audio.hop"] = (1, min(a.n_fft, ranges["config.audio.hop"][1]))
        ranges["config.audio.fmin"] = ranges["config.audio.fmax"] = (0.0, a.sample_rate / 2)
    for name, value in values.items():
        lo, hi = ranges[name]
        whole = isinstance(lo, int) and isinstance(hi, int)
        if isinstance(value, bool) or not isinstance(value, int if whole else (int, float)):
            raise _bad(manifest, name, value, f"is not {'an integer' if whole else 'a number'}")
        if not (math.isfinite(value) and lo <= value <= hi):
            raise _bad(manifest, name, value, f"is out of range {lo:g}..{hi:g}")
    if isinstance(a.fmin, (int, float)) and a.fmax <= a.fmin:
        raise _bad(manifest, "config.audio.fmax", a.fmax, f"is not above config.audio.fmin={a.fmin:g}")
    if manifest.sampler.solver not in SOLVERS:
        raise _bad(manifest, "sampler.solver", manifest.sampler.solver, f"is none of {', '.join(SOLVERS)}")


def _width_field(config: ModelConfig, width: Any) -> str:
    """The config field a condition's width is read from (found by changing each int field by one)."""
    for f in dataclasses.fields(config):
        v = getattr(config, f.name)
        if type(v) is int and width(dataclasses.replace(config, **{f.name: v + 1})) != width(config):
            return f"config.{f.name}"
    return "config"


def _expected_inputs(manifest: Manifest) -> dict[str, dict[str, tuple[tuple[int | None, ...], str, int]]]:
    """role -> graph input -> (shape, the manifest field it follows, its value); None = any size."""
    c = manifest.config
    dit = {"x": ((None, None, c.latent_channels), "config.latent_channels", c.latent_channels)}
    for cond in conditions(c):
        if cond.vocab is None:  # id tracks are (B, T): no width to match
            shape = tuple(None if d == -1 else d for d in cond.shape(c, -1, -1))
            dit[cond.name] = (shape, _width_field(c, cond.width), cond.width(c))
    return {
        "dit": dit,
        INT8_ROLE: dit,
        "decoder": {"latent": ((None, None, c.latent_channels), "config.latent_channels", c.latent_channels)},
        ENCODER_ROLE: {"logmel": ((None, None, c.audio.n_mels), "config.audio.n_mels", c.audio.n_mels)},
    }


def check_graphs(manifest: Manifest) -> None:
    """ModelError naming the manifest field unless the fixed sizes of the ONNX graphs' inputs agree with the
    config (x and the decoder's latent: latent_channels; each condition: its width; the encoder: n_mels).
    Inputs a graph lacks, and files that are no ONNX protobuf, are onnxruntime's to report; dynamic sizes
    (batch, frames) match anything."""
    for role, want in _expected_inputs(manifest).items():
        if not manifest.has(role) or manifest.files[role].path.rsplit(".", 1)[-1] != "onnx":
            continue
        path = manifest.path(role)
        try:
            have = onnx_inputs(path)
        except (OSError, ValueError, UnicodeDecodeError):
            continue
        for name, (shape, fieldname, value) in want.items():
            got = have.get(name)
            if got is None:
                continue
            fits = len(got) == len(shape) and all(g is None or w is None or g == w for g, w in zip(got, shape))
            if not fits:
                dims = ", ".join("?" if d is None else str(d) for d in got)
                raise _bad(manifest, fieldname, value, f"does not match {path.name} input {name} ({dims})")


# --------------------------------------------------------------------------- ONNX graph inputs without onnx

def _varint(f: IO[bytes]) -> int:
    out = shift = 0
    while True:
        b = f.read(1)
        if not b:
            raise ValueError("truncated protobuf")
        out |= (b[0] & 0x7F) << shift
        if b[0] < 0x80:
            return out
        shift += 7
        if shift > 63:
            raise ValueError("bad protobuf varint")


def _fields(f: IO[bytes], end: int) -> Iterator[tuple[int, int, int]]:
    """(field number, wire type, value) of each protobuf field up to offset ``end``. For length-delimited
    fields the value is the length and ``f`` stands at the payload, skipped when the loop goes on."""
    while f.tell() < end:
        key = _varint(f)
        number, wire = key >> 3, key & 7
        if wire == 0:
            yield number, wire, _varint(f)
        elif wire == 2:
            n = _varint(f)
            start = f.tell()
            yield number, wire, n
            f.seek(start + n)
        elif wire in (1, 5):
            f.seek(8 if wire == 1 else 4, os.SEEK_CUR)
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")


def _value_info(data: bytes) -> tuple[str, tuple[int | None, ...] | None]:
    """ValueInfoProto -> (name, tensor shape with None for symbolic dims; None if it has no shape)."""
    import io

    def sub(buf: bytes, want: int) -> list[bytes]:
        g = io.BytesIO(buf)
        return [g.read(n) for number, wire, n in _fields(g, len(buf)) if number == want and wire == 2]

    g = io.BytesIO(data)
    name = next((g.read(n).decode() for number, wire, n in _fields(g, len(data)) if number == 1 and wire == 2), "")
    shapes = [s for t in sub(data, 2) for tensor in sub(t, 1) for s in sub(tensor, 2)]  # type.tensor_type.shape
    if not shapes:
        return name, None
    dims: list[int | None] = []
    for dim in sub(shapes[0], 1):
        d = io.BytesIO(dim)
        value = next((v for number, wire, v in _fields(d, len(dim)) if number == 1 and wire == 0), None)
        dims.append(value if value is not None and 0 < value < 1 << 62 else None)
    return name, tuple(dims)


def onnx_inputs(path: str | os.PathLike) -> dict[str, tuple[int | None, ...]]:
    """Input name -> shape (None for symbolic dims) of an ONNX model file, read from its protobuf directly
    (ModelProto.graph = 7, GraphProto.input = 11), seeking past nodes and weights: no onnx import needed."""
    out: dict[str, tuple[int | None, ...]] = {}
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        for number, wire, n in _fields(f, size):
            if number == 7 and wire == 2:
                for gnum, gwire, m in _fields(f, f.tell() + n):
                    if gnum == 11 and gwire == 2:
                        name, shape = _value_info(f.read(m))
                        if shape is not None:
                            out[name] = shape
                return out
    raise ValueError("no graph in the file")


# --------------------------------------------------------------------------- writing

def _external_data_files(onnx_path: Path) -> list[str]:
    """Names of the external-data files an ONNX graph refers to (relative to its folder)."""
    try:
        import onnx
    except ImportError:  # inference-only install: fall back to the exporters' naming convention
        sib = onnx_path.with_name(onnx_path.name + ".data")
        return [sib.name] if sib.is_file() else []
    model = onnx.load(str(onnx_path), load_external_data=False)
    names: set[str] = set()
    for init in model.graph.initializer:
        if init.data_location == onnx.TensorProto.EXTERNAL:
            for kv in init.external_data:
                if kv.key == "location":
                    names.add(kv.value)
    return sorted(names)


def write_bundle(
    out_dir: str | os.PathLike,
    *,
    config: ModelConfig,
    files: Mapping[str, str | os.PathLike],
    phoneme_vocab: list[str] | tuple[str, ...],
    sampler: SamplerDefaults | Mapping[str, Any] | None = None,
    licence: str = DEFAULT_LICENCE,
    extra_meta: Mapping[str, Any] | None = None,
    name: str | None = None,
    version: str | None = None,
    features: Mapping[str, str] | None = None,
    created_from: str | None = None,
    training: Mapping[str, Any] | None = None,
    optional_roles: tuple[str, ...] = ("checkpoint",),
) -> Path:
    """Copy graphs into ``out_dir``, hash them, and write ``manifest.json`` last (atomically).

    files: role -> source file. Roles "dit" and "decoder" are required; each file is stored as
    ``<role><suffix>`` (e.g. ``dit.onnx``), and external-data files an ONNX graph refers to are
    copied beside it under their own names (role ``<role>.data``). Roles in ``optional_roles``
    are marked ``required: false`` (a Hub pull for inference may skip them).
    Returns the bundle folder.
    """
    missing = [r for r in REQUIRED_ROLES if r not in files]
    if missing:
        raise ValueError(f"write_bundle needs files for roles {missing}")
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    # While files are replaced the folder is no valid bundle: no manifest until the new one lands.
    (out / MANIFEST).unlink(missing_ok=True)
    entries: dict[str, FileEntry] = {}
    used: dict[str, str] = {}

    def add(role: str, src: Path, dst_name: str) -> None:
        if not src.is_file():
            raise FileNotFoundError(f"bundle file for role {role!r} not found: {src}")
        if dst_name in used:
            raise ValueError(f"roles {used[dst_name]!r} and {role!r} both map to {dst_name}")
        used[dst_name] = role
        dst = out / dst_name
        copy_file(src, dst)
        base = role.split(".")[0]
        entries[role] = FileEntry(dst_name, file_sha256(dst), dst.stat().st_size, base not in optional_roles)

    for role, src in files.items():
        src = Path(src)
        add(role, src, f"{role}{''.join(src.suffixes[-1:])}")
        if src.suffix == ".onnx":
            for i, data in enumerate(_external_data_files(src)):
                add(f"{role}.data" + (f"{i}" if i else ""), src.parent / data, data)

    manifest = Manifest(
        root=out.resolve(),
        name=name or out.resolve().name,
        version=version or _package_version(),
        config=config,
        files=entries,
        phoneme_vocab=tuple(phoneme_vocab),
        features=dict(features or feature_ids(config)),
        sampler=sampler if isinstance(sampler, SamplerDefaults) else SamplerDefaults(**(sampler or {})),
        licence=licence,
        created_from=created_from,
        training=dict(training or {}),
        extra=dict(extra_meta or {}),
    )
    write_text(out / MANIFEST, json.dumps(manifest.to_dict(), indent=2, sort_keys=False) + "\n")
    return out


def _package_version() -> str:
    from vssflow_cli import __version__

    return __version__


