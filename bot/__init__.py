"""bot: the served twin.

- `bot.app`      `twin serve`, the Telegram bot: the entry module, where the Application is built
- `bot.persona`  the /persona admin commands
- `bot.worker`   the model thread that answers every chat, in batches, and swaps adapters
- `bot.serving`  the base model plus an adapter, checked before it is served
- `bot.chat`     `twin chat`, the terminal conversation
"""
