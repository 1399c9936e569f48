"""twin: the shared ground floor and the application shell on the roof.

- `twin.core`  what every stage imports: typed config (`loading.load_config` reads it, with
               the admins' overrides), errors, private files, SQLite migrations, the
               conversation (turns from messages) and its token format, run records
- `twin.app`   the `twin` command (`twin.app.cli`), the retrain pipeline, the demo, status
"""
