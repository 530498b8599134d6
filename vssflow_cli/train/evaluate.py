"""``vssflow eval``: objective metrics on the corpus's held-out split.

For every held-out clip the model generates audio from the clip's conditions (the features the inference path
computes from the rendered video, phonemes of its transcript) and we score it:

- ``wer``: word error rate of an offline recogniser (pocketsphinx's bundled US-English model) on generated English
  speech against the transcript; ``reference.wer`` is the same recogniser on the real held-out recordings.
- ``onset_f1``: F1 of onsets detected in the generated foley against the rendered visual events, within +-80 ms.
- ``transcript_id``: closed-set identification: the same recogniser restricted by a grammar to the transcripts of
  all held-out English clips (words it knows) picks one for each generated clip; the share that picks the clip's
  own. Real recordings score ~1; chance is 1 / (number of transcripts). Unlike WER, it still measures phonetic
  content where the speech is not intelligible enough for open-vocabulary recognition (WER can pass 1, and silence
  scores a "better" WER of 1.0 than speech-like babble). Clip length alone carries some of the answer; the controls
  show how much.
- ``lip_env_corr``: Pearson correlation between the generated speech's energy envelope (25 fps) and the rendered
  mouth aperture, averaged over clips.

Controls (same keys): ``untrained`` — a randomly initialised model of the same config and codec;
``shuffled_conditions`` — the trained model given the conditions of a different clip of the same kind (scored
against the original clip's targets).
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vssflow_cli.config import ModelConfig, condition_names

ONSET_TOL_S = 0.08


@dataclass
class HeldoutClip:
    clip_id: str
    kind: str
    lang: str
    text: str
    wave: np.ndarray  # (n * spl,) float32, the real recording
    conds: dict[str, np.ndarray]  # condition name -> (n, ...) features at latent fps (absent = zeros)
    onsets: np.ndarray  # (K,) seconds of rendered visual events (sound clips)
    aperture: np.ndarray  # (n,) rendered mouth aperture (speech clips)
    voiced: tuple[float, float] = (0.0, 0.0)  # speech span (s) inside the clip: the "cue" a dub would get
    reading: np.ndarray | None = None  # the teacher's 16 kHz reading of the text (set by add_priors)
    category: str = ""  # sound clips: the corpus category ("footsteps/gravel")
    prompt: str = ""  # sound clips: the words it would be prompted with (train.dataset.clip_prompt)

    @property
    def frames(self) -> int:
        return len(self.conds["phonemes"])


def load_heldout(corpus: Path, config: ModelConfig, limit: int | None = None) -> list[HeldoutClip]:
    """Held-out clips that fit one window: speech, sound, then still pictures (kind "static"), ``limit`` of each."""
    from vssflow_cli.train.dataset import clip_prompt, iter_split

    out: dict[str, list[HeldoutClip]] = {"speech": [], "sound": [], "static": []}
    for row, t in iter_split(corpus, "test", config.window_frames):
        if str(row.get("category", "")).startswith("silence/"):
            row = {**row, "kind": "static"}
        if row["kind"] not in out or (limit and len(out[row["kind"]]) >= limit):
            continue
        n = len(t["phonemes"])
        side = Path(corpus) / "heldout" / f"{row['id']}.json"
        info = json.loads(side.read_text()) if side.exists() else {}
        aperture = np.asarray(info.get("apertures", np.zeros(n)), dtype=np.float32)[:n]
        onsets = np.asarray(info.get("onsets", t.get("onsets", np.zeros(0))), dtype=np.float32)
        out[row["kind"]].append(
            HeldoutClip(
                row["id"], row["kind"], row.get("lang") or "", row.get("text") or "", t["wave"],
                {k: t[k] for k in condition_names(config) if k in t}, onsets, aperture,
                tuple(info.get("voiced", (0.0, 0.0))), category=str(row.get("category") or ""), prompt=clip_prompt(row),
            )
        )
    return out["speech"] + out["sound"] + out["static"]


def add_priors(clips: list[HeldoutClip], synth, teacher, fast: bool = False) -> None:
    """Give each clip the prior ``vssflow dub`` would build: the teacher's reading of the transcript warped onto
    the voiced span by the rendered lips (never the true timing), the latent of silence for sound and stills."""
    from vssflow_cli.prior import dub_prior

    cfg = synth.config
    for c in clips:
        placed = [(c.voiced[0], c.voiced[1], c.text)] if c.kind == "speech" and c.text else []
        c.reading = teacher.speak(c.text, _espeak_lang(c.lang)) if placed else None
        readings = [teacher.speak_logmel(c.text, _espeak_lang(c.lang), fast=fast)] if placed else []  # as dub reads
        track, _ = dub_prior(placed, readings, c.conds.get("lip"), c.frames, cfg.audio, cfg.latent_fps)
        c.conds["prior"] = synth.encode_logmel(track)[: c.frames]


def _espeak_lang(lang: str) -> str:
    return {"en": "en-us", "fr": "fr-fr", "es": "es-419"}.get(lang, lang or "en-us")


def judge_speech(clips: list[HeldoutClip], waves: list[np.ndarray], judge) -> dict:
    """Whisper's word and character error rates over the English speech clips (errors / reference length,
    summed over clips, so short prompts do not dominate), its mean log-probability, and the transcripts."""
    from vssflow_cli.speech_judge import edit_distance, normalize_text

    we = wn = ce = cn = 0
    logp, heard = [], []
    for c, w in zip(clips, waves):
        if c.kind != "speech" or not c.lang.startswith("en") or not c.text:
            continue
        h = judge.transcribe(np.asarray(w, np.float32), "en")
        ref, hyp = normalize_text(c.text), normalize_text(h.transcript)
        we += edit_distance(ref.split(), hyp.split())
        wn += len(ref.split())
        ce += edit_distance(list(ref.replace(" ", "")), list(hyp.replace(" ", "")))
        cn += len(ref.replace(" ", ""))
        logp.append(h.avg_logprob if np.isfinite(h.avg_logprob) else -5.0)
        heard.append({"id": c.clip_id, "ref": c.text, "heard": h.transcript})
    if not wn:
        return {}
    return {"whisper_wer": round(we / wn, 4), "whisper_cer": round(ce / cn, 4),
            "whisper_logprob": round(float(np.mean(logp)), 3), "transcripts": heard}


def voice_similarity(clips: list[HeldoutClip], waves: list[np.ndarray], other: list[np.ndarray] | None) -> dict:
    """Speaker-embedding cosine (Resemblyzer GE2E, :mod:`vssflow_cli.speaker`) of the generated English speech to
    the clip's own recording (the voice it should have) and to ``other`` (another voice reading the same text)."""
    from vssflow_cli.errors import InputError
    from vssflow_cli.speaker import embed, similarity

    to_ref, to_other = [], []
    for i, (c, w) in enumerate(zip(clips, waves)):
        if c.kind != "speech" or not c.lang.startswith("en"):
            continue
        try:
            e = embed(np.asarray(w, np.float32))
            to_ref.append(similarity(e, embed(c.wave)))
            if other is not None:
                to_other.append(similarity(e, embed(other[i])))
        except InputError:  # under 0.5 s of speech: nothing to compare
            continue
    out = {"speaker_sim_ref": round(float(np.mean(to_ref)), 3)} if to_ref else {}
    if to_other:
        out["speaker_sim_other"] = round(float(np.mean(to_other)), 3)
    return out


