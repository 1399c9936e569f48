"""`twin status`: what is stored, built and trained. Light on purpose: it imports no model
library (torch, transformers, telethon), so it answers in a fraction of a second."""

from __future__ import annotations

from typing import Any

from bot.business_log import VERDICTS, BusinessLog
from bot.chat_log import ChatLog, bot_db_path
from ingest.dataset import count_examples
from ingest.selection import chat_selection
from ingest.store import open_store
from serving.engine import memory_guidance
from trainer.registry import current_problem, current_version, list_adapters
from twin.core.config import Config
from twin.core.runs import read_records


def status_of(config: Config) -> dict[str, Any]:
    """What `twin status --json` prints: counts, versions and numbers; never message text."""
    status: dict[str, Any] = {"data_dir": str(config.data_dir), "messages": 0, "chats": 0}
    owner = None
    # [ingest] include_chats / exclude_chats entries that match no chat (ingest.selection).
    status["chat_list_notes"] = []
    if config.store_path.exists():
        with open_store(config.store_path) as store:
            status["messages"] = store.count_messages()
            status["chats"] = store.count_chats()
            owner = store.owner()
            status["chat_list_notes"] = chat_selection(store, config, save=False).notes()
    status["owner"] = owner.name if owner else None
    status["owner_id"] = owner.user_id if owner else None
    status["examples"] = count_examples(config.dataset_dir)
    status["adapter"] = current_version(config.adapters_dir)
    status["adapter_problem"] = current_problem(config.adapters_dir)
    status["adapters"] = [a.as_json() for a in list_adapters(config.adapters_dir)]
    status["memory_guidance"] = memory_guidance(config)
    status["corrections"] = corrections(config)
    runs = read_records(config.data_dir)
    last = runs[-1] if runs else None
    status["last_run"] = (
        None
        if last is None
        else {"started": last.started, "outcome": last.outcome, "reason": last.reason}
    )
    return status


def corrections(config: Config) -> dict[str, int]:
    """The owner's verdicts on Telegram Business drafts and rated /persona samples, kept in
    bot.db (see bot.drafts)."""
    path = bot_db_path(config)
    if not path.exists():
        return {"total": 0, "waiting": 0, "used": 0, **dict.fromkeys(VERDICTS, 0)}
    with ChatLog(path, config.bot.context_messages) as chat_log:
        return BusinessLog(chat_log).correction_counts()


def print_status(status: dict[str, Any]) -> None:
    owner = status["owner"]
    if owner is None and status["owner_id"] is None:
        who = "unknown (nothing imported yet)"
    else:
        who = f"{owner or '?'} (user id {status['owner_id'] or 'unknown'})"
    print(f"data dir: {status['data_dir']}")
    print(f"owner:    {who}")
    print(f"store:    {status['messages']} messages in {status['chats']} chats")
    print(f"dataset:  {status['examples']} examples")
    for note in status["chat_list_notes"]:
        print(f"note:     {note}")
    print(f"adapter:  {status['adapter'] or 'none yet (twin train)'}")
    if status["adapter_problem"]:
        print(f"          {status['adapter_problem']}")
    print(f"memory guidance: {status['memory_guidance']['line']}")
    fixes = status["corrections"]
    print(
        f"corrections: {fixes['total']} (drafts you sent, edited or skipped; samples rated): "
        f"{fixes['waiting']} waiting for the next retrain, {fixes['used']} learned from"
    )
    run = status["last_run"]
    if run:
        print(f"last run: {run['started']} {run['outcome']}: {run['reason']}")
    for adapter in status["adapters"][-5:]:
        print(
            f"  {adapter['version']}  {adapter['state']:<8}  held-out loss "
            f"{adapter['base_eval_loss']:.3f} -> {adapter['eval_loss']:.3f}"
        )
