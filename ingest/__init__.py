"""ingest: the owner's Telegram (and WhatsApp) history into the local store, and out of it the
dataset.

Entry points (each used by one `twin` subcommand):
- `ingest.export.import_export`   `twin ingest export PATH`: a Telegram Desktop export
- `ingest.telegram.run_pull`      `twin ingest telegram`: incremental pull with Telethon
- `ingest.whatsapp.import_whatsapp` `twin ingest whatsapp PATH`: a WhatsApp chat export
- `ingest.dataset.build_dataset`  `twin dataset`: dialog examples, PII masked, train/eval split
The store itself (`ingest.store`) is the only thing the other modules share; voice messages
become words through `ingest.voice` in all three importers (and in the bot).
"""
