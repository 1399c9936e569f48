"""What the ingest tests import from one another: a small owner history to fill a store with,
the demo personas' data, and the scrubber the recall tests mask with."""

from __future__ import annotations

from pathlib import Path

from ingest.pii import PiiScrubber
from ingest.store import Chat, Message, Owner, Store

OWNER = 1
T0 = 1_700_000_000
DATA = Path(__file__).resolve().parents[2] / "ingest" / "data"
SCRUBBER = PiiScrubber(regions=("RU", "GB"))


def msg(chat: int, mid: int, minute: float, sender: int, text: str = "", **kw: object) -> Message:
    return Message(
        chat_id=chat,
        message_id=mid,
        date=T0 + int(minute * 60),
        sender_id=sender,
        sender_name="Olga" if sender == OWNER else f"Friend {sender}",
        kind=str(kw.pop("kind", "message")),
        media_type=kw.pop("media_type", None),  # type: ignore[arg-type]
        text=text,
        **kw,  # type: ignore[arg-type]
    )


def fill(store: Store, messages: list[Message], chats: tuple[int, ...] = (10, 20)) -> None:
    with store.transaction():
        for chat in chats:
            store.save_chat(Chat(chat, f"Chat {chat}", "personal_chat"))
        store.add_messages(messages)
        store.set_owner(Owner(OWNER, "Olga", "+7 916 555-12-34"))
