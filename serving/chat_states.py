"""What llama.cpp has read of each chat, kept in RAM between its messages, within a bound.

A chat's next prompt starts as its previous one did up to the newest turn (the prompt layout
of twin.core.conversation.with_block), so the KV state left after a chat's reply, restored
for its next message, leaves llama.cpp only the new tokens to read. Each state is llama.cpp's
own serialization of one sequence (`llama_state_seq_get_data`): the KV cache of its tokens
only, not the logits llama-cpp-python's RAM cache also copies (about 100 MB an entry for
SmolLM2's vocabulary at a 512-token batch). States go least recently used first when their
bytes pass the bound; a swapped adapter makes them all wrong, and they are dropped.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass


@dataclass(frozen=True)
class SavedState:
    tokens: tuple[int, ...]  # what the sequence had read, in order
    data: bytearray  # llama.cpp's serialized KV cache of those tokens (written in place)


class ChatStates:
    """Saved sequence states by key (a chat, its contrast branch, a persona prefix), least
    recently used first out once their bytes pass `bound_bytes`."""

    def __init__(self, bound_bytes: int) -> None:
        self.bound_bytes = bound_bytes
        self._states: OrderedDict[str, SavedState] = OrderedDict()
        self.nbytes = 0
        self.evicted = 0  # states dropped for room since the start (for the bench and status)

    def get(self, key: str) -> SavedState | None:
        state = self._states.get(key)
        if state is not None:
            self._states.move_to_end(key)
        return state

    def put(self, key: str, state: SavedState | None) -> None:
        """Keep `state` for `key` (replacing the one before), then drop the least recently
        used until the bound holds; a state larger than the whole bound is not kept, nor is
        None (a state llama.cpp could not save)."""
        self.drop(key)
        if state is None or len(state.data) > self.bound_bytes:
            return
        self._states[key] = state
        self.nbytes += len(state.data)
        while self.nbytes > self.bound_bytes:
            _, oldest = self._states.popitem(last=False)
            self.nbytes -= len(oldest.data)
            self.evicted += 1

    def drop(self, key: str) -> None:
        old = self._states.pop(key, None)
        if old is not None:
            self.nbytes -= len(old.data)

    def clear(self) -> None:
        self._states.clear()
        self.nbytes = 0

    def __len__(self) -> int:
        return len(self._states)

    def __contains__(self, key: str) -> bool:
        return key in self._states
