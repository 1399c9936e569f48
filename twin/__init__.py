"""twin: the shared ground floor and the application shell on the roof.

- `twin.core`  what every stage imports: typed config, errors, private files, SQLite
               migrations, the conversation (turns from messages) and its token format,
               generation, run records, the admins' settings
- `twin.app`   the `twin` command (`twin.app.cli`), the retrain pipeline, the demo, status
"""