def static_level(clips: list[HeldoutClip], waves: list[np.ndarray]) -> dict:
    """RMS level (dBFS) of what was generated for still pictures: silence should come out (target <= -60)."""
    levels = [20 * np.log10(np.sqrt(np.mean(np.square(w, dtype=np.float64))) + 1e-10)
              for c, w in zip(clips, waves) if c.kind == "static"]
    if not levels:
        return {}
    return {"static_rms_dbfs_mean": round(float(np.mean(levels)), 2),
            "static_rms_dbfs_max": round(float(np.max(levels)), 2), "n_static": len(levels)}


def normalise_words(text: str) -> list[str]:
    return re.sub(r"[^a-z' ]", " ", text.lower().replace("-", " ")).split()


def word_errors(ref: list[str], hyp: list[str]) -> int:
    """Levenshtein distance over words (the speech judge's edit distance)."""
    from vssflow_cli.speech_judge import edit_distance

    return edit_distance(ref, hyp)


class Recogniser:
    """pocketsphinx with its bundled en-US model (offline)."""

    def __init__(self) -> None:
        from pocketsphinx import Decoder

        self.decoder = Decoder(samprate=16000, loglevel="FATAL")

        self._grammars: dict[tuple[str, ...], str] = {}
        self._default = self.decoder.current_search()

    def __call__(self, wave: np.ndarray, search: str | None = None) -> str:
        """Open-vocabulary transcript (the default language model), or one of a grammar's sentences."""
        self.decoder.activate_search(search or self._default)
        pcm = (np.clip(wave, -1, 1) * 32767).astype(np.int16).tobytes()
        self.decoder.start_utt()
        self.decoder.process_raw(pcm, full_utt=True)
        self.decoder.end_utt()
        hyp = self.decoder.hyp()
        return hyp.hypstr if hyp else ""

    def known(self, words: list[str]) -> bool:
        return bool(words) and all(self.decoder.lookup_word(w) for w in words)

    def closed_set(self, sentences: list[str]) -> str:
        """Name of a search that can only output one of ``sentences`` (normalised words the dictionary knows)."""
        key = tuple(sorted(set(sentences)))
        if key not in self._grammars:
            name = f"closed{len(self._grammars)}"
            rules = " | ".join(f"( {s} )" for s in key)
            self.decoder.add_jsgf_string(name, f"#JSGF V1.0;\ngrammar {name};\npublic <s> = {rules} ;\n")
            self._grammars[key] = name
        return self._grammars[key]


