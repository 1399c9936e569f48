"""bot: the served twin.

- `bot.app`      `twin serve`, the Telegram bot: the entry module, where the Application is built
- `bot.access`   who reaches which handler (PTB filters)
- `bot.context`  what handlers share, typed (PTB ContextTypes)
- `bot.persona`  the /persona admin commands
- `bot.delivery` getting a reply (or a chart) out: one message a line, retried until it lands
- `bot.chat_log` data_dir/bot.db: each conversation's recent messages, with numbered migrations
- `bot.worker`   the model thread that answers every chat, in batches
- `bot.adapters` which adapter serves: follows CURRENT, swaps, refuses a broken one
  (the engines, and the prompt a reply is written after, are the serving package's)
- `bot.retraining`, `bot.schedule`, `bot.report`  retrains from the bot, nightly, reported
- `bot.chat`     `twin chat`, the terminal conversation
"""
