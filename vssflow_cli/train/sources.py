"""Corpus sources: Debian packages holding real recordings, their licences, and the recordings in them.

Packages are fetched with ``apt-get download`` into ``DIR/debs`` and unpacked with ``dpkg -x`` into
``DIR/unpacked/<package>``; nothing is installed. Licences come from each package's
``/usr/share/doc/<package>/copyright`` (machine-readable DEP-5 where the package has one: the last ``Files:``
stanza whose glob matches the file wins; a fixed package-level licence otherwise).

Every recording gets a deterministic id derived from its package and path, so rebuilding yields the same ids.
"""

from __future__ import annotations

import fnmatch
import gzip
import hashlib
import re
import shutil
import subprocess
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

ASTERISK_LANGS = {
    "en": "en_US_f_Allison",
    "es": "es_MX_f_Allison",
    "fr": "fr_CA_f_June",
    "it": "it_IT_m_Carlo",
    "ru": "ru_RU_f_IvrvoiceRU",
}
ALL_LANGS = tuple(ASTERISK_LANGS)
TUXPAINT = "tuxpaint-stamps-default"
SOUND_PACKAGES = ("ufoai-sound", "wesnoth-1.16-data", "lincity-ng-data", "bucklespring-data", TUXPAINT)
# Packages without a machine-readable copyright file: licence as stated in their copyright text.
FALLBACK_LICENCE = {"wesnoth-1.16-data": "GPL-2+"}


def speech_packages(langs: tuple[str, ...]) -> list[str]:
    out = []
    for lang in langs:
        out += [f"asterisk-core-sounds-{lang}", f"asterisk-core-sounds-{lang}-g722"]
    return out


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    deb: Path
    root: Path  # unpacked tree

    @property
    def size_bytes(self) -> int:
        return self.deb.stat().st_size

    @property
    def copyright_path(self) -> Path:
        return self.root / "usr/share/doc" / self.name / "copyright"


@dataclass(frozen=True)
class Recording:
    """One source recording. ``path`` is decodable by ffmpeg (``fmt`` forces the demuxer, e.g. ``g722``).

    Composite recordings (keyboard typing) list several ``parts`` that are concatenated with ``gaps_s``.
    """

    rec_id: str
    kind: str  # "speech" | "sound"
    path: Path
    package: str
    version: str
    source_file: str  # path inside the package (what the split hash and the licence lookup use)
    licence: str
    lang: str = ""
    text: str = ""
    category: str = ""
    caption: str = ""
    fmt: str | None = None
    image: Path | None = None  # photo/sprite shown in the rendered scene (tux paint stamps)
    parts: tuple[Path, ...] = ()
    gaps_s: tuple[float, ...] = ()
    extra: dict = field(default_factory=dict, compare=False, hash=False)


# ---------------------------------------------------------------------------------------------------- fetching


def fetch_package(name: str, root: Path) -> Package:
    """Download (if absent) and unpack (if absent) one package; returns where it is."""
    debs = root / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    found = sorted(debs.glob(f"{name}_*.deb"))
    if not found:
        proc = subprocess.run(["apt-get", "download", name], cwd=debs, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"apt-get download {name} failed: {proc.stderr.strip()[-400:]}")
        found = sorted(debs.glob(f"{name}_*.deb"))
        if not found:
            raise RuntimeError(f"apt-get download {name} left no .deb in {debs}")
    deb = found[-1]
    version = subprocess.run(
        ["dpkg-deb", "-f", str(deb), "Version"], capture_output=True, text=True, check=True
    ).stdout.strip()
    dest = root / "unpacked" / name
    marker = dest / ".unpacked"
    if not marker.exists():
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir(parents=True)
        subprocess.run(["dpkg", "-x", str(deb), str(dest)], check=True, capture_output=True)
        marker.write_text(version + "\n")
    return Package(name, version, deb, dest)


