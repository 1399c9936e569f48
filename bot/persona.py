"""/persona: the owner's controls, one small function per subcommand.

Only admins reach `command` (the handler's filter, bot.access); everyone else gets nothing.
Each subcommand returns the text to answer with.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Message, Update
from telegram.error import TelegramError

from bot.as_owner import owner_id
from bot.business_log import MODES, Mode
from bot.chat_log import Where
from bot.context import BotRuntime, TwinContext
from bot.delivery import DeliveryFailed, send_charts, send_with_retry
from bot.drafts import scrubber
from bot.report import adapter_summary, fidelity_charts, loss_chart
from bot.retraining import last_retrain, retrain_running, start_retrain
from ingest.dataset import count_examples
from ingest.memory import open_memory
from ingest.profile import add_fact, fact_listing, forget_fact
from ingest.recall import memory_path
from ingest.selection import chat_selection
from ingest.store import open_store
from serving.engine import AdapterRefused, EngineUnavailable, memory_guidance
from trainer.metrics import AdapterMetrics
from trainer.registry import list_adapters
from twin.core.config import Config
from twin.core.errors import TwinError
from twin.core.overrides import SETTABLE, save_override, settable_keys, with_override

HELP = """/persona commands:
status - adapter, metrics, data, queue, uptime
list - recent adapters and their metrics
use VERSION - serve that adapter
rollback - back to the previous adapter
train - retrain now (ingest, dataset, train, promote)
pause / resume - stop / start answering others
set KEY VALUE - one of: {settable}
prompt TEXT - the persona system prompt ({{name}} = your name)
sample TEXT - what the twin would answer (sent to nobody); rate it 👍 / 👎
report - the current adapter's numbers and charts
facts - your profile facts (shared with every chat) and candidates
fact add TEXT / fact forget N - share a fact / stop sharing it
memory CHAT_ID - what the last reply in that chat recalled
business - your Telegram Business connection, modes, drafts
business auto|draft|off [CHAT] - how the twin answers in your chats (all, or one)
business default CHAT - that chat follows the mode for all again"""


@dataclass(frozen=True)
class Charted:
    """An answer sent as PNG charts, the first with the text as its caption."""

    text: str
    charts: tuple[bytes, ...]


@dataclass(frozen=True)
class Buttoned:
    """An answer with inline buttons under it."""

    text: str
    keyboard: InlineKeyboardMarkup


Answer = str | Charted | Buttoned
Subcommand = Callable[[TwinContext, str], Awaitable[Answer]]


async def command(update: Update, context: TwinContext) -> None:
    message = update.effective_message
    assert message is not None and message.text is not None
    # "/persona prompt You are..." keeps the text after the subcommand as typed (newlines too).
    parts = message.text.split(maxsplit=2)
    name = parts[1].lower() if len(parts) > 1 else "help"
    rest = parts[2].strip() if len(parts) > 2 else ""
    subcommand = SUBCOMMANDS.get(name)
    answer: Answer
    if subcommand is None:
        answer = f"Unknown subcommand {name!r}.\n\n{help_text()}"
    else:
        try:
            answer = await subcommand(context, rest)
        except TwinError as err:
            answer = str(err)
    with contextlib.suppress(DeliveryFailed):
        if isinstance(answer, Charted):
            await send_charts(context.bot, message.chat_id, answer.charts, answer.text)
        elif isinstance(answer, Buttoned):
            await send_with_retry(
                context.bot, message.chat_id, text=answer.text, reply_markup=answer.keyboard
            )
        else:
            await send_with_retry(context.bot, message.chat_id, text=answer)


def help_text() -> str:
    return HELP.format(settable=", ".join(settable_keys()))


async def show_help(context: TwinContext, rest: str) -> str:
    return help_text()


async def status(context: TwinContext, rest: str) -> str:
    runtime = context.runtime
    config = runtime.config
    worker = runtime.worker
    lines = []
    if worker.version is None:
        lines.append("Serving: the base model (no adapter yet)")
    else:
        lines.append(f"Serving: adapter {worker.version}")
        current = [a for a in list_adapters(config.adapters_dir) if a.version == worker.version]
        if current:
            lines.append(f"Held-out loss: {_losses(current[0].metrics)}")
    messages = 0
    if config.store_path.exists():
        with open_store(config.store_path) as store:
            messages = store.count_messages()
    lines.append(f"Data: {count_examples(config.dataset_dir)} examples from {messages} messages")
    # The config in force: /persona set memory_guidance changes it without a restart.
    lines.append(f"Memory guidance: {memory_guidance(config)['line']}")
    last = last_retrain(runtime)
    lines.append(f"Last retrain: {_when(last) if last else 'never'}")
    upcoming = runtime.next_retrain
    lines.append(f"Next retrain: {_when(upcoming.timestamp()) if upcoming else 'not scheduled'}")
    if retrain_running(runtime):
        lines.append("A retrain is running now.")
    if worker.load_problem is not None:
        lines.append(f"The model did not load again after the retrain: {worker.load_problem}")
    stats = worker.stats
    lines.append(
        f"Queue: {worker.queued} waiting; {stats.replies} replies in "
        f"{stats.generate_calls} generate calls"
    )
    lines.append(f"Uptime: {_duration(time.time() - runtime.started)}")
    lines.append("Replying: paused" if runtime.chat_log.paused else "Replying: on")
    corrections = runtime.business.correction_counts()
    lines.append(
        f"Corrections: {corrections['total']}, {corrections['waiting']} waiting for the next "
        f"retrain, {corrections['used']} learned from"
    )
    return "\n".join(lines)


async def list_versions(context: TwinContext, rest: str) -> str:
    adapters = list_adapters(context.runtime.config.adapters_dir)
    if not adapters:
        return "No adapters yet: /persona train makes one."
    return "\n".join(
        f"{a.version} {a.state}: {_losses(a.metrics)}" for a in reversed(adapters[-10:])
    )


async def use(context: TwinContext, rest: str) -> str:
    version = rest.split()[0] if rest else ""
    if not version:
        return "Usage: /persona use VERSION (see /persona list)"
    return await _switch_to(context, version)


async def rollback(context: TwinContext, rest: str) -> str:
    runtime = context.runtime
    adapters = list_adapters(runtime.config.adapters_dir)
    serving = runtime.worker.version
    older = [a for a in adapters if serving is None or a.version < serving]
    previous = [a for a in older if a.state == "ready"]
    if not previous:
        return "There is no earlier adapter to go back to."
    return await _switch_to(context, previous[-1].version)


async def _switch_to(context: TwinContext, version: str) -> str:
    runtime = context.runtime
    adapters_dir = runtime.config.adapters_dir
    if version not in {a.version for a in list_adapters(adapters_dir)}:
        return f"There is no adapter {version} (see /persona list)."
    try:
        await runtime.adapters.switch_to(version)
    except (AdapterRefused, EngineUnavailable, OSError) as err:
        return f"Refused, still serving {runtime.worker.version or 'the base model'}: {err}"
    return f"Now serving adapter {version}."


async def train(context: TwinContext, rest: str) -> str:
    if not start_retrain(context.application):
        return "A retrain is already running; you will get its outcome when it ends."
    return "Retrain started (ingest, dataset, train, promote). I will report when it ends."


async def pause(context: TwinContext, rest: str) -> str:
    context.runtime.chat_log.paused = True
    return "Paused: I stay up and remember messages, but answer nobody until /persona resume."


async def resume(context: TwinContext, rest: str) -> str:
    context.runtime.chat_log.paused = False
    return "Resumed: answering again."


async def set_value(context: TwinContext, rest: str) -> str:
    parts = rest.split()
    if len(parts) != 2:
        return f"Usage: /persona set KEY VALUE\n\n{help_text()}"
    key, value = parts
    sections = [s for s, keys in SETTABLE.items() if key in keys and s != "persona"]
    if not sections:
        settable = [k for s, keys in SETTABLE.items() if s != "persona" for k in keys]
        return f"{key} cannot be set; settable: {', '.join(settable)}"
    return await _apply(context, sections[0], key, value)


async def prompt(context: TwinContext, rest: str) -> str:
    if not rest:
        current = context.runtime.config.persona.system_prompt
        return f"Usage: /persona prompt TEXT\nNow: {current}"
    answer = await _apply(context, "persona", "system_prompt", rest)
    return (
        f"{answer}\nThe current adapter learned with the previous prompt; "
        "the next retrain trains with this one."
    )


async def _apply(context: TwinContext, section: str, key: str, value: str) -> str:
    """Validate (ranges, and that the prompt still fits with the served tokenizer), save, use."""
    runtime = context.runtime
    config = with_override(runtime.config, section, key, value, where="/persona")
    try:
        await runtime.worker.check_prompt_fits(config)
    except TwinError as err:
        raise TwinError(f"refused: {err}") from None
    save_override(config, section, key)
    runtime.worker.set_config(config)
    return f"{key} = {getattr(getattr(config, section), key)!r} (saved)"


async def report(context: TwinContext, rest: str) -> str | Charted:
    adapters = list_adapters(context.runtime.config.adapters_dir)
    current = [a for a in adapters if a.state == "current"]
    if not current:
        return "No adapter in use yet: /persona train makes one."
    charts = [loss_chart(current[0], adapters), *fidelity_charts(current[0])]
    return Charted(adapter_summary(current[0]), tuple(charts))


async def sample(context: TwinContext, rest: str) -> str | Buttoned:
    """What the twin would answer, with 👍 / 👎: a rating is kept (masked) as a correction
    for preference training."""
    if not rest:
        return "Usage: /persona sample TEXT"
    runtime = context.runtime
    reply = await runtime.worker.sample([{"role": "user", "content": rest}])
    text = f"The twin would answer:\n{reply or '(nothing)'}"
    if not reply:
        return text
    scrub = (await scrubber(runtime)).scrub
    sample_id = runtime.business.add_sample(
        [{"role": "user", "content": scrub(rest)}], scrub(reply)
    )
    keyboard = InlineKeyboardMarkup(
        [
            [
                InlineKeyboardButton("👍", callback_data=f"sample:liked:{sample_id}"),
                InlineKeyboardButton("👎", callback_data=f"sample:disliked:{sample_id}"),
            ]
        ]
    )
    return Buttoned(text, keyboard)


# Callback data of a sample's buttons: "sample:liked:12", "sample:disliked:12".
RATING_DATA = re.compile(r"^sample:(liked|disliked):(\d+)$")


async def on_rating(update: Update, context: TwinContext) -> None:
    """An admin's 👍 / 👎 under a /persona sample reply: kept once, as a correction."""
    query = update.callback_query
    assert query is not None
    match = RATING_DATA.match(query.data or "")
    if match is None or query.from_user.id not in context.runtime.config.telegram.admins:
        with contextlib.suppress(TelegramError):
            await query.answer("Only admins rate samples.", show_alert=True)
        return
    verdict: Literal["liked", "disliked"] = "liked" if match.group(1) == "liked" else "disliked"
    rated = context.runtime.business.rate_sample(int(match.group(2)), verdict)
    answer = "Kept for the next retrain's preference stage." if rated else "Already rated."
    with contextlib.suppress(TelegramError):
        await query.answer(answer)
        if rated and isinstance(query.message, Message) and query.message.text:
            mark = "👍" if verdict == "liked" else "👎"
            await query.edit_message_text(f"{query.message.text}\n\n{mark}")


