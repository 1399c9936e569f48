"""twin: the shared core of the project.

`twin.config` (typed configuration) and, later, the conversation format live here because
ingest, trainer and bot all import them; `twin.cli` is the `twin` command that wires the
three stages together.
"""