def fetch_all(root: Path, langs: tuple[str, ...]) -> dict[str, Package]:
    names = speech_packages(langs) + list(SOUND_PACKAGES)
    return {n: fetch_package(n, root) for n in names}


# ---------------------------------------------------------------------------------------------------- licences


@dataclass(frozen=True)
class Copyright:
    """A parsed copyright file: ``stanzas`` are (globs, licence, holders) in file order; ``default`` if not DEP-5."""

    stanzas: tuple[tuple[tuple[str, ...], str, str], ...]
    default: str = ""

    def _match(self, path: str) -> tuple[tuple[str, ...], str, str] | None:
        hit = None
        for stanza in self.stanzas:
            if any(fnmatch.fnmatchcase(path, g) for g in stanza[0]):
                hit = stanza
        return hit

    def licence_for(self, path: str) -> str:
        hit = self._match(path)
        return hit[1] if hit else self.default

    def holders_for(self, path: str) -> str:
        hit = self._match(path)
        return hit[2] if hit else ""

    @property
    def licences(self) -> list[str]:
        seen = [lic for g, lic, _ in self.stanzas if not all(x.startswith("debian/") for x in g)]
        if self.default:
            seen.append(self.default)
        return sorted(set(seen))


def parse_copyright(text: str, fallback: str = "") -> Copyright:
    """Parse a DEP-5 copyright file (fields at column 0, continuation lines indented)."""
    if not text.startswith("Format:"):
        return Copyright((), fallback)
    stanzas = []
    for para in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        key = None
        for line in para.splitlines():
            m = re.match(r"^([A-Za-z-]+):\s*(.*)$", line)
            if m and not line[0].isspace():
                key = m.group(1)
                fields[key] = m.group(2)
            elif key and line[:1].isspace():
                fields[key] += "\n" + line.strip()
        if "Files" in fields and "License" in fields:
            globs = tuple(fields["Files"].split())
            holders = "; ".join(
                re.sub(r"\s+", " ", x.strip()) for x in fields.get("Copyright", "").splitlines() if x.strip()
            )
            stanzas.append((globs, fields["License"].splitlines()[0].strip(), holders))
    return Copyright(tuple(stanzas), fallback)


def read_copyright(pkg: Package) -> Copyright:
    return parse_copyright(
        pkg.copyright_path.read_text(encoding="utf-8", errors="replace"), FALLBACK_LICENCE.get(pkg.name, "")
    )


# ---------------------------------------------------------------------------------------------------- helpers


def slug(text: str) -> str:
    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return s or hashlib.sha1(text.encode()).hexdigest()[:8]


def _rel(pkg: Package, path: Path) -> str:
    return str(path.relative_to(pkg.root))


def _recording(pkg: Package, cr: Copyright, path: Path, *, source_file: str | None = None,
               licence_key: str | None = None, **fields) -> Recording:
    """A Recording from ``pkg``: source file defaults to ``path`` inside the package, and its licence is the
    copyright stanza matching ``licence_key`` (default: the source file)."""
    source_file = source_file if source_file is not None else _rel(pkg, path)
    return Recording(
        path=path, package=pkg.name, version=pkg.version, source_file=source_file,
        licence=cr.licence_for(licence_key if licence_key is not None else source_file), **fields,
    )  # fmt: skip


def clean_transcript(text: str, lang: str) -> str:
    """Drop annotations in (), [], <> and spell out keypad symbols (English only); '' if nothing is spoken."""
    t = re.sub(r"\([^)]*\)|\[[^\]]*\]|<[^>]*>", " ", text)
    if lang == "en":
        t = t.replace("*", " star ").replace("#", " pound ")
    elif "*" in t or "#" in t:
        return ""  # unknown spoken form of the keypad symbols
    t = re.sub(r"\s+", " ", t).strip()
    return t if re.search(r"\w", t) else ""


# ---------------------------------------------------------------------------------------------------- speech