async def facts(context: TwinContext, rest: str) -> str:
    """Mined off the event loop (a long history takes a while; everyone is answered
    meanwhile), and mined again only when the store or the approved facts changed."""
    runtime = context.runtime
    config = runtime.config
    async with runtime.facts_lock:  # a second asker waits for the first mining, then reuses it
        key = await asyncio.to_thread(facts_key, config)
        if runtime.facts_listing is None or runtime.facts_listing[0] != key:
            runtime.facts_listing = (key, await asyncio.to_thread(fact_listing, config))
        return runtime.facts_listing[1]


def facts_key(config: Config) -> tuple[object, ...]:
    """What a facts listing is made from: the approved facts, and the messages of the chats
    the twin uses (their count: a store only grows, by imports and pulls)."""
    with open_memory(memory_path(config)) as index:
        approved = tuple(fact.text for fact in index.facts())
    if not config.store_path.exists():
        return (approved,)
    with open_store(config.store_path) as store:
        uses = chat_selection(store, config, save=False).uses
        used = tuple(chat.chat_id for chat in store.chats() if uses(chat))
        return (approved, used, store.count_messages(), store.owner())


async def fact(context: TwinContext, rest: str) -> str:
    action, _, text = rest.partition(" ")
    config = context.runtime.config
    if action == "add":
        return add_fact(config, text)
    if action == "forget" and text.strip().isdigit():
        return forget_fact(config, int(text))
    return "Usage: /persona fact add TEXT, or /persona fact forget N (see /persona facts)"


