"""bot: the served twin.

- `bot.app`      `twin serve`, the Telegram bot: the entry module, where the Application is built
- `bot.access`   who reaches which handler (PTB filters)
- `bot.context`  what handlers share, typed (PTB ContextTypes)
- `bot.persona`  the /persona admin commands
- `bot.memory`   data_dir/bot.db: each conversation's messages, with numbered migrations
- `bot.worker`   the model thread that answers every chat, in batches, and swaps adapters
  (the served twin itself, and the prompt, are the serving package's: `serving.twin`)
- `bot.chat`     `twin chat`, the terminal conversation
"""
