"""The owner's corrections (bot.db) handed to training as preference pairs' sources.

The bot keeps them (bot.business_log); the trainer may not import the bot, so this module
reads them and turns each into a `trainer.pairs.Correction` whose prompt is the one its draft
was written from, as served: the persona prompt, that chat's memory block, the turns.
"""

from __future__ import annotations

from bot.business_log import BusinessLog
from bot.chat_log import ChatLog, bot_db_path
from serving.twin import served_prompt
from trainer.pairs import Correction
from trainer.train import TrainResult
from twin.core.config import Config
from twin.core.conversation import with_block, with_system_prompt


def read_corrections(config: Config) -> list[Correction]:
    """Every correction kept so far, oldest first; none when preference training is off or
    the bot never ran."""
    path = bot_db_path(config)
    if not config.preference.enabled or not path.exists():
        return []
    with ChatLog(path, config.bot.context_messages) as chat_log:
        kept = BusinessLog(chat_log).corrections()
    system = served_prompt(config)
    return [
        Correction(
            c.correction_id,
            c.chat_id,
            c.verdict,
            with_block(with_system_prompt(system, c.turns), c.block),
            c.draft,
            c.sent,
        )
        for c in kept
    ]


def learned_from(config: Config, result: TrainResult) -> None:
    """The corrections the new adapter learned from (its preference stage was kept) are no
    longer waiting, once it serves (the promotion gate let it in)."""
    stage = result.metrics.preference
    if not result.promoted or stage is None or not stage.corrections_used:
        return
    with ChatLog(bot_db_path(config), config.bot.context_messages) as chat_log:
        BusinessLog(chat_log).mark_used(list(stage.corrections_used))