async def memory(context: TwinContext, rest: str) -> str:
    """What the last reply in a chat recalled: for the owner's eyes only (admins, private)."""
    chat = rest.strip().split(maxsplit=1)[0] if rest.strip() else ""
    try:
        chat_id = int(chat)
    except ValueError:
        return "Usage: /persona memory CHAT_ID (the chat's id, as in allowed_chats or a user id)"
    recalls = [
        recall
        for where, recall in context.runtime.worker.last_recall.items()
        if where.chat_id == chat_id
    ]
    if not recalls:
        return f"No reply in chat {chat_id} has recalled anything since the bot started."
    return recalls[-1].block or "The last reply there recalled nothing."


async def business(context: TwinContext, rest: str) -> str:
    """Telegram Business: show the connection and modes, or change a mode."""
    words = rest.split()
    if not words:
        owner = await asyncio.to_thread(owner_id, context.runtime.config)
        return _business_status(context.runtime, owner)
    mode = words[0].lower()
    if mode not in (*MODES, "default") or len(words) > 2:
        return f"Usage: /persona business [auto|draft|off|default] [CHAT]\n\n{help_text()}"
    if len(words) == 1:
        if mode == "default":
            return "Usage: /persona business default CHAT (the chat's user id)"
        answer = await _apply(context, "business", "mode", mode)
        return f"{answer}: for every chat without a mode of its own"
    try:
        chat = int(words[1])
    except ValueError:
        return f"{words[1]!r} is not a chat id: use the friend's user id (see /persona business)"
    owner = await asyncio.to_thread(owner_id, context.runtime.config)
    if owner is None:
        return "Who the owner is is not known yet: import an export or set [telegram] admins."
    chosen: Mode | None = next((m for m in MODES if m == mode), None)  # None: "default"
    context.runtime.business.set_chat_mode(Where(chat, 0, owner), chosen)
    if chosen is None:
        return f"Chat {chat} follows the mode for all chats again."
    return f"Chat {chat}: {chosen}"