def asterisk_recordings(pkgs: dict[str, Package], lang: str) -> list[Recording]:
    """Prompts of one language that have a spoken transcript (tones, silence and annotations-only are skipped)."""
    meta, audio = pkgs[f"asterisk-core-sounds-{lang}"], pkgs[f"asterisk-core-sounds-{lang}-g722"]
    with gzip.open(meta.root / f"usr/share/doc/{meta.name}/core-sounds-{lang}.txt.gz", "rt", encoding="utf-8-sig") as f:
        lines = f.read().splitlines()
    texts = {}
    for line in lines:
        if line.startswith(";") or ":" not in line:
            continue
        key, _, text = line.partition(":")
        texts[key.strip()] = text.strip()
    # Upstream's DEP-5 stanzas are keyed by upstream tarball names such as "fr-*" ("*" = the English voice).
    cr = read_copyright(audio)
    voice_dir = audio.root / "usr/share/asterisk/sounds" / ASTERISK_LANGS[lang]
    out = []
    for f in sorted(voice_dir.rglob("*.g722")):
        key = str(f.relative_to(voice_dir).with_suffix(""))
        if key.startswith("silence/") or key not in texts:
            continue
        text = clean_transcript(texts[key], lang)
        if not text:
            continue
        out.append(
            _recording(
                audio,
                cr,
                f,
                licence_key=f"{lang}-core-sounds",
                rec_id=f"ast-{lang}-{slug(key)}",
                kind="speech",
                fmt="g722",
                lang=lang,
                text=text,
            )
        )
    return out


def _stamp_texts(txt: Path) -> dict[str, str]:
    """Tux Paint stamp description: first line English, then ``lang.utf8=text`` lines."""
    out: dict[str, str] = {}
    if not txt.exists():
        return out
    for i, line in enumerate(txt.read_text(encoding="utf-8", errors="replace").splitlines()):
        line = line.strip()
        if i == 0 and "=" not in line:
            out["en"] = line
            continue
        m = re.match(r"^([a-zA-Z_@]+)\.utf8=(.*)$", line)
        if m:
            out.setdefault(m.group(1), m.group(2).strip())
    return out


def tuxpaint_speech(pkgs: dict[str, Package], langs: tuple[str, ...]) -> list[Recording]:
    """Spoken stamp descriptions (``<stamp>_desc[_<lang>].ogg``) with the stamp's text in that language."""
    pkg = pkgs[TUXPAINT]
    cr = read_copyright(pkg)
    base = pkg.root / "usr/share/tuxpaint/stamps"
    out = []
    for f in sorted(base.rglob("*_desc*.ogg")):
        m = re.match(r"^(.*)_desc(?:_([a-zA-Z@]+))?$", f.stem)
        if not m:
            continue
        stem, lang = m.group(1), m.group(2) or "en"
        if lang not in langs:
            continue
        text = clean_transcript(_stamp_texts(f.with_name(stem + ".txt")).get(lang, ""), lang)
        if not text:
            continue
        rel = f.relative_to(base)
        out.append(
            _recording(
                pkg,
                cr,
                f,
                rec_id=f"tux-{lang}-{slug(str(rel.parent / stem))}",
                kind="speech",
                lang=lang,
                text=text,
            )
        )
    return out


# ---------------------------------------------------------------------------------------------------- sounds


def _name(stem: str) -> str:
    """'door1-close' -> 'door close', 'MarketLow1' -> 'market low', 'wood4' -> 'wood'."""
    s = re.sub(r"([a-z])([A-Z])", r"\1 \2", stem)
    s = re.sub(r"[-_ ]?\d+[a-z]?(?=$|[-_ ])", " ", s.lower())
    s = re.sub(r"\d+", " ", s)
    return re.sub(r"[\s_-]+", " ", s).strip()