def onset_f1(pred: np.ndarray, ref: np.ndarray, tol: float = ONSET_TOL_S) -> float:
    """F1 of a one-to-one greedy matching of predicted to reference onsets within ``tol`` seconds."""
    if len(ref) == 0 and len(pred) == 0:
        return 1.0
    if len(ref) == 0 or len(pred) == 0:
        return 0.0
    used = np.zeros(len(ref), bool)
    hits = 0
    for p in np.sort(pred):
        dist = np.where(used, np.inf, np.abs(ref - p))
        j = int(np.argmin(dist))
        if dist[j] <= tol:
            used[j] = True
            hits += 1
    prec, rec = hits / len(pred), hits / len(ref)
    return 0.0 if hits == 0 else 2 * prec * rec / (prec + rec)


def envelope_corr(wave: np.ndarray, aperture: np.ndarray, fps: float, sr: int) -> float:
    from vssflow_cli.train.onsets import energy_envelope

    env = energy_envelope(wave, sr, fps)[: len(aperture)]
    ap = aperture[: len(env)]
    if len(env) < 3 or np.std(env) < 1e-9 or np.std(ap) < 1e-9:
        return 0.0
    return float(np.corrcoef(env, ap)[0, 1])


def score(clips: list[HeldoutClip], waves: list[np.ndarray], config: ModelConfig, asr: Recogniser) -> dict:
    """Metrics for generated ``waves`` (one per clip, same order)."""
    sr, fps = config.audio.sample_rate, config.latent_fps
    from vssflow_cli.train.onsets import detect_onsets

    errs = words = 0
    corrs, f1s, ids = [], [], []
    english = [" ".join(normalise_words(c.text)) for c in clips if c.kind == "speech" and c.lang.startswith("en")]
    candidates = [t for t in english if asr.known(t.split())]
    search = asr.closed_set(candidates) if len(set(candidates)) >= 2 else None
    for clip, wave in zip(clips, waves):
        if clip.kind == "speech":
            corrs.append(envelope_corr(wave, clip.aperture, fps, sr))
            if clip.lang.startswith("en") and clip.text:
                ref = normalise_words(clip.text)
                errs += word_errors(ref, normalise_words(asr(wave)))
                words += len(ref)
                if search is not None and " ".join(ref) in candidates:
                    ids.append(asr(wave, search) == " ".join(ref))
        elif clip.kind == "sound":
            f1s.append(onset_f1(detect_onsets(wave, sr), clip.onsets))
    return {
        "wer": round(errs / words, 4) if words else None,
        "transcript_id": round(float(np.mean(ids)), 4) if ids else None,
        "transcript_id_chance": round(1 / len(set(candidates)), 4) if ids else None,
        "onset_f1": round(float(np.mean(f1s)), 4) if f1s else None,
        "lip_env_corr": round(float(np.mean(corrs)), 4) if corrs else None,
        "n_speech": len(corrs),
        "n_sound": len(f1s),
    }


