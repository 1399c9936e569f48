"""The served twin: an engine (serving.engine) with the current adapter, and the persona
prompt; and the prompt a reply is written after, built the way the dataset built training
examples. `twin chat` serves a `ServedTwin`; the bot's model worker loads the engine alone
(`load_engine`) and makes the prompt from the settings in force, which admins change while it
serves, and swaps adapters meanwhile. Every engine checks an adapter before it touches what is
served, so a broken one is refused and the old one keeps serving.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ingest.recall import BlockFit, Memory, Recall, memory_query
from ingest.store import open_store
from serving.engine import Engine
from trainer.registry import current_version
from twin.core.chat_format import prompt_length
from twin.core.config import MIN_EXCHANGE_TOKENS, Config
from twin.core.conversation import (
    ChatMessage,
    Said,
    TurnRules,
    as_messages,
    current_session,
    from_first_user,
    persona_prompt,
    with_block,
    with_system_prompt,
)
from twin.core.tokens import estimate_tokens

log = logging.getLogger(__name__)


@dataclass
class ServedTwin:
    engine: Engine
    system_prompt: str

    @property
    def version(self) -> str | None:
        return self.engine.version

    @property
    def tokenizer(self) -> Any:
        return self.engine.tokenizer


def engine_choice(config: Config) -> tuple[str, str]:
    """The engine `[serving] engine` stands for, and why: "auto" is llama.cpp on a machine
    without a GPU where llama.cpp can serve the base (an embedded base whose adapters travel
    as a GGUF LoRA, or one with `[serving] gguf`) and llama-cpp-python is installed; there it
    answered faster than transformers with replies as close to the owner's (docs/
    benchmarks.md). Otherwise transformers."""
    engine = config.serving.engine
    if engine != "auto":
        return engine, f'[serving] engine = "{engine}"'
    import importlib.util

    import torch

    from trainer.embedded import EMBEDDED

    if torch.cuda.is_available():
        return "transformers", "auto: a GPU is present"
    if importlib.util.find_spec("llama_cpp") is None:
        return "transformers", "auto: llama-cpp-python is not installed"
    embedded = EMBEDDED.get(config.model.base)
    if embedded is not None and embedded.train_tokens:
        # Their trained turn-marker rows cannot travel in a GGUF LoRA (serving.llamacpp).
        return "transformers", f"auto: llama.cpp cannot serve {config.model.base} adapters"
    if embedded is None and not config.serving.gguf:
        return "transformers", "auto: no [serving] gguf of this base for llama.cpp"
    return "llama.cpp", "auto: no GPU, and llama.cpp serves this base"


def load_engine(config: Config) -> Engine:
    """The engine `[serving] engine` names (engine_choice), with the base loaded (no adapter
    yet)."""
    engine, why = engine_choice(config)
    log.info("serving engine: %s (%s)", engine, why)
    if engine == "llama.cpp":
        from serving.llamacpp import LlamaCppEngine

        return LlamaCppEngine(config)
    if engine == "openai":
        from serving.openai import OpenAIEngine

        return OpenAIEngine(config)
    from serving.transformers import TransformersEngine

    return TransformersEngine.load(config)


def load_served_twin(config: Config, *, with_adapter: bool = True) -> ServedTwin:
    """Load the engine and, when there is one, the current adapter."""
    twin = ServedTwin(load_engine(config), served_prompt(config))
    version = current_version(config.adapters_dir) if with_adapter else None
    if version is not None:
        swap_adapter(twin, config.adapters_dir / version)
    log.info("serving %s", f"adapter {version}" if version else "the base model (no adapter yet)")
    return twin


def swap_adapter(twin: ServedTwin, folder: Path) -> None:
    """Serve the adapter in `folder`; raises AdapterRefused with nothing changed."""
    twin.engine.swap(folder)


def prompt_budget(config: Config) -> int:
    """Prompt tokens a reply may be written after: the context minus the reply's own room."""
    return config.bot.context_tokens - config.generation.max_new_tokens


def block_fit(tokenizer: Any, prompt: Callable[[], tuple[str, int]]) -> BlockFit:
    """How the served prompt holds a memory block, by the served tokenizer. `prompt()` is the
    persona prompt and the prompt budget now (admins may change either).

    The block is built by the tokenizer-free estimate, as the dataset built it (3 characters
    a token); where that block would leave no room for a message, e.g. emoji or CJK text (a
    token or more a character), it is built again counting each line by the tokenizer, the
    larger of that and the estimate, within [memory] max_tokens (ingest.recall.Memory)."""

    def fits(block: str) -> bool:
        system, budget = prompt()
        probe = with_block(with_system_prompt(system, [{"role": "user", "content": "hi"}]), block)
        return prompt_length(tokenizer, probe) + MIN_EXCHANGE_TOKENS <= budget

    def count_tokens(line: str) -> int:
        served = len(tokenizer(f"{line}\n", add_special_tokens=False)["input_ids"])
        return max(served, estimate_tokens(line))

    return BlockFit(fits, count_tokens)


@dataclass(frozen=True)
class Prompt:
    conversation: list[ChatMessage]
    since: int | None  # when the conversation began: memory recalls only what is older


def conversation_prompt(system: str, said: list[Said], rules: TurnRules) -> Prompt:
    """What a reply now is written after: the current session's turns, built by the rule the
    dataset used, after the system turn. The bot and `twin chat` both call this."""
    turns = from_first_user(current_session(said, rules))
    since = int(turns[0].first_at) if turns else None
    return Prompt(with_system_prompt(system, as_messages(turns)), since)


def remembering(
    memory: Memory | None, prompt: Prompt, *, chat: int | None
) -> tuple[list[ChatMessage], Recall | None]:
    """The prompt's conversation with what its reply recalls before its newest message, as
    the dataset put it in training examples (twin.core.conversation.with_block): what was
    said in scope before this conversation began. And what was recalled."""
    conversation = prompt.conversation
    if memory is None:
        return conversation, None
    recall = memory.recall(memory_query(conversation), chat=chat, before=prompt.since)
    return with_block(conversation, recall.block), recall


def served_prompt(config: Config) -> str:
    """The persona system prompt, exactly as the dataset wrote it into training examples."""
    return persona_prompt(config, *owner_and_language(config))


def owner_and_language(config: Config) -> tuple[str | None, str]:
    """The owner's name (None before any import) and language, as the store knows them."""
    if not config.store_path.exists():
        return None, config.persona.language if config.persona.language != "auto" else "en"
    with open_store(config.store_path) as store:
        owner = store.owner()
        return (owner.name if owner else None), store.owner_language(config.persona.language)
