"""What a conversation is: turns built from messages, the same way for training and serving.

A conversation is a list of chat messages in the standard shape transformers chat templates
and TRL take: {"role": "system" | "user" | "assistant", "content": str}. The owner's words are
always `assistant`; everyone else is `user`.

`build_sessions` is THE rule that turns a chat's messages into turns, used by the dataset
(stored history -> training examples), the bot's memory (live messages -> the prompt) and
`twin chat`:
- one speaker's consecutive messages within `merge_gap` merge into one turn, newline-joined
  (the owner's bursts are part of their style);
- a silence longer than `session_gap` starts a new conversation: nothing before it is context;
- in a group chat, other people's turns read "Name: text" (the name is display only: speakers
  are told apart by id, so two members called Ann stay two people).
Because both sides call this one function, the prompt before an owner's reply at serving time
is, token for token, the prompt that reply was trained after (tests/test_train_serve.py).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, NotRequired, TypedDict

from twin.core.language import localized, phrase
from twin.core.tokens import estimate_tokens

if TYPE_CHECKING:
    from twin.core.config import Config, DatasetConfig

Role = Literal["system", "user", "assistant"]
OWNER = "owner"


class ChatMessage(TypedDict):
    role: Role
    content: str
    # 0 marks an assistant turn kept only as context (it was trained in another example).
    weight: NotRequired[int]
    # On the newest user turn only: the memory block its reply is written with (with_block).
    memory: NotRequired[str]


@dataclass(frozen=True)
class Said:
    """One message as the conversation builder sees it, from the store or the bot's memory."""

    speaker: str  # OWNER, or a stable key of the sender (their id as text)
    name: str  # display name: the prefix in group chats
    text: str  # the text, or a placeholder such as "[sticker]" for media
    at: float  # unix seconds
    message_id: int = 0


@dataclass
class Turn:
    role: Role  # "user" or "assistant"
    speaker: str
    name: str
    content: str
    first_id: int
    last_at: float
    first_at: float = 0.0


@dataclass(frozen=True)
class TurnRules:
    merge_gap_s: float
    session_gap_s: float
    group: bool  # a group chat: others' turns carry their names

    @classmethod
    def of(cls, dataset: DatasetConfig, *, group: bool) -> TurnRules:
        return cls(dataset.merge_gap_minutes * 60, dataset.session_gap_minutes * 60, group)


def build_sessions(said: Iterable[Said], rules: TurnRules) -> Iterator[list[Turn]]:
    """A chat's messages (in time order) as conversations of merged turns."""
    turns: list[Turn] = []
    for message in said:
        if turns and message.at - turns[-1].last_at > rules.session_gap_s:
            yield _named(turns, rules)
            turns = []
        last = turns[-1] if turns else None
        if (
            last
            and last.speaker == message.speaker
            and message.at - last.last_at <= rules.merge_gap_s
        ):
            last.content += "\n" + message.text
            last.last_at = message.at
        else:
            role: Role = "assistant" if message.speaker == OWNER else "user"
            turns.append(
                Turn(
                    role,
                    message.speaker,
                    message.name,
                    message.text,
                    message.message_id,
                    last_at=message.at,
                    first_at=message.at,
                )
            )
    if turns:
        yield _named(turns, rules)


def current_session(said: Iterable[Said], rules: TurnRules) -> list[Turn]:
    """The turns of the chat's latest conversation: what a reply now is written after."""
    latest = deque(build_sessions(said, rules), maxlen=1)
    return latest[0] if latest else []


def from_first_user(turns: list[Turn]) -> list[Turn]:
    """A conversation as a reply can follow it: from its first turn by someone else (an
    owner's opener with nothing before it answers nobody, and is never trained as a reply)."""
    start = next((i for i, t in enumerate(turns) if t.role == "user"), len(turns))
    return turns[start:]


def _named(turns: list[Turn], rules: TurnRules) -> list[Turn]:
    if rules.group:
        for turn in turns:
            if turn.role == "user":
                turn.content = speaker_prefixed(turn.name, turn.content)
    return turns


def as_messages(turns: Iterable[Turn]) -> list[ChatMessage]:
    return [{"role": t.role, "content": t.content} for t in turns]


# How media without text appears in a conversation: "[photo]", "[sticker]"... The store's media
# types are Telegram Desktop's names; the bot maps Bot API messages onto them.
_MEDIA_LABELS = {
    "photo": "photo",
    "sticker": "sticker",
    "voice_message": "voice message",
    "video_message": "video message",
    "video_file": "video",
    "animation": "GIF",
    "audio_file": "audio",
    "file": "file",
    "location": "location",
    "contact": "contact",
    "poll": "poll",
}


def media_placeholder(media_type: str) -> str:
    """The user turn standing for a media message without text, e.g. "[voice message]"."""
    return f"[{_MEDIA_LABELS.get(media_type, media_type)}]"


def spoken(media_type: str, transcript: str) -> str:
    """Someone's voice (or round video) message as the twin reads it: its placeholder, marking
    the words as spoken, then the words: "[voice message] see you at six"."""
    return f"{media_placeholder(media_type)} {transcript}"