_UFO_GROUPS = {
    "ambience": "ambience",
    "doors": "door",
    "impact": "impact",
    "weapons": "weapon",
    "aliens": "creature",
    "civilians": "voice",
    "soldiers": "voice",
    "ugv": "vehicle",
    "ui": "ui",
    "geoscape": "ui",
    "seq": "flyby",
}


def ufoai_category(member: str) -> str:
    """Category for a member of UFO:AI's 0snd.pk3, e.g. 'sound/footsteps/wood2.ogg' -> 'footsteps/wood'."""
    parts = member.split("/")
    group, stem = parts[1], Path(parts[-1]).stem
    name = _name(stem)
    if group == "footsteps":
        return f"footsteps/{name.replace(' ', '-')}"
    if group == "misc" and name.startswith("break"):
        return f"break/{name[5:].strip()}"
    if group == "misc":
        return f"ui/{name}"
    if group == "doors":
        return "door/" + ("creak" if "creak" in name else "open" if "open" in name else "close")
    if group == "aliens":
        return f"creature/{parts[2]}"
    if group in ("civilians", "soldiers"):
        return "voice/" + ("scream" if "scream" in name else "death" if "death" in name else "hurt")
    if group == "geoscape" and name.startswith("combat"):
        return "weapon/" + name.split(" ")[1]
    if group == "seq":
        return name.replace(" ", "/") if name.startswith("sword") else "flyby"
    first = name.split(" ")[0]
    return f"{_UFO_GROUPS.get(group, group)}/{first}"


def ufoai_recordings(pkgs: dict[str, Package], root: Path) -> list[Recording]:
    """Sound effects from UFO:AI's ``0snd.pk3`` (a zip), extracted once under the unpacked package tree."""
    pkg = pkgs["ufoai-sound"]
    cr = read_copyright(pkg)
    pk3 = pkg.root / "usr/share/games/ufoai/base/0snd.pk3"
    dest = pkg.root / "pk3"
    with zipfile.ZipFile(pk3) as z:
        members = sorted(n for n in z.namelist() if n.startswith("sound/") and n.endswith((".ogg", ".wav")))
        for n in members:
            if not (dest / n).exists():
                z.extract(n, dest)
    out = []
    for n in members:
        if any(
            k in n for k in ("lobbyprivmsg", "roundstart", "misc/talk", "jingle", "radiomessage", "tv_news", "disco")
        ):
            continue  # chat cues, music and speech, not physical sounds
        rel_in_pkg = f"usr/share/games/ufoai/base/0snd.pk3:{n}"
        out.append(
            _recording(
                pkg,
                cr,
                dest / n,
                source_file=rel_in_pkg,
                licence_key=f"base/{n}",
                rec_id=f"ufo-{slug(n[len('sound/') : -4])}",
                kind="sound",
                category=ufoai_category(n),
            )
        )
    return out


_WESNOTH_MODIFIERS = {"miss", "fire", "puny", "small", "big", "sml", "long", "short"}


def wesnoth_category(rel: str) -> str:
    parts = rel.split("/")
    if parts[0] == "ambient":
        return f"ambience/{_name(Path(parts[-1]).stem)}"
    if parts[0] == "horn-signals":
        return "horn"
    name = _name(Path(parts[-1]).stem)
    words = [w for w in name.split(" ") if w not in _WESNOTH_MODIFIERS] or name.split(" ")
    return "battle/" + "-".join(words)


def wesnoth_recordings(pkgs: dict[str, Package]) -> list[Recording]:
    pkg = pkgs["wesnoth-1.16-data"]
    cr = read_copyright(pkg)
    base = pkg.root / "usr/share/games/wesnoth/1.16/data/core/sounds"
    skip = (
        "chat",
        "bell",
        "button",
        "checkbox",
        "expand",
        "contract",
        "arrive",
        "select",
        "user-",
        "receive",
        "turn",
        "sound-",
        "heal",
        "ready",
        "slow",
        "hourglass",
        "gold",
        "fanfare",
    )  # UI cues, music
    out = []
    for f in sorted(base.rglob("*")):
        if f.suffix not in (".ogg", ".wav") or f.stem.startswith(skip):
            continue
        if f.suffix == ".wav" and f.with_suffix(".ogg").exists():
            continue  # the same sound in two formats
        rel = str(f.relative_to(base))
        out.append(
            _recording(
                pkg,
                cr,
                f,
                rec_id=f"wes-{slug(rel[:-4])}",
                kind="sound",
                category=wesnoth_category(rel),
            )
        )
    return out