def generate(synth, clips: list[HeldoutClip], conds_of: Callable[[int], dict], *, steps: int | None, cfg: float | None,
             seed: int, batch: int = 8, solver: str | None = None, prompt_cfg: float | None = None) -> list[np.ndarray]:
    """Generate one full window per clip (conditions zero-padded to the window), trimmed to the clip
    (``prompt_cfg``: the prompt's own guidance weight, :meth:`vssflow_cli.runtime.Synthesizer.sample`)."""
    from vssflow_cli.config import per_window
    from vssflow_cli.pipeline import warm_start

    fixed = per_window(synth.config)  # one value per window (the prompt's ids): stacked, not padded
    w, spl = synth.config.window_frames, synth.config.audio.samples_per_latent
    out: list[np.ndarray] = []
    groups: list[list[int]] = []  # batches never mix kinds: speech starts from its prior like a dub, sound does not
    for i, c in enumerate(clips):
        if groups and len(groups[-1]) < batch and clips[groups[-1][0]].kind == c.kind:
            groups[-1].append(i)
        else:
            groups.append([i])
    for idx in groups:
        s = idx[0]
        conds = {}
        for k in conds_of(idx[0]):
            if k in fixed:
                conds[k] = np.stack([conds_of(i)[k] for i in idx])
                continue
            arrs = []
            for i in idx:
                a = conds_of(i)[k][: clips[i].frames]
                pad = np.zeros((w,) + a.shape[1:], a.dtype)
                pad[: len(a)] = a
                arrs.append(pad)
            conds[k] = np.stack(arrs)
        warm = warm_start(synth, conds) if clips[s].kind == "speech" and "prior" in conds else {}
        lat = synth.sample(conds, w, steps=steps, cfg=cfg, solver=solver, seed=seed + s, prompt_cfg=prompt_cfg, **warm)
        waves = synth.decode(lat)
        out += [foley_gate(waves[j][: clips[i].frames * spl], clips[i], conds_of(i), synth) for j, i in enumerate(idx)]
    return out


def shuffled_sources(truth: list[str]) -> list[int]:
    """For each clip, the next clip (cyclically) of another class: whose prompt the shuffled row gives it (itself
    if every clip has the same class)."""
    n = len(truth)
    return [next((k % n for k in range(i + 1, i + n) if truth[k % n] != t), i) for i, t in enumerate(truth)]