def _business_status(runtime: BotRuntime, owner: int | None) -> str:
    config = runtime.config
    business_log = runtime.business
    connection = business_log.owner_connection(owner) if owner is not None else None
    if connection is None:
        lines = [
            "Telegram Business: not connected. In Telegram: Settings -> Telegram Business -> "
            "Chatbots, add this bot and let it reply to messages."
        ]
    else:
        state = "on" if connection.enabled else "off (turned off in Telegram)"
        rights = "may reply" if connection.can_reply else "may NOT reply (allow it in Telegram)"
        lines = [f"Telegram Business: connected, {state}; {rights}"]
    lines.append(f"Mode for all chats: {config.business.mode}")
    modes = business_log.chat_modes()
    if modes:
        lines.append(
            "Chats with a mode of their own: "
            + ", ".join(f"{chat} {mode}" for chat, mode in modes.items())
        )
    pending = business_log.pending()
    chats = sorted({draft.where.chat_id for draft in pending})
    lines.append(
        f"Drafts waiting for you: {len(pending)}"
        + (f" (chats {', '.join(map(str, chats))})" if chats else "")
    )
    counts = business_log.correction_counts()
    lines.append(
        f"Corrections: {counts['total']} ({counts['sent']} sent, {counts['edited']} edited, "
        f"{counts['skipped']} skipped), {counts['waiting']} waiting for the next retrain, "
        f"{counts['used']} learned from"
    )
    learn = "on" if config.business.learn else "off"
    lines.append(
        f"Learning from your connected chats: {learn}"
        + (
            f" ({runtime.live_history.waiting} changes wait for the store)"
            if runtime.live_history.waiting
            else ""
        )
    )
    lines.append(
        f"The twin keeps quiet in a chat for {config.business.takeover_minutes:g} min "
        "after you write there yourself."
    )
    return "\n".join(lines)


SUBCOMMANDS: dict[str, Subcommand] = {
    "help": show_help,
    "status": status,
    "list": list_versions,
    "use": use,
    "rollback": rollback,
    "train": train,
    "pause": pause,
    "resume": resume,
    "set": set_value,
    "prompt": prompt,
    "sample": sample,
    "report": report,
    "facts": facts,
    "fact": fact,
    "memory": memory,
    "business": business,
}


def _losses(metrics: AdapterMetrics) -> str:
    return f"{metrics.eval_loss:.3f} (base {metrics.base_eval_loss:.3f})"


def _when(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M %Z", time.localtime(epoch))


def _duration(seconds: float) -> str:
    minutes = int(seconds // 60)
    if minutes >= 60:
        return f"{minutes // 60}h {minutes % 60}m"
    return f"{minutes}m {int(seconds) % 60}s"