def lincity_recordings(pkgs: dict[str, Package]) -> list[Recording]:
    """LinCity-NG building sounds (machines, traffic, crowds, water); its music folder is left out."""
    pkg = pkgs["lincity-ng-data"]
    cr = read_copyright(pkg)
    base = pkg.root / "usr/share/games/lincity-ng/sounds"
    out = []
    for f in sorted(base.glob("*.wav")):
        name = _name(f.stem)
        out.append(
            _recording(
                pkg,
                cr,
                f,
                licence_key=f"data/sounds/{f.name}",
                rec_id=f"lin-{slug(f.stem)}",
                kind="sound",
                category="city/" + name.split(" ")[0],
            )
        )
    return out


def bucklespring_recordings(pkgs: dict[str, Package], per_clip: int = 8) -> list[Recording]:
    """Typing: key press/release recordings (``<scancode>-<0|1>.wav``) strung into short sequences.

    Keys are grouped ``per_clip`` at a time in scancode order; gaps are fixed from a hash of the group, so the
    same build gives the same clips.
    """
    pkg = pkgs["bucklespring-data"]
    cr = read_copyright(pkg)
    base = pkg.root / "usr/share/buckle/wav"
    codes = sorted(
        {f.stem.split("-")[0] for f in base.glob("*-0.wav") if (base / f.name.replace("-0", "-1")).exists()},
        key=lambda c: int(c, 16),
    )
    out = []
    for g in range(0, len(codes), per_clip):
        group = codes[g : g + per_clip]
        h = hashlib.sha1(",".join(group).encode()).digest()
        parts, gaps = [], []
        for i, c in enumerate(group):
            parts += [base / f"{c}-0.wav", base / f"{c}-1.wav"]
            gaps += [0.06 + h[2 * i % 20] / 255 * 0.12, 0.08 + h[(2 * i + 1) % 20] / 255 * 0.3]  # hold, then pause
        out.append(
            _recording(
                pkg,
                cr,
                parts[0],
                source_file=_rel(pkg, base) + "/{" + ",".join(group) + "}-{0,1}.wav",
                licence_key=_rel(pkg, parts[0]),
                rec_id=f"buckle-typing-{group[0]}-{group[-1]}",
                kind="sound",
                category="keyboard",
                parts=tuple(parts),
                gaps_s=tuple(gaps),
            )
        )
    return out


def tuxpaint_sounds(pkgs: dict[str, Package]) -> list[Recording]:
    """Stamp sound effects: ``<stamp>.ogg|wav`` beside ``<stamp>.png`` (photo) and ``<stamp>.txt`` (caption).

    Number and letter stamps are left out: their 'sound' is a spoken word.
    """
    pkg = pkgs[TUXPAINT]
    cr = read_copyright(pkg)
    base = pkg.root / "usr/share/tuxpaint/stamps"
    out = []
    for f in sorted([*base.rglob("*.ogg"), *base.rglob("*.wav")]):
        rel = f.relative_to(base)
        if str(rel).startswith(("symbols/math", "symbols/alphabets")):
            continue
        png, svg = f.with_suffix(".png"), f.with_suffix(".svg")
        if not (png.exists() or svg.exists()):
            continue  # localized or descriptive audio, not the stamp's sound
        caption = _stamp_texts(f.with_suffix(".txt")).get("en", "")
        category = f"{rel.parts[0]}/{_name(f.stem).replace(' ', '-')}"
        out.append(
            _recording(
                pkg,
                cr,
                f,
                rec_id=f"tux-snd-{slug(str(rel.with_suffix('')))}",
                kind="sound",
                category=category,
                caption=caption,
                image=png if png.exists() else None,
            )
        )
    return out


