"""bot: the served twin.

- `bot.serving`  the base model plus the current adapter and the persona prompt
- `bot.chat`     `twin chat`, the terminal conversation
The Telegram bot itself (`twin serve`) builds on `bot.serving`.
"""
