"""Transcription plumbing through the real faster-whisper + CTranslate2 with a tiny random Whisper.

The model is built here, offline: a transformers ``WhisperConfig`` with tiny dimensions, a
byte-level tokenizer.json carrying Whisper's special tokens, a few training steps so it always says
"hello world" (it hears nothing: the point is the plumbing), converted with CTranslate2's
``TransformersConverter``. The tests check what the adapter does with real backend output: text
decoded through the tokenizer, word timestamps, ordered segments inside the audio, SRT round trip.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from synth_speech import espeak_speech

from vssflow_cli import transcribe as tr
from vssflow_cli.errors import InputError, ModelError, OutputError, UsageError
from vssflow_cli.subtitles import format_srt
from vssflow_cli.text import Segment, parse_script

pytest.importorskip("faster_whisper")
pytest.importorskip("ctranslate2")


SPOKEN = " hello world"  # what the tiny model is trained to say, whatever it hears
SAID_UNTIL = 1.5  # ... between <|0.00|> and <|1.50|>


def build_tiny_whisper(out_dir: Path) -> Path:
    """A tiny English-only Whisper (d_model 32, 1+1 layers) as a faster-whisper model folder.

    Random weights, then some Adam steps (~50) teaching the decoder to emit
    ``<|0.00|> hello world <|1.50|> <|endoftext|>`` for any input, so decoding is deterministic
    (no temperature fallback) and the text/timestamp plumbing can be checked exactly.
    """
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from ctranslate2.converters import TransformersConverter
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    # Byte-level BPE: the 256 byte symbols plus merges that make " hello" and " world" one token.
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {c: i for i, c in enumerate(alphabet)}
    merges = []
    for word in ("\u0120hello", "\u0120world"):
        for k in range(2, len(word) + 1):
            merges.append((word[: k - 1], word[k - 1]))
            vocab.setdefault(word[:k], len(vocab))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    # Whisper's special tokens in its order; timestamp tokens follow <|notimestamps|> (added by
    # the converter). Fewer than 51865 tokens make CTranslate2 treat the model as English-only.
    specials = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|translate|>", "<|transcribe|>",
                "<|startoflm|>", "<|startofprev|>", "<|nocaptions|>", "<|notimestamps|>"]  # fmt: skip
    tok.add_special_tokens(specials)
    ids = {s: tok.token_to_id(s) for s in specials}
    vocab_size = len(vocab) + len(specials) + 1501  # + <|0.00|> ... <|30.00|>

    hf = out_dir / "hf"
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
        unk_token="<|endoftext|>", pad_token="<|endoftext|>", additional_special_tokens=specials[2:],
    )  # fmt: skip
    fast.save_pretrained(hf)
    eot, sot = ids["<|endoftext|>"], ids["<|startoftranscript|>"]
    cfg = transformers.WhisperConfig(
        vocab_size=vocab_size, num_mel_bins=80, d_model=32, encoder_layers=1, decoder_layers=1,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
        max_source_positions=1500, max_target_positions=448, pad_token_id=eot, bos_token_id=eot,
        eos_token_id=eot, decoder_start_token_id=sot, suppress_tokens=[], begin_suppress_tokens=[eot],
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.WhisperForConditionalGeneration(cfg)

    def timestamp(t: float) -> int:
        return ids["<|notimestamps|>"] + 1 + round(t / 0.02)

    seq = [sot, timestamp(0.0), *tok.encode(SPOKEN).ids, timestamp(SAID_UNTIL), eot]
    inp = torch.tensor([seq[:-1]] * 3)
    target = torch.tensor([seq[1:]] * 3)
    with torch.no_grad():  # the encoder stays random: encode 3 random "spectrograms" once
        encoded = model.model.encoder(torch.randn(3, 80, 3000) * 0.5)
    opt = torch.optim.Adam(model.model.decoder.parameters(), lr=1e-2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: thread hand-offs cost more than they save on a busy CPU
    try:
        for _ in range(300):
            logits = model(encoder_outputs=encoded, decoder_input_ids=inp).logits
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, vocab_size), target.reshape(-1))
            if loss.item() < 0.01:
                break
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    assert loss.item() < 0.05, f"tiny whisper did not learn its line (loss {loss.item():.3f})"
    model.generation_config = transformers.GenerationConfig(
        decoder_start_token_id=sot, eos_token_id=eot, pad_token_id=eot, bos_token_id=eot,
        suppress_tokens=[], begin_suppress_tokens=[eot], no_timestamps_token_id=ids["<|notimestamps|>"],
        lang_to_id={"<|en|>": ids["<|en|>"]}, is_multilingual=False, alignment_heads=[[0, 0], [0, 1]],
        max_length=448,
    )  # fmt: skip
    model.save_pretrained(hf)
    ct2 = out_dir / "ct2"
    TransformersConverter(str(hf), copy_files=["tokenizer.json"]).convert(str(ct2), force=True)
    return ct2


@pytest.fixture(scope="session")
def cond_tiny_whisper(tmp_path_factory) -> Path:
    return build_tiny_whisper(tmp_path_factory.mktemp("tiny_whisper"))


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    rng = np.random.default_rng(0)
    voice = espeak_speech("Good morning. The weather is lovely today, let us go for a walk.", "en-us")

    def pad(s: float) -> np.ndarray:
        return (0.003 * rng.standard_normal(int(s * 16000))).astype(np.float32)

    return np.concatenate([pad(1.0), voice, pad(1.5)])


def check_segments(segs: list[Segment], duration: float) -> None:
    assert segs, "the backend produced no segment at all"
    for s in segs:
        assert isinstance(s.start, float) and isinstance(s.end, float)
        assert 0.0 <= s.start < s.end <= duration + 1e-6
        assert s.text and s.text == s.text.strip() and "\n" not in s.text
        assert all(ch.isprintable() for ch in s.text) and "\ufffd" not in s.text
    for a, b in itertools.pairwise(segs):
        assert a.end <= b.start  # sorted and non-overlapping


def test_transcribe_wave_with_the_real_backend(cond_tiny_whisper, speech):
    segs = tr.transcribe(speech, cond_tiny_whisper, lang="en-us", device="cpu", backend="faster-whisper", beam_size=1)
    check_segments(segs, speech.size / 16000)
    assert " ".join(s.text for s in segs) == SPOKEN.strip()  # decoded through the real tokenizer


def test_transcribe_file_and_srt_round_trip(cond_tiny_whisper, speech, tmp_path):
    import soundfile as sf

    wav = tmp_path / "speech.wav"
    sf.write(wav, speech, 16000)
    segs = tr.transcribe(wav, str(cond_tiny_whisper), device="cpu", beam_size=1)  # auto backend
    check_segments(segs, speech.size / 16000)
    assert " ".join(s.text for s in segs) == SPOKEN.strip()
    out = tr.write_transcript(segs, tmp_path / "script.srt")
    back = parse_script(out)
    assert [(b.start, b.end, b.text) for b in back] == [(s.start, s.end, s.text) for s in segs]
    assert not list(tmp_path.glob(".script.srt.*"))  # no temp file left behind


def test_split_at_pauses_and_clip_to_duration():
    items = [
        (0.0, 4.0, " a b c", [(0.1, 0.4, " one"), (0.5, 0.9, " two"), (2.0, 2.5, " three")]),
        (3.5, 9.0, " tail", [(2.4, 3.0, " \x13four"), (4.0, 9.0, " five\ufffd")]),
        (5.0, 6.0, " <i>", []),
    ]
    segs = tr._words_to_segments(items, duration=5.0)
    assert segs == [
        Segment(0.1, 0.9, "one two"),
        Segment(2.0, 2.5, "three"),
        Segment(2.5, 3.0, "four"),
        Segment(4.0, 5.0, "five"),
    ]


def test_model_errors_are_one_line_with_the_fix(tmp_path, speech):
    with pytest.raises(ModelError, match="ASR model folder not found") as e:
        tr.transcribe(speech, tmp_path / "nope", device="cpu")
    assert "--asr-model" in str(e.value) and "\n" not in str(e.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="no model.bin"):
        tr.transcribe(speech, tmp_path / "empty", device="cpu")
    with pytest.raises(UsageError, match="language 'xx-yy'"):
        tr.transcribe(speech, "tiny", lang="xx-yy")
    with pytest.raises(InputError, match="audio file not found"):
        tr.transcribe(tmp_path / "missing.wav", "tiny")


def test_hub_id_without_network_is_a_model_error(speech, monkeypatch, tmp_path):
    # No network here: make the Hub lookup fail fast and offline instead of waiting on DNS.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hf"))
    with pytest.raises(ModelError) as e:
        tr.transcribe(speech[:16000], "Systran/faster-whisper-tiny-x", device="cpu")
    msg = str(e.value)
    assert "ASR model Systran/faster-whisper-tiny-x: no such folder here, and unavailable from the Hub" in msg
    assert "HF_HUB_OFFLINE" in msg and "--asr-model PATH" in msg
    assert "\n" not in msg


def test_missing_backend_names_the_install(monkeypatch, speech):
    # faster-whisper is installed here; pretend it is not (the only way to see this branch).
    monkeypatch.setattr(tr, "available_backends", list)
    with pytest.raises(ModelError, match=r"pip install 'vssflow\[asr\]'"):
        tr.transcribe(speech, "tiny")


def test_write_transcript_errors(tmp_path):
    with pytest.raises(OutputError, match="cannot write"):
        tr.write_transcript([Segment(0.0, 1.0, "hi")], tmp_path / "no" / "dir" / "x.srt")
    with pytest.raises(ValueError):
        format_srt([Segment(None, None, "untimed")])
    assert format_srt([Segment(3661.5, 3662.0, "a  b")]) == "1\n01:01:01,500 --> 01:01:02,000\na b\n"


def test_write_transcript_keeps_a_file_that_appeared_meanwhile(tmp_path):
    # `transcribe -o` without --overwrite checks first; a file created while Whisper ran must survive the publish
    out = tmp_path / "x.srt"
    out.write_text("someone else's\n", encoding="utf-8")
    with pytest.raises(OutputError, match="--overwrite"):
        tr.write_transcript([Segment(0.0, 1.0, "hi")], out, overwrite=False)
    assert out.read_text(encoding="utf-8") == "someone else's\n" and sorted(tmp_path.iterdir()) == [out]
    tr.write_transcript([Segment(0.0, 1.0, "hi")], out)
    assert "hi" in out.read_text(encoding="utf-8")


def test_pick_language_by_joint_likelihood():
    # 1.5 log P(lang | audio) + log P(transcript | lang, audio): a likelier transcript outweighs a likelier token
    assert tr.DETECT_AUDIO_WEIGHT == 1.5 and tr.DETECT_TEXT_WEIGHT == 2.0
    assert tr._pick_language([("it", 0.69, -9.0), ("es", 0.14, -6.0)]) == ("es", 0.14)  # -9.56 vs -8.95
    assert tr._pick_language([("it", 0.69, -6.5), ("es", 0.14, -6.0)]) == ("it", 0.69)  # -7.06 vs -8.95
    assert tr._pick_language([("en", 0.0, -1.0), ("fr", 0.3, -50.0)]) == ("en", 0.0)  # P 0 is not log(0)
    # + 2 log P_text(lang | transcript): Whisper base's "hi" (P 0.51) decode of the asterisk "Thank you." reads
    # as English; without the text term (None: no py3langid) the audio alone decides
    hi, en = ("hi", 0.51, -0.9), ("en", 0.36, -0.7)
    assert tr._pick_language([hi, en]) == ("hi", 0.51)  # -1.91 vs -2.23
    assert tr._pick_language([(*hi, None), (*en, None)]) == ("hi", 0.51)
    assert tr._pick_language([(*hi, -2.5), (*en, -0.1)]) == ("en", 0.36)  # -6.91 vs -2.43


def test_text_language_logprobs_over_the_candidates(monkeypatch):
    pytest.importorskip("py3langid")
    assert tr._text_identifier() is not None, "py3langid's model is not the pinned one (LANGID_MODEL_SHA256)"
    got = tr._text_language_logprobs(" Thank you.", ["hi", "en"])
    assert set(got) == {"hi", "en"} and got["en"] > np.log(0.9)
    assert np.isclose(np.exp(list(got.values())).sum(), 1.0)
    es = tr._text_language_logprobs(" para quitar la conferencia.", ["it", "es", "pt"])
    assert max(es, key=es.get) == "es"
    # haw is a Whisper language py3langid does not know: it gets the uniform share of the known two
    assert tr._text_language_logprobs(" Bonjour à tous.", ["fr", "en", "haw"])["haw"] == pytest.approx(np.log(0.5))
    assert tr._text_language_logprobs(" Bonjour à tous.", ["fr", "haw"]) == {}  # one known language: no check
    assert tr._text_language_logprobs("  ", ["fr", "en"]) == {}
    # digits carry no n-gram: every candidate the same, whatever it is
    digits = tr._text_language_logprobs(" 24", ["it", "es"])
    assert digits == {} or np.isclose(digits["it"], digits["es"])
    monkeypatch.setattr(tr, "_text_identifier", lambda: None)  # not installed (or another model): no text term
    assert tr._text_language_logprobs(" Thank you.", ["hi", "en"]) == {}


def test_detection_checks_whispers_language_token_by_decoding(packaged_whisper, monkeypatch):
    """The first 2 s of the real Spanish prompt in tests/data ("Por favor ingrese la ..."): Whisper base's language
    token says Italian (P 0.69, Spanish 0.14); decoding both candidates makes it Spanish (issue 15)."""
    from vssflow_cli.media import read_audio

    data = Path(__file__).parent / "data"
    spanish = read_audio(data / "asterisk-es-conf-getpin.g722", 16000)[: 2 * 16000]
    french = read_audio(data / "asterisk-fr-conf-getpin.g722", 16000)[: 2 * 16000]
    with monkeypatch.context() as m:
        m.setattr(tr, "DETECT_SURE", 0.0)  # the language token alone: the detection before
        assert tr.detect_language(spanish, device="cpu")[0] == "it"
    assert tr.detect_language(spanish, device="cpu")[0] == "es"
    assert tr.detect_language(french, device="cpu")[0] == "fr"  # sure (P 0.97): no decoding
    t = tr.transcribe_full(spanish, device="cpu", backend="faster-whisper")
    assert (t.language, t.voice) == ("es", "es-419") and t.segments
    with monkeypatch.context() as m:  # without py3langid the decoding check alone still makes it Spanish
        m.setattr(tr, "_text_identifier", lambda: None)
        assert tr.detect_language(spanish, device="cpu")[0] == "es"


def test_detection_weighs_the_text_of_each_candidates_transcript(packaged_whisper, monkeypatch):
    """The real model's two decodes of the Spanish clip reach the text term: a text check that calls every
    transcript Italian turns the pick back to Italian, and it is given each candidate's own transcript."""
    from vssflow_cli.media import read_audio

    spanish = read_audio(Path(__file__).parent / "data" / "asterisk-es-conf-getpin.g722", 16000)[: 2 * 16000]
    seen = []

    def italian(text, languages):
        seen.append((text, tuple(languages)))
        return {lang: 0.0 if lang == "it" else -20.0 for lang in languages}

    monkeypatch.setattr(tr, "_text_language_logprobs", italian)
    assert tr.detect_language(spanish, device="cpu")[0] == "it"
    assert [langs for _, langs in seen] == [("it", "es")] * 2
    assert all(text.strip() for text, _ in seen) and seen[0][0] != seen[1][0]
