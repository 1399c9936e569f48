"""The conversation format shared by the dataset (training) and the bot (serving).

A conversation is a list of chat messages in the standard shape transformers chat templates
and TRL take: {"role": "system" | "user" | "assistant", "content": str}. The owner's words are
always `assistant`; everyone else is `user`. Keeping this in one module is what guarantees
that the twin is served exactly the way it was trained.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, NotRequired, TypedDict

if TYPE_CHECKING:  # transformers is heavy; only the functions that take a tokenizer need it
    from transformers import PreTrainedTokenizerBase

Role = Literal["system", "user", "assistant"]


class ChatMessage(TypedDict):
    role: Role
    content: str
    # 0 marks an assistant turn kept only as context (it was trained in another example).
    weight: NotRequired[int]


# How others' media without text appears in a conversation: "[photo]", "[sticker]"... The
# store's media types are Telegram Desktop's names; the bot maps Bot API messages onto them.
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


def speaker_prefixed(name: str, text: str) -> str:
    """A group member's turn when several people talk: "Name: text"."""
    return f"{name}: {text}"


def system_prompt(template: str, persona_name: str) -> str:
    """The persona system prompt; "" means none. `{name}` is the only placeholder."""
    return template.replace("{name}", persona_name).strip()


def with_system_prompt(system: str, turns: list[ChatMessage]) -> list[ChatMessage]:
    """Prepend the system turn (when there is one) to a conversation's turns."""
    if not system:
        return list(turns)
    return [{"role": "system", "content": system}, *turns]


def format_conversation(
    tokenizer: PreTrainedTokenizerBase, messages: list[ChatMessage], *, add_generation_prompt: bool
) -> str:
    """Render a conversation with the model's own chat template: THE format of twin.

    Training renders each example with this function and serving renders each prompt with it,
    so the twin sees at serving time exactly the text shape it was trained on.
    """
    plain = [{"role": m["role"], "content": m["content"]} for m in messages]
    text = tokenizer.apply_chat_template(
        plain, tokenize=False, add_generation_prompt=add_generation_prompt
    )
    assert isinstance(text, str)
    return text


def encode_prompt(tokenizer: PreTrainedTokenizerBase, messages: list[ChatMessage]) -> list[int]:
    """Token ids of a serving prompt: the conversation so far, then the assistant's cue."""
    text = format_conversation(tokenizer, messages, add_generation_prompt=True)
    # The template writes any special tokens itself (BOS included); adding them again would
    # make serving differ from training.
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


@dataclass(frozen=True)
class TrainingExample:
    input_ids: list[int]
    labels: list[int]  # IGNORE_INDEX wherever the loss must not look


IGNORE_INDEX = -100


def encode_for_training(
    tokenizer: PreTrainedTokenizerBase, messages: list[ChatMessage], max_tokens: int
) -> TrainingExample:
    """Token ids and labels of one example: loss only on the owner's trained replies.

    Labels are built turn by turn from the rendered text, because many chat templates (SmolLM2's
    among them) have no {% generation %} markers and `return_assistant_tokens_mask` would come
    back all zeros: training would then silently learn nothing. The span of reply i is what
    rendering messages[:i+1] adds to rendering messages[:i] with the assistant cue: the reply
    text and its end-of-turn marker, so the twin also learns when to stop.
    """
    messages = _fit_turns(tokenizer, messages, max_tokens)
    text = format_conversation(tokenizer, messages, add_generation_prompt=False)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant" or message.get("weight", 1) == 0:
            continue
        before = format_conversation(tokenizer, messages[:i], add_generation_prompt=True)
        through = format_conversation(tokenizer, messages[: i + 1], add_generation_prompt=False)
        if not (through.startswith(before) and text.startswith(through)):
            raise ValueError(
                "the model's chat template does not render conversations prefix by prefix; "
                "twin cannot locate the replies to learn"
            )
        spans.append((len(before), len(through)))
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(encoded["input_ids"])
    labels = [
        token if any(a <= start < b for a, b in spans) else IGNORE_INDEX
        for token, (start, _end) in zip(ids, encoded["offset_mapping"], strict=True)
    ]
    return TrainingExample(ids[:max_tokens], labels[:max_tokens])


def _fit_turns(
    tokenizer: PreTrainedTokenizerBase, messages: list[ChatMessage], max_tokens: int
) -> list[ChatMessage]:
    """Drop the oldest turns (keeping the system turn) until the example fits `max_tokens`.

    The dataset estimated lengths without a tokenizer; here they are exact. The example keeps
    starting with a user turn; a single exchange still too long is cut at `max_tokens`.
    """
    return _drop_oldest_turns(tokenizer, messages, max_tokens, keep=2, serving=False)


def fit_prompt(
    tokenizer: PreTrainedTokenizerBase, messages: list[ChatMessage], max_tokens: int
) -> list[ChatMessage]:
    """A serving conversation cut to at most `max_tokens` prompt tokens, oldest turns first.

    Like training examples it keeps the system turn and starts with a user turn. When even the
    last message alone is too long (a 4096-character message on a small budget), its text is
    cut, keeping its end: the part nearest to the reply.
    """
    fitted = _drop_oldest_turns(tokenizer, messages, max_tokens, keep=1, serving=True)
    while len(encode_prompt(tokenizer, fitted)) > max_tokens and len(fitted[-1]["content"]) > 1:
        last = fitted[-1]
        fitted = [*fitted[:-1], {**last, "content": last["content"][len(last["content"]) // 4 :]}]
    return fitted


def _drop_oldest_turns(
    tokenizer: PreTrainedTokenizerBase,
    messages: list[ChatMessage],
    max_tokens: int,
    *,
    keep: int,
    serving: bool,
) -> list[ChatMessage]:
    system = [m for m in messages[:1] if m["role"] == "system"]
    turns = messages[len(system) :]
    while len(turns) > keep:
        text = format_conversation(tokenizer, system + turns, add_generation_prompt=serving)
        if len(tokenizer(text, add_special_tokens=False)["input_ids"]) <= max_tokens:
            break
        turns = turns[1:]
        while len(turns) > keep and turns[0]["role"] != "user":
            turns = turns[1:]
    return system + turns
