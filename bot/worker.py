"""The model worker: one thread owns the model; every chat's request waits in one bounded queue.

The event loop never runs the model. Requests that queue up while the model is busy go into
the next `generate` call together (left padding, each row stops at its own end of turn), so
16 chats cost little more than one. Several messages from one conversation that arrive before
its request is taken become one reply, as a person answers a burst. Adapter swaps (which
adapter, and when: bot.adapters) run on the same thread, so they happen between batches and
never drop a queued request. Stopping sets a flag that the running `generate` checks after
every token, so `twin serve` stops within a token's time even mid-reply.

The worker holds what replies are written with, once: the config (admins' settings replace
it), the owner's name and language (read from the store on the model thread at each load),
and the recall index; the persona system prompt is made from them when it is needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.chat_log import ChatLog, Where
from ingest.recall import Memory, Recall, open_recall
from ingest.selection import chat_selection
from ingest.store import open_store
from serving.engine import Engine, EngineUnavailable, PromptRefused
from serving.twin import (
    Prompt,
    block_fit,
    conversation_prompt,
    load_engine,
    owner_and_language,
    prompt_budget,
    remembering,
)
from twin.core.chat_format import PromptTooLong, fit_prompt, prompt_length
from twin.core.config import MIN_EXCHANGE_TOKENS, Config
from twin.core.conversation import ChatMessage, TurnRules, persona_prompt, with_system_prompt
from twin.core.errors import TwinError

log = logging.getLogger(__name__)

# An engine that cannot answer (its server down) is tried again after these many seconds,
# doubling up to the cap; the batch waits at the head of the queue meanwhile, nothing dropped.
ENGINE_RETRY_S = 2.0
ENGINE_RETRY_MAX_S = 60.0
# Loading the model again after a retrain that unloaded it can fail (the GPU still busy, out of
# memory): the admins are told once, and it is tried again after these many seconds, doubling
# up to the cap, until it loads; messages wait meanwhile, nothing dropped.
RELOAD_RETRY_S = 30.0
RELOAD_RETRY_MAX_S = 600.0


@dataclass
class _Request:
    future: asyncio.Future[str | None]
    where: Where | None = None  # answer this conversation from the chat log...
    group: bool = False
    conversation: list[ChatMessage] | None = None  # ...or exactly this conversation


@dataclass(frozen=True)
class _Prompt:
    """A conversation to answer, and where it is (for what the reply may recall)."""

    prompt: Prompt
    chat: int | None  # the store's id of the chat (None: a sample, no chat)
    where: Where | None


def _chat_key(where: Where | None) -> str | None:
    """The engine's name for a conversation (what it keeps of one is kept under it)."""
    return None if where is None else f"{where.business}/{where.chat_id}/{where.thread_id}"


def one_line(err: BaseException) -> str:
    """An exception as one short line for the admins (a CUDA error runs to many lines)."""
    lines = str(err).strip().splitlines()
    text = lines[0] if lines else ""
    if not isinstance(err, TwinError):
        text = f"{type(err).__name__}: {text}" if text else type(err).__name__
    return text if len(text) <= 300 else text[:299] + "…"


def wait_text(seconds: float) -> str:
    """A wait before trying again, for the admins: "30 s", "4 min"."""
    return f"{seconds / 60:.0f} min" if seconds >= 120 else f"{seconds:.0f} s"


@dataclass
class WorkerStats:
    generate_calls: int = 0
    replies: int = 0
    largest_batch: int = 0
    resampled: int = 0  # replies sampled again because the first sample was empty


