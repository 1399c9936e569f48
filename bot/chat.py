"""`twin chat`: talk to the current twin in the terminal, with the bot's prompt and settings.

The conversation is built, remembered and fitted exactly as the bot builds a chat's (same turn
rules, same memory block, same prompt budget, same generation settings). `--chat CHAT_ID`
answers as in that chat: its memory scope, and its group prefixes. On a terminal it is
interactive; with stdin from a pipe or file it answers one message per line (with --json, one
JSON object per line).
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Iterator

from ingest.peers import GROUP_TYPES
from ingest.recall import Recall, open_recall
from ingest.store import open_store
from serving.twin import (
    block_fit,
    conversation_prompt,
    load_served_twin,
    prompt_budget,
    remembering,
)
from twin.core.chat_format import fit_prompt
from twin.core.config import Config
from twin.core.conversation import OWNER, Said, TurnRules
from twin.core.errors import TwinError

HELP = "type a message; /reset forgets the conversation, /quit (or Ctrl-D) leaves"


def run_terminal_chat(
    config: Config, *, as_json: bool = False, chat: int | None = None, show_memory: bool = False
) -> int:
    twin = load_served_twin(config)
    interactive = sys.stdin.isatty() and not as_json
    store_chat = chat  # the store keys chats by their Bot API ids (ingest.peers)
    with contextlib.ExitStack() as files:
        memory = None
        group = False
        if config.store_path.exists():
            store = files.enter_context(open_store(config.store_path))
            if store_chat is not None:
                known = {c.chat_id: c for c in store.chats()}
                if store_chat not in known:
                    raise TwinError(f"there is no chat {chat} in the store (see `twin status`)")
                group = known[store_chat].type in GROUP_TYPES
            fit = block_fit(twin.tokenizer, lambda: (twin.system_prompt, prompt_budget(config)))
            memory = files.enter_context(open_recall(config, store, update=False, fit=fit))
        elif store_chat is not None:
            raise TwinError("nothing is imported yet: --chat needs the store")
        if interactive:
            who = f"adapter {twin.version}" if twin.version else "the base model (no adapter yet)"
            print(f"chatting with {who}; {HELP}")
        rules = TurnRules.of(config.dataset, group=group)
        said: list[Said] = []
        for text in _messages(interactive):
            if text in ("/quit", "/exit"):
                return 0
            if text == "/reset":
                said.clear()
                if interactive:
                    print("(conversation forgotten)")
                continue
            said.append(Said("you", "You", text, time.time()))
            prompt = conversation_prompt(twin.system_prompt, said, rules)
            conversation, recall = remembering(memory, prompt, chat=store_chat)
            fitted = fit_prompt(twin.tokenizer, conversation, prompt_budget(config))
            (reply,) = twin.engine.generate([fitted], config.generation, chats=["twin chat"])
            said.append(Said(OWNER, "", reply, time.time()))
            _show(text, reply, recall if show_memory else None, as_json, interactive)
    return 0


def _show(
    message: str, reply: str, recall: Recall | None, as_json: bool, interactive: bool
) -> None:
    if as_json:
        record: dict[str, object] = {"message": message, "reply": reply}
        if recall is not None:
            record["memory"] = [
                {"chat": r.chat_id, "message_id": r.message_id, "text": r.text}
                for r in recall.found
            ]
            record["memory_block"] = recall.block
        print(json.dumps(record, ensure_ascii=False), flush=True)
        return
    if recall is not None:
        for line in recall.block.splitlines() or ["(nothing recalled)"]:
            print(f"memory> {line}")
    if interactive:
        for line in reply.splitlines() or [""]:
            print(f"twin> {line}")
    else:
        print(reply.replace("\n", " / "), flush=True)


def _messages(interactive: bool) -> Iterator[str]:
    while True:
        try:
            line = input("you> ") if interactive else sys.stdin.readline()
        except (EOFError, KeyboardInterrupt):
            if interactive:
                print()
            return
        if not interactive and not line:
            return  # end of input
        text = line.strip()
        if text:
            yield text
