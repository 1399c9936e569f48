"""`twin chat`: talk to the current twin in the terminal, with the bot's prompt and settings."""

from __future__ import annotations

from bot.serving import load_served_twin
from twin.chat_format import ChatMessage, with_system_prompt
from twin.config import Config
from twin.generation import generate_replies

HELP = "type a message; /reset forgets the conversation, /quit (or Ctrl-D) leaves"


def run_terminal_chat(config: Config) -> int:
    twin = load_served_twin(config)
    who = f"adapter {twin.version}" if twin.version else "the base model (no adapter yet)"
    print(f"chatting with {who}; {HELP}")
    history: list[ChatMessage] = []
    while True:
        try:
            text = input("you> ").strip()
        except (EOFError, KeyboardInterrupt):
            print()
            return 0
        if not text:
            continue
        if text in ("/quit", "/exit"):
            return 0
        if text == "/reset":
            history.clear()
            print("(conversation forgotten)")
            continue
        history.append({"role": "user", "content": text})
        conversation = with_system_prompt(twin.system_prompt, history)
        (reply,) = generate_replies(twin.model, twin.tokenizer, [conversation], config.generation)
        history.append({"role": "assistant", "content": reply})
        for line in reply.splitlines() or [""]:
            print(f"twin> {line}")
