"""bot: the served twin.

- `bot.app`      `twin serve`, the Telegram bot: the entry module, where the Application is built
- `bot.access`   who reaches which handler (PTB filters)
- `bot.context`  what handlers share, typed (PTB ContextTypes)
- `bot.persona`  the /persona admin commands
- `bot.delivery` getting a reply (or a chart) out: one message a line, retried until it lands
- `bot.chat_log` data_dir/bot.db: each conversation's recent messages, with numbered migrations
- `bot.messages` what the twin reads of a Telegram message (text, or a media placeholder)
- `bot.business` Telegram Business: the owner's own chats (connections, friends' messages, the
  owner taking over, edits, deletions); `bot.drafts` the owner's Send / Edit / Skip;
  `bot.as_owner` who the owner is and speaking as them; `bot.business_log` its bot.db
  tables; `bot.live_history` connected chats' messages into the store
- `bot.worker`   the model thread that answers every chat, in batches
- `bot.adapters` which adapter serves: follows CURRENT, swaps, refuses a broken one
  (the engines, and the prompt a reply is written after, are the serving package's)
- `bot.retraining`, `bot.schedule`, `bot.report`  retrains from the bot, nightly, reported
- `bot.chat`     `twin chat`, the terminal conversation
"""