def prompt_rows(synth, clips: list[HeldoutClip], judge, *, steps: int | None, cfg: float | None, seed: int,
                log: Callable[[str], None] = lambda s: None, prompt_cfg: float | None = None,
                rows: tuple[str, ...] | None = None) -> dict:
    """Does foley follow ``--prompt``? The held-out sound clips with a judge class (:mod:`.sound_judge`), generated
    with no prompt, their own prompt, their own prompt with the video tokens hidden (sync kept: what a prompt must
    carry on footage whose look says nothing), and the prompt of a clip of another class; each scored by the sound
    judge: ``accuracy`` (judge's class = the clip's true class) and, for the shuffled row, ``follows_prompt`` (=
    the prompted clip's class). The ``real`` row is the judge on the recordings (its ceiling). ``prompt_cfg``: the
    prompt's own guidance weight; ``rows``: only these variants (default all)."""
    from vssflow_cli.prompt import prompt_ids
    from vssflow_cli.train.sound_judge import judge_label

    c = synth.config
    picked = [x for x in clips if x.kind == "sound" and judge_label(x.category) in judge.labels and x.prompt]
    if not picked or not c.prompt_words:
        return {}
    truth = [judge_label(x.category) for x in picked]
    other = shuffled_sources(truth)

    def ids(i: int) -> np.ndarray:
        return prompt_ids(picked[i].prompt, c.prompt_words, c.prompt_tokens)

    variants: dict[str, Callable[[int], dict]] = {
        "no_prompt": lambda i: picked[i].conds,
        "own_prompt": lambda i: picked[i].conds | {"prompt": ids(i)},
        "own_prompt_no_video": lambda i: picked[i].conds | {"prompt": ids(i),
                                                            "video": np.zeros_like(picked[i].conds["video"])},
        "shuffled_prompt": lambda i: picked[i].conds | {"prompt": ids(other[i])},
    }
    classes = sorted(set(truth))
    result: dict = {"n": len(picked), "classes": {k: truth.count(k) for k in classes},
                    "chance": round(1 / len(judge.labels), 4),
                    "majority": round(max(truth.count(k) for k in classes) / len(truth), 4)}

    def judged(waves: list[np.ndarray]) -> dict:
        pred = [judge.predict(w)[0] for w in waves]
        acc = float(np.mean([p == t for p, t in zip(pred, truth)]))
        follows = float(np.mean([p == truth[other[i]] for i, p in enumerate(pred)]))
        return {"accuracy": round(acc, 4), "follows_shuffled_class": round(follows, 4), "predicted": pred}

    result["real"] = judged([x.wave for x in picked])
    for name, conds_of in variants.items():
        if rows is not None and name not in rows:
            continue
        waves = generate(synth, picked, conds_of, steps=steps, cfg=cfg, seed=seed, prompt_cfg=prompt_cfg)
        result[name] = judged(waves)
        log(f"prompt {name}: " + str({k: v for k, v in result[name].items() if k != "predicted"}))
    return result


def foley_gate(wave: np.ndarray, clip: HeldoutClip, conds: dict, synth) -> np.ndarray:
    """What ``vssflow foley`` does to its track: silence where nothing moves (speech clips are left as made)."""
    from vssflow_cli.pipeline import motion_gate

    if clip.kind == "speech" or "sync" not in conds:
        return wave
    return motion_gate(conds["sync"][: clip.frames], synth.config.audio.sample_rate, synth.config.latent_fps)(wave, 0)


def untrained_bundle(manifest, out_dir: Path) -> Path:
    """A bundle of a freshly initialised model with the same config and codec (needs torch)."""
    from safetensors.numpy import load_file

    from vssflow_cli.train.untrained import random_bundle

    if not manifest.has("checkpoint"):
        raise RuntimeError("the bundle ships no checkpoint, so the untrained control cannot share its codec")
    codec = {k: v for k, v in load_file(str(manifest.path("checkpoint"))).items() if k.startswith("codec.")}
    return random_bundle(out_dir / "untrained", manifest.config, codec=codec, name="untrained-control",
                         note="untrained control", include_checkpoint=False)


def teacher_rows(clips: list[HeldoutClip], synth, teacher) -> dict[str, list[np.ndarray]]:
    """Reference TTS rows, each wave placed in its clip like the real speech: ``espeak`` (espeak-ng at its own
    pace from the voiced start), ``teacher`` (the teacher's own reading from the voiced start) and
    ``teacher_warped`` (the prior alone, decoded without the DiT: what the teacher warped to the lips sounds like)."""
    from vssflow_cli.audio import vocode
    from vssflow_cli.train.espeak_speech import espeak_speech

    cfg = synth.config
    sr, spl, k = cfg.audio.sample_rate, cfg.audio.samples_per_latent, cfg.audio.mel_per_latent
    rows: dict[str, list[np.ndarray]] = {"espeak": [], "teacher": [], "teacher_warped": []}
    for c in clips:
        n = c.frames * spl
        for name in ("espeak", "teacher"):
            w = np.zeros(n, np.float32)
            if c.kind == "speech" and c.text:
                lang = _espeak_lang(c.lang)
                if name == "espeak":
                    say = espeak_speech(c.text, lang)
                else:  # the reading the prior was made from (read once per clip)
                    say = c.reading if c.reading is not None else teacher.speak(c.text, lang)
                a = int(c.voiced[0] * sr)
                w[a : a + len(say)] = say[: max(0, n - a)]
            rows[name].append(w)
        prior = c.conds.get("prior")
        mel = synth.logmel(prior[None])[0] if prior is not None else np.full((c.frames * k, cfg.audio.n_mels), -11.5)
        rows["teacher_warped"].append(vocode(mel, cfg.audio)[:n].astype(np.float32))
    return rows


