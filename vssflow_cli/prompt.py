"""Text prompts for foley (``--prompt``, ``--negative-prompt``): words -> token ids for the DiT's cross-attention.

The text encoder is small and trained with the model: each known word is one learned token (an embedding plus a
position, see ``model/dit.py``). The vocabulary is the words of the training corpus's sound captions and categories;
it is part of the model config (``ModelConfig.prompt_words``), so it travels in every checkpoint and bundle manifest
and the runtime never guesses it. A word the model never saw is left out; :func:`unknown_words` lets the CLI say so
instead of ignoring it silently.

numpy only (no torch): the runtime calls it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import numpy as np

PAD, UNK = 0, 1  # id 0 = no token (the zeroed condition); id 1 reserved for unknown words (never fed: they are dropped)
STOPWORDS = frozenset(
    "a an the of on in at with and or to from into onto by for some is are it its over under against "
    "sound sounds noise".split()
)
_WORD = re.compile(r"[a-z0-9]+")


def stem(word: str) -> str:
    """Crude English plural folding so "footsteps" and "footstep" share a token."""
    if len(word) > 3 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def words(text: str) -> list[str]:
    """Content words of ``text``: lower case, letters and digits, stop words dropped, plurals folded."""
    return [stem(w) for w in _WORD.findall(text.lower().replace("_", " ")) if w not in STOPWORDS]


def category_text(category: str, caption: str = "") -> str:
    """The prompt a training clip is captioned with: its caption, else its category path as words."""
    return caption.strip() or re.sub(r"[/_\-]+", " ", category)


def vocabulary(texts: Iterable[str]) -> tuple[str, ...]:
    """Sorted distinct words of ``texts`` (the model's prompt vocabulary)."""
    return tuple(sorted({w for t in texts for w in words(t)}))


def prompt_ids(text: str, vocab: Sequence[str], length: int) -> np.ndarray:
    """(length,) int64 token ids of ``text``: word i of ``vocab`` -> i + 2, padding 0.

    Words the model does not know are left out (it never saw a token for them; :func:`unknown_words` names them),
    so are words past ``length``; an empty prompt is all zeros (= no prompt).
    """
    index = {w: i + 2 for i, w in enumerate(vocab)}
    ids = [index[w] for w in words(text) if w in index][:length]
    out = np.zeros(length, np.int64)
    out[: len(ids)] = ids
    return out


def unknown_words(text: str, vocab: Sequence[str]) -> list[str]:
    """Words of ``text`` (after folding) that the model's vocabulary lacks, in order, each once."""
    known = set(vocab)
    return list(dict.fromkeys(w for w in words(text) if w not in known))
