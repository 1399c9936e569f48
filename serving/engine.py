"""Serving engines: one seam through which the bot, `twin chat`, the demo and the bench
generate, whatever runs the model.

    transformers  the base model and its LoRA adapter in this process (the default)
    llama.cpp     the embedded GGUF base with the adapter converted to a GGUF LoRA, on the CPU
    openai        an OpenAI-compatible server (vLLM, SGLang) holding the adapters, over HTTP

Every engine is given conversations already fitted to the prompt budget and renders them
with twin's own chat format (`twin.core.chat_format.encode_prompt`, the tokenizer of the
training base): what is served is exactly what was trained, whatever the engine.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Protocol

from twin.core.config import Config, GenerationConfig
from twin.core.conversation import ChatMessage
from twin.core.errors import TwinError


class AdapterRefused(TwinError):
    """An adapter that cannot be served on this base; the message says why. The engine keeps
    serving what it served before."""


class EngineUnavailable(TwinError):
    """The engine cannot answer now (a server down, overloaded, failing): the request may be
    retried later; the message says what failed, never with message text."""


class PromptRefused(TwinError):
    """The engine will never answer one of the prompts it was given (a server that refuses
    it: longer than its context, over a body limit): asking again cannot help, but the same
    batch without that prompt may pass. The message says why, never with message text."""


class Engine(Protocol):
    """What every engine offers. All methods run on the bot's model thread (one at a time)."""

    tokenizer: Any  # the training base's tokenizer: renders and fits prompts
    version: str | None  # the adapter served (None: the bare base)

    def generate(
        self,
        conversations: list[list[ChatMessage]],
        generation: GenerationConfig,
        *,
        stop: threading.Event | None = None,
        chats: list[str | None] | None = None,
    ) -> list[str]:
        """The reply to each conversation (rendered with twin's chat format), in one batch
        where the engine can. `stop`, once set, ends generation early (shutting down).
        `chats` names whose each conversation is (one key per chat, the same from call to
        call; None for a conversation of no chat): an engine that keeps what it read of a
        chat (llama.cpp) reads only what is new in its next prompt; the others ignore it.
        Raises EngineUnavailable (try later) or PromptRefused (one of them will never pass)."""
        ...

    def swap(self, folder: Path) -> None:
        """Serve the adapter in `folder` (a registry version) instead of the current one.
        Raises AdapterRefused (nothing changed) when the adapter itself cannot be served on
        this base (trying again would not change that); EngineUnavailable (nothing changed)
        when the engine cannot take it now (its server down, a full disk): the bot tries it
        again later."""
        ...

    def close(self) -> None:
        """Release the model or the server's adapters this engine holds."""
        ...


# Why the openai engine has no memory guidance: it decodes on the server, one prompt a row.
OPENAI_NO_GUIDANCE = (
    "off with the openai engine (vLLM/SGLang have no such decoding; the transformers and "
    "llama.cpp engines do it)"
)


def memory_guidance(config: Config) -> dict[str, Any]:
    """The memory guidance replies are decoded with, for `twin status` and /persona status:
    the configured `[generation] memory_guidance`, what the engine applies of it (the openai
    engine none), and the line that says so."""
    configured = config.generation.memory_guidance
    engine = config.serving.engine
    applied = 0.0 if engine == "openai" else configured
    if engine == "openai":
        line = OPENAI_NO_GUIDANCE
    elif configured <= 0:
        line = "off ([generation] memory_guidance = 0)"
    elif not config.memory.enabled:
        line = f"{configured:g}, unused: memory is off, so no reply has a block to guide"
    else:
        line = f"{configured:g} (replies lean on what the memory block makes likelier)"
    return {"configured": configured, "applied": applied, "engine": engine, "line": line}