def sound_recordings(pkgs: dict[str, Package], root: Path) -> list[Recording]:
    return (
        ufoai_recordings(pkgs, root)
        + wesnoth_recordings(pkgs)
        + lincity_recordings(pkgs)
        + bucklespring_recordings(pkgs)
        + tuxpaint_sounds(pkgs)
    )


# ---------------------------------------------------------------------------------------------------- licences file


def _credit(pkg: Package, cr: Copyright) -> str:
    """Who holds the copyright of the recordings we use (the stanza matching them, else the package's '*')."""
    m = re.match(r"asterisk-core-sounds-([a-z]+)", pkg.name)
    holders = cr.holders_for(f"{m.group(1)}-core-sounds" if m else "data/sounds/x")
    if holders:
        return holders
    text = pkg.copyright_path.read_text(encoding="utf-8", errors="replace")
    who = re.search(r"^Upstream Author:\s*(.+)$", text, re.MULTILINE)
    return who.group(1).strip() if who else "see the package's copyright file"


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.0f} kB"


def licences_markdown(pkgs: dict[str, Package], used: dict[str, tuple[int, set[str]]] | None = None) -> str:
    """weights/LICENSES.md: every source package with version, size, licences (from its copyright file).

    ``used`` maps a package to (clips built from it, licences of the files those clips came from).
    """
    lines = [
        "# Licences of the training data behind the embedded default model",
        "",
        "The weights in `weights/vssflow-tiny/` are trained on recordings from these Debian (bookworm) packages,",
        "fetched with `apt-get download` and unpacked with `dpkg -x` by `python -m vssflow_cli.train.corpus DIR`.",
        "Licences are read from each package's `/usr/share/doc/<package>/copyright`; where it has several",
        "`Files:` stanzas, each file's licence is the last matching stanza and is stored in every clip's metadata",
        "(`licence`). The corpus itself is not distributed with this repository. The talking-face videos are",
        "rendered from `skimage.data.astronaut()` (NASA photo of Eileen Collins, public domain, shipped with",
        "scikit-image).",
        "",
        "Several sources are GPL-2 / GPL-2+, CC-BY-SA-3.0 (attribution, share-alike) or CC-BY-3.0 (attribution):",
        "whether trained weights are a derivative work of their training data is unsettled; every source is",
        "credited here and this file ships beside the weights.",
        "",
        "| package | version | .deb size | licences of the files used | all licences in its copyright file | clips |",
        "|---|---|---|---|---|---|",
    ]
    for name in sorted(pkgs):
        p = pkgs[name]
        n, lic_used = (used or {}).get(name, (0, set()))
        all_lic = ", ".join(read_copyright(p).licences) or "see copyright file"
        shown = ", ".join(sorted(lic_used)) or "-"
        lines.append(f"| `{name}` | {p.version} | {_size(p.size_bytes)} | {shown} | {all_lic} | {n} |")
    lines += [
        "",
        "## Copyright holders (from the copyright files)",
        "",
        "The stanza covering the recordings used; where a package has per-file stanzas (UFO:AI), each clip's",
        "`source_file` metadata names the file to look up.",
        "",
    ]
    for name in sorted(pkgs):
        p = pkgs[name]
        text = p.copyright_path.read_text(encoding="utf-8", errors="replace")
        src = re.search(r"^(?:Source:|It was downloaded from)\s*(\S+)", text, re.MULTILINE)
        lines.append(f"- `{name}`: {_credit(p, read_copyright(p))}" + (f"; upstream {src.group(1)}" if src else ""))
    lines.append("")
    return "\n".join(lines)
