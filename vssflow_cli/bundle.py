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

import hashlib
import json
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vssflow_cli.config import ModelConfig, feature_ids
from vssflow_cli.errors import ModelError, OutputError
from vssflow_cli.output import copy_file, write_text

FORMAT = "vssflow-bundle-1"
MANIFEST = "manifest.json"
REQUIRED_ROLES = ("dit", "decoder")
INT8_ROLE = "dit-int8"  # optional dynamically quantized DiT, preferred on CPU
ENCODER_ROLE = "encoder"  # latent codec encoder, shipped by models with an acoustic prior (prior_dim > 0)
DEFAULT_LICENCE = "MIT (code) / weights: see weights/LICENSES.md"


@dataclass(frozen=True)
class SamplerDefaults:
    solver: str = "midpoint"
    steps: int = 16
    cfg: float = 3.0
    # dubbing with an acoustic prior: start the ODE at this flow time from the prior's latents (0 = from noise);
    # see vssflow_cli.sampler.sample's warm start
    prior_start: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"solver": self.solver, "steps": self.steps, "cfg": self.cfg, "prior_start": self.prior_start}


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
    an unsupported format, a missing required file, or a hash mismatch.
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
    if verify:
        verify_files(manifest)
    return manifest


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