class ModelWorker:
    def __init__(self, config: Config, chat_log: ChatLog) -> None:
        self.config = config  # the bot's one copy; replaced when admins change settings
        self.chat_log = chat_log
        self.stats = WorkerStats()
        self.owner: str | None = None  # the owner's name, as the store knew it at load
        self.language = "en"  # the owner's (twin.core.language), for the fixed messages
        self.loads = 0  # models loaded so far (bot.adapters: a model loaded again starts afresh)
        self.load_problem: str | None = None  # why the model did not load again, while it does not
        self.refusals_told: set[str] = set()  # why the engine refused a prompt, told to admins
        self._refused_now: list[str] = []  # ...and not told yet (found on the model thread)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="twin-model")
        self._queue: asyncio.Queue[_Request] = asyncio.Queue(maxsize=config.bot.queue_size)
        self._waiting: dict[Where, _Request] = {}  # conversations queued, not started
        self._engine: Engine | None = None
        self._loaded = asyncio.Event()  # cleared while the model is unloaded for training
        self._stopping = threading.Event()
        self._task: asyncio.Task[None] | None = None
        self._recall: Memory | None = None  # the recall index, read on the model thread only
        self._recall_files = contextlib.ExitStack()
        self._history_added = False  # the store gained messages since memory was updated
        # What the last reply of each conversation recalled (for /persona memory), the
        # conversation replied to last at the end.
        self.last_recall: dict[Where, Recall] = {}
        # Called (on the event loop) with a one-line problem the admins should hear about.
        self.on_problem: Callable[[str], Awaitable[None]] | None = None

    @property
    def version(self) -> str | None:
        """The adapter served now (None: the base model)."""
        return self._engine.version if self._engine else None

    @property
    def has_model(self) -> bool:
        """False while the model is unloaded (a retrain that pauses serving)."""
        return self._engine is not None

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    @property
    def system_prompt(self) -> str:
        """The persona system prompt, exactly as the dataset wrote it into training examples:
        the config's, with the owner's name, in the owner's language."""
        return persona_prompt(self.config, self.owner, self.language)

    async def start(self) -> None:
        """Load the base model and start answering; bot.adapters then adds the adapter."""
        await self.load()
        self._task = asyncio.create_task(self._serve(), name="twin-model-worker")

    async def load(self) -> None:
        await self._run(self._load)
        self._loaded.set()

    def _load(self) -> None:
        """On the model thread: whom the twin speaks as, the base model, the recall index."""
        self.owner, self.language = owner_and_language(self.config)
        self._engine = load_engine(self.config)
        self.loads += 1
        self._open_recall()

    def _open_recall(self) -> None:
        """Open the recall index on the model thread, the only thread that reads it (SQLite
        connections stay on their thread). The bot only reads it: ingest and the nightly
        retrain bring it up to date."""
        self._recall_files.close()
        self._recall = None
        if not self.config.memory.enabled or not self.config.store_path.exists():
            return
        assert self._engine is not None
        # The block leaves the prompt room for a message, by the served tokenizer.
        fit = block_fit(
            self._engine.tokenizer, lambda: (self.system_prompt, prompt_budget(self.config))
        )
        with open_store(self.config.store_path) as store:
            self._recall = self._recall_files.enter_context(
                open_recall(self.config, store, update=False, fit=fit)
            )

    def history_added(self) -> None:
        """The store gained messages while serving (Telegram Business live history): memory
        indexes them before the next reply is written, on the model thread."""
        self._history_added = True

    def _catch_up_memory(self, config: Config) -> None:
        """On the model thread: index what is new in the store (incremental, as after an
        import). A failure costs memory its newest messages, never a reply."""
        if not self._history_added or not self.config.memory.enabled:
            return
        self._history_added = False
        try:
            if self._recall is None:  # the live history made the store: memory starts now
                self._open_recall()
            memory = self._recall
            if memory is None:
                return
            with open_store(config.store_path) as store:
                memory.index.update(
                    store,
                    memory.scrubber,
                    memory.embedder,
                    select=chat_selection(store, config, save=False).uses,
                    progress=False,
                )
        except Exception:
            log.exception("indexing the live history into memory failed")

    async def load_again(self) -> None:
        """Load the model after `unload`, trying until it loads (told to the admins once, and
        when it is back); requests wait in the queue meanwhile. Cancelling it (the bot
        stopping) stops trying."""
        wait = RELOAD_RETRY_S
        failures = 0
        while True:
            try:
                await self.load()
            except Exception as err:
                failures += 1
                self.load_problem = one_line(err)
                try:
                    await self._run(self._drop_model)  # whatever half loaded
                except Exception:
                    log.exception("freeing a model that half loaded failed")
                log.error(
                    "loading the model again failed (%s); trying again in %.0f s",
                    self.load_problem,
                    wait,
                )
                if failures == 1:
                    await self._tell(
                        "Replies are waiting: loading the model again after the retrain failed "
                        f"({self.load_problem}). Trying again in {wait_text(wait)}, then less "
                        "often."
                    )
                await asyncio.sleep(wait)
                wait = min(wait * 2, RELOAD_RETRY_MAX_S)
                continue
            self.load_problem = None
            if failures:
                tries = "try" if failures == 1 else "tries"
                log.info("the model is loaded again after %d failed %s", failures, tries)
                await self._tell(
                    f"The model is loaded again (after {failures} failed {tries}): answering."
                )
            return

    async def _tell(self, problem: str) -> None:
        if self.on_problem is not None:
            await self.on_problem(problem)

    async def unload(self) -> None:
        """Free the model's memory (for training on the same GPU); requests wait in the queue
        until `load` and are answered then."""
        self._loaded.clear()
        await self._run(self._drop_model)
        log.info("model unloaded while training; messages wait")

    def _drop_model(self) -> None:
        import gc

        import torch

        if self._engine is not None:
            self._engine.close()
        self._engine = None
        self._recall_files.close()
        self._recall = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    async def swap(self, folder: Path) -> None:
        """Serve the adapter in `folder`, between batches (on the model thread). Raises as the
        engine's `swap` does (AdapterRefused, with nothing changed)."""
        assert self._engine is not None, "no model to swap an adapter into"
        await self._run(self._engine.swap, folder)

    def interrupt(self) -> None:
        """Shutting down: a generate in progress ends after its next token, and what it
        wrote so far is never sent (half a reply is worse than none)."""
        self._stopping.set()

    async def stop(self) -> None:
        self.interrupt()
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._run(self._recall_files.close)  # on the thread that opened it
        self._executor.shutdown(wait=True, cancel_futures=True)

    async def check_prompt_fits(self, config: Config) -> None:
        """Raise TwinError when, with the served tokenizer, `config`'s system prompt and one
        short message do not fit the prompt budget (the admin gets the reason)."""
        if self._engine is None:
            return
        tokenizer = self._engine.tokenizer
        prompt = persona_prompt(config, self.owner, self.language)
        probe = with_system_prompt(prompt, [{"role": "user", "content": "hi"}])
        needed = await self._run(prompt_length, tokenizer, probe) + MIN_EXCHANGE_TOKENS
        if needed > prompt_budget(config):
            raise TwinError(
                f"the persona system prompt and one message take {needed} tokens with the "
                f"served tokenizer, but [bot] context_tokens {config.bot.context_tokens} minus "
                f"[generation] max_new_tokens {config.generation.max_new_tokens} leaves "
                f"{prompt_budget(config)}: raise context_tokens, lower max_new_tokens or "
                "shorten the prompt"
            )

    def set_config(self, config: Config) -> None:
        """Admins changed a setting: later batches use it (the prompt too)."""
        self.config = config

    async def answer(self, where: Where, *, group: bool) -> str | None:
        """The twin's reply to the conversation's latest messages; None when a request of
        this conversation is already waiting (that reply will cover this message too)."""
        if where in self._waiting:
            return None
        request = _Request(asyncio.get_running_loop().create_future(), where=where, group=group)
        self._waiting[where] = request
        await self._queue.put(request)
        return await request.future

    async def sample(self, conversation: list[ChatMessage]) -> str:
        """The reply to a given conversation (persona prompt added), sent to nobody."""
        request = _Request(asyncio.get_running_loop().create_future(), conversation=conversation)
        await self._queue.put(request)
        return await request.future or ""

    def prompt_for(self, where: Where, group: bool) -> Prompt:
        """The conversation a reply in `where` is written after: its current session's turns,
        built from the chat log by the rule the dataset used, after the persona prompt."""
        rules = TurnRules.of(self.config.dataset, group=group)
        return conversation_prompt(self.system_prompt, self.chat_log.recent(where), rules)

    async def _serve(self) -> None:
        while True:
            batch = [await self._queue.get()]
            await self._loaded.wait()
            while len(batch) < self.config.bot.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            conversations: list[_Prompt] = []
            for request in batch:
                if request.where is not None:
                    self._waiting.pop(request.where, None)
                    prompt = self.prompt_for(request.where, request.group)
                    chat = request.where.chat_id  # the store keys chats as the Bot API
                    conversations.append(_Prompt(prompt, chat, request.where))
                else:
                    sample = with_system_prompt(self.system_prompt, request.conversation or [])
                    conversations.append(_Prompt(Prompt(sample, None), None, None))
            try:
                replies = await self._generate_until_served(conversations)
            except Exception as err:  # the model failed: every waiting handler learns it
                log.exception("generation failed for a batch of %d", len(batch))
                for request in batch:
                    if not request.future.done():
                        request.future.set_exception(err)
                continue
            interrupted = self._stopping.is_set()
            for request, reply in zip(batch, replies, strict=True):
                if not request.future.done():
                    request.future.set_result(None if interrupted else reply)

    async def _generate_until_served(self, conversations: list[_Prompt]) -> list[str]:
        """Generate, waiting out an engine that is unavailable (told to admins once per
        outage): messages are answered late rather than lost. A prompt the engine refuses
        costs its own reply only (the admins told once per reason)."""
        wait = ENGINE_RETRY_S
        told = False
        while True:
            try:
                replies = await self._run(self._generate, conversations, self.config)
            except EngineUnavailable as err:
                if self._stopping.is_set():  # cut off by the stop: nothing is sent anyway
                    return [""] * len(conversations)
                log.error("the engine cannot answer (%s); retrying in %.0f s", err, wait)
                if not told and self.on_problem is not None:
                    told = True
                    await self.on_problem(f"Replies are waiting: {err}")
                await asyncio.sleep(wait)
                wait = min(wait * 2, ENGINE_RETRY_MAX_S)
                continue
            refused, self._refused_now = self._refused_now, []
            for why in dict.fromkeys(refused):
                if why not in self.refusals_told and self.on_problem is not None:
                    self.refusals_told.add(why)
                    await self.on_problem(
                        f"A reply was not sent: {why}. Other chats are answered; later "
                        "refusals like this one are only logged."
                    )
            return replies

    def _generate(self, prompts: list[_Prompt], config: Config) -> list[str]:
        """Runs on the model thread: recall, fit, generate."""
        assert self._engine is not None
        self._catch_up_memory(config)
        engine = self._engine
        budget = prompt_budget(config)
        replies = [""] * len(prompts)
        todo: list[int] = []
        fitted: list[list[ChatMessage]] = []
        for i, item in enumerate(prompts):
            turns = item.prompt.conversation
            # A conversation whose last turn is not a user's (its log cleared meanwhile) gets none.
            if not turns or turns[-1]["role"] != "user":
                continue
            conversation, recall = remembering(self._recall, item.prompt, chat=item.chat)
            if recall is not None and item.where is not None:
                self.last_recall.pop(item.where, None)  # newest last (/persona memory)
                self.last_recall[item.where] = recall
            try:
                fitted.append(fit_prompt(engine.tokenizer, conversation, budget))
            except PromptTooLong as err:
                log.error("no reply: %s", err)
                continue
            todo.append(i)
        asked = [prompts[i] for i in todo]
        outputs = self._answerable(engine, fitted, asked, config)
        outputs = self._resample_empty(engine, fitted, asked, outputs, config)
        self.stats.largest_batch = max(self.stats.largest_batch, len(todo))
        self.stats.replies += len(todo)
        for i, reply in zip(todo, outputs, strict=True):
            replies[i] = reply or ""
        return replies

    def _answerable(
        self, engine: Engine, fitted: list[list[ChatMessage]], asked: list[_Prompt], config: Config
    ) -> list[str | None]:
        """The engine's replies to `fitted`. A prompt it refuses for good (PromptRefused: a
        server's 400 for a chat over its context) gets None, found by asking in halves, and
        the rest of the batch is answered."""
        if not fitted:
            return []
        self.stats.generate_calls += 1
        log.debug("generating a batch of %d", len(fitted))
        try:
            chats = [_chat_key(p.where) for p in asked]
            return list(
                engine.generate(fitted, config.generation, stop=self._stopping, chats=chats)
            )
        except PromptRefused as err:
            if len(fitted) > 1:
                half = len(fitted) // 2
                return self._answerable(
                    engine, fitted[:half], asked[:half], config
                ) + self._answerable(engine, fitted[half:], asked[half:], config)
            where = asked[0].where
            log.error("no reply for %s: %s", f"chat {where.chat_id}" if where else "a sample", err)
            self._refused_now.append(str(err))
            return [None]

    def _resample_empty(
        self,
        engine: Engine,
        fitted: list[list[ChatMessage]],
        asked: list[_Prompt],
        outputs: list[str | None],
        config: Config,
    ) -> list[str | None]:
        """A sampled reply can be empty (the model ended its turn at once); silence would look
        like a lost message, so those conversations are sampled once more. Greedy decoding
        would only repeat itself, and a bot that is stopping asks for nothing new."""
        empty = [k for k, reply in enumerate(outputs) if reply == ""]
        if not empty or config.generation.temperature <= 0 or self._stopping.is_set():
            return outputs
        again = self._answerable(
            engine, [fitted[k] for k in empty], [asked[k] for k in empty], config
        )
        self.stats.resampled += len(empty)
        outputs = list(outputs)
        for k, reply in zip(empty, again, strict=True):
            outputs[k] = reply
        return outputs

    async def _run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))