def speaker_prefixed(name: str, text: str) -> str:
    """A group member's turn: "Name: text"."""
    return f"{name or 'Deleted Account'}: {text}"


def system_prompt(template: str, persona_name: str) -> str:
    """The persona system prompt; "" means none. `{name}` is the only placeholder."""
    return template.replace("{name}", persona_name).strip()


def persona_prompt(config: Config, owner_name: str | None, language: str) -> str:
    """The system prompt of training examples and of every served prompt alike."""
    name = config.persona.name or owner_name or phrase(language, "owner")
    return system_prompt(localized(config.persona.system_prompt, "system_prompt", language), name)


@dataclass(frozen=True)
class Remembered:
    """One thing the owner said before: their words, and what they were answering."""

    text: str
    answered: str = ""


def memory_block(
    remembered: list[Remembered],
    facts: list[str],
    *,
    language: str,
    scope: str,
    max_tokens: int,
    count_tokens: Callable[[str], int] | None = None,
) -> str:
    """What the twin is given to remember, as it sits before the newest message (with_block):
    the recalled messages, in the order given (best first), while the token budget lasts, then
    the owner's profile facts in what is left of it. "" when there is nothing. Training and
    serving build the block with this one function, so the twin learns to read exactly what
    it is served.

    `count_tokens` is what a line costs: the tokenizer-free estimate by default, as the
    dataset (which has no tokenizer) counts. Serving builds the block that way too, and only
    where that block would leave its prompt no room for a message (emoji or CJK text, which
    the estimate undercounts) builds it again counting by the served tokenizer
    (ingest.recall.Memory, serving.twin.block_fit)."""
    count = count_tokens or estimate_tokens
    recalled, spent = _while_budget_lasts(
        [_recalled_line(r) for r in remembered], count, max_tokens
    )
    facts_shown, _ = _while_budget_lasts(
        [f"- {_one_line(fact, 200)}" for fact in facts], count, max_tokens - spent
    )
    lines: list[str] = []
    if recalled:
        header = "remembered" if scope == "chat" else "remembered_all"
        lines += [phrase(language, header), *recalled]
    if facts_shown:
        lines += [phrase(language, "profile"), *facts_shown]
    return "\n".join(lines)


def _recalled_line(item: Remembered) -> str:
    said = _one_line(item.text, 240)
    return f'- "{_one_line(item.answered, 80)}" → "{said}"' if item.answered else f'- "{said}"'


def _while_budget_lasts(
    lines: list[str], count: Callable[[str], int], budget: int
) -> tuple[list[str], int]:
    """The first lines, in order, up to the first that no longer fits `budget`; and their cost."""
    shown: list[str] = []
    spent = 0
    for line in lines:
        cost = count(line)
        if spent + cost > budget:
            break
        spent += cost
        shown.append(line)
    return shown, spent


def with_block(conversation: list[ChatMessage], block: str) -> list[ChatMessage]:
    """The conversation with the memory block on its newest user turn: the one place a block
    goes, in training examples and served prompts alike.

    The layout is made for reuse of what a model has already read: the persona prompt (the
    same in every chat) first, then the conversation (which only grows while a chat goes on),
    and last what changes with every message: the block searched for it, then the message
    (twin.core.chat_format renders the block at the head of that turn). A chat's next prompt
    thus starts exactly as its previous one did up to that turn, and an engine that keeps what
    it read reads only the rest (serving.llamacpp); with memory-guided decoding, whose
    contrast prompt has no block, not even that turn again. The same list when `block` is
    empty."""
    if not block:
        return conversation
    newest = max((i for i, m in enumerate(conversation) if m["role"] == "user"), default=None)
    if newest is None:
        raise ValueError("a memory block goes on a user turn, and this conversation has none")
    out = [_without_key(m) for m in conversation]
    out[newest] = {**out[newest], "memory": block}
    return out


def without_block(conversation: list[ChatMessage]) -> list[ChatMessage]:
    """A conversation with its memory block taken out: the prompt that memory-guided decoding
    contrasts with, and the eval's "memory off". The same list when there is no block."""
    if not any("memory" in m for m in conversation):
        return conversation
    return [_without_key(m) for m in conversation]


def block_of(conversation: list[ChatMessage]) -> str:
    """The memory block a conversation carries ("" for none)."""
    return next((m["memory"] for m in conversation if "memory" in m), "")


def _without_key(message: ChatMessage) -> ChatMessage:
    if "memory" not in message:
        return message
    plain = dict(message)
    del plain["memory"]
    return plain  # type: ignore[return-value]


def _one_line(text: str, limit: int) -> str:
    flat = " / ".join(line.strip() for line in text.splitlines() if line.strip())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def with_system_prompt(system: str, turns: list[ChatMessage]) -> list[ChatMessage]:
    """Prepend the system turn (when there is one) to a conversation's turns."""
    if not system:
        return list(turns)
    return [{"role": "system", "content": system}, *turns]