def evaluate(model: str | None, corpus: Path, *, limit: int | None = 40, steps: int | None = None,
             cfg: float | None = None, seed: int = 0, device: str = "auto", precision: str = "auto",
             controls: bool = True, log: Callable[[str], None] = lambda s: None, judge: bool = True) -> dict:
    """Run the metrics for the model, the real recordings, the TTS rows and (optionally) the two controls.

    Every row carries the pocketsphinx keys of :func:`score` and, with ``judge``, Whisper's (``whisper_wer``,
    ``whisper_cer``, ``whisper_logprob``) and the still-picture level (``static_rms_dbfs_*``).
    """
    from vssflow_cli.runtime import Synthesizer

    synth = Synthesizer.from_spec(model, device=device, precision=precision)
    clips = load_heldout(Path(corpus), synth.config, limit)
    if not clips:
        raise FileNotFoundError(f"no held-out clips in {corpus}: build the corpus with `vssflow data build`")
    teacher = None
    if synth.config.prior_dim:
        from vssflow_cli.teacher import get_teacher

        teacher = get_teacher()
        add_priors(clips, synth, teacher)
    asr = Recogniser()
    whisper = None
    if judge:
        from vssflow_cli.speech_judge import WhisperJudge

        whisper = WhisperJudge()
    log(f"{len(clips)} held-out clips")

    other_voice: list[np.ndarray] | None = None

    def row(name: str, waves: list[np.ndarray]) -> dict:
        r = score(clips, waves, synth.config, asr) | static_level(clips, waves)
        r |= voice_similarity(clips, waves, other_voice)
        if whisper is not None:
            r |= judge_speech(clips, waves, whisper)
        log(f"{name} {({k: v for k, v in r.items() if k != 'transcripts'})}")
        return r

    result = {"model_name": synth.manifest.name, "precision": synth.precision, "n_clips": len(clips), "steps": steps,
              "cfg": cfg}
    rows = teacher_rows(clips, synth, teacher) if teacher is not None else {}
    other_voice = rows.get("teacher")  # another voice (the teacher's) saying the same words
    result["reference"] = row("reference", [c.wave for c in clips])
    for name, waves in rows.items():
        result[name] = row(name, waves)
    result["model"] = row(
        "model", generate(synth, clips, lambda i: clips[i].conds, steps=steps, cfg=cfg, seed=seed)
    )
    if judge and synth.config.prompt_words:
        from vssflow_cli.train.sound_judge import SoundJudge

        result["prompts"] = prompt_rows(synth, clips, SoundJudge(), steps=steps, cfg=cfg, seed=seed, log=log)
    if controls:
        by_kind: dict[str, list[int]] = {}
        for i, c in enumerate(clips):
            by_kind.setdefault(c.kind, []).append(i)
        other = {}
        for members in by_kind.values():
            for j, i in enumerate(members):
                other[i] = members[(j + len(members) // 2 + 1) % len(members)] if len(members) > 1 else i
        shuffled = generate(synth, clips, lambda i: clips[other[i]].conds, steps=steps, cfg=cfg, seed=seed)
        result["controls"] = {"shuffled_conditions": row("shuffled", shuffled)}
        with tempfile.TemporaryDirectory() as tmp:
            ctrl = Synthesizer(untrained_bundle(synth.manifest, Path(tmp)), device=device, precision=precision)
            waves = generate(ctrl, clips, lambda i: clips[i].conds, steps=steps, cfg=cfg, seed=seed)
            result["controls"]["untrained"] = row("untrained", waves)
    return result
