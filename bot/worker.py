"""The model worker: one thread owns the model; every chat's request waits in one bounded queue.

The event loop never runs the model. Requests that queue up while the model is busy go into
the next `generate` call together (left padding, each row stops at its own end of turn), so
16 chats cost little more than one. Several messages from one conversation that arrive before
its request is taken become one reply, as a person answers a burst. Adapter swaps run on the
same thread, so they happen between batches and never drop a queued request. Stopping sets a
flag that the running `generate` checks after every token, so `twin serve` stops within a
token's time even mid-reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from bot.memory import ChatMemory, Where
from ingest.recall import Memory, Recall, open_recall
from ingest.store import open_store
from serving.engine import AdapterRefused, Engine, EngineUnavailable, PromptRefused
from serving.twin import (
    Prompt,
    ServedTwin,
    block_fit,
    conversation_prompt,
    load_served_twin,
    owner_and_language,
    prompt_budget,
    remembering,
    served_prompt,
    swap_adapter,
)
from trainer.registry import current_problem, current_version, newest_promotable, set_current
from twin.core.chat_format import PromptTooLong, fit_prompt, prompt_length
from twin.core.config import MIN_EXCHANGE_TOKENS, Config
from twin.core.conversation import ChatMessage, TurnRules, with_system_prompt
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
# A promoted adapter the engine could not take for a passing reason (EngineUnavailable: its
# server down or busy; OSError: a full disk while converting it) is tried again after these
# many seconds, doubling up to the cap. One refused for itself (AdapterRefused: its files are
# damaged, another base's, not a LoRA) is not tried again while CURRENT points at it.
ADAPTER_RETRY_S = 30.0
ADAPTER_RETRY_MAX_S = 1800.0
PASSING = (EngineUnavailable, OSError, MemoryError)


@dataclass
class _Request:
    future: asyncio.Future[str | None]
    where: Where | None = None  # answer this conversation from memory...
    group: bool = False
    conversation: list[ChatMessage] | None = None  # ...or exactly this conversation


@dataclass(frozen=True)
class _Prompt:
    """A conversation to answer, and where it is (for what the reply may recall)."""

    prompt: Prompt
    chat: int | None  # the store's id of the chat (None: a sample, no chat)
    where: Where | None


@dataclass(frozen=True)
class Swap:
    """The outcome of following the current-adapter pointer."""

    version: str
    refused: str | None = None  # why, when the adapter was refused
    serving: str | None = None  # what serves meanwhile
    waiting: str | None = None  # why, when the engine could not take it now...
    retry_in: float = 0.0  # ...and when it is tried again (seconds)

    @property
    def trouble(self) -> bool:
        """Something the admins should hear about: refused, or not served yet."""
        return bool(self.refused or self.waiting)

    def message(self) -> str:
        if self.refused:
            return (
                f"Adapter {self.version} was refused and {self.serving or 'the base model'} "
                f"keeps serving: {self.refused}"
            )
        if self.waiting:
            return (
                f"Adapter {self.version} is not served yet and {self.serving or 'the base model'} "
                f"keeps serving: {self.waiting}. Trying again in {_seconds(self.retry_in)}, "
                "then less often."
            )
        return f"Now serving adapter {self.version}."


@dataclass
class _Retry:
    at: float  # time.monotonic() of the next try
    wait: float  # seconds since the last one


def _one_line(err: BaseException) -> str:
    """An exception as one short line for the admins (a CUDA error runs to many lines)."""
    lines = str(err).strip().splitlines()
    text = lines[0] if lines else ""
    if not isinstance(err, TwinError):
        text = f"{type(err).__name__}: {text}" if text else type(err).__name__
    return text if len(text) <= 300 else text[:299] + "…"


def _seconds(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 120 else f"{seconds:.0f} s"


@dataclass
class WorkerStats:
    generate_calls: int = 0
    replies: int = 0
    largest_batch: int = 0
    resampled: int = 0  # replies sampled again because the first sample was empty


class ModelWorker:
    def __init__(self, config: Config, memory: ChatMemory) -> None:
        self.config = config  # replaced when admins change settings
        self.memory = memory
        self.stats = WorkerStats()
        self.refused: dict[str, str] = {}  # version -> why, so a broken one is tried once
        self._retry: dict[str, _Retry] = {}  # version -> when to try it again (passing failure)
        self.load_problem: str | None = None  # why the model did not load again, while it does not
        self.reported: set[str] = set()  # CURRENT problems already told to admins
        self.refusals_told: set[str] = set()  # why the engine refused a prompt, told to admins
        self._refused_now: list[str] = []  # ...and not told yet (found on the model thread)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="twin-model")
        self._queue: asyncio.Queue[_Request] = asyncio.Queue(maxsize=config.bot.queue_size)
        self._waiting: dict[Where, _Request] = {}  # conversations queued, not started
        self._twin: ServedTwin | None = None
        self._loaded = asyncio.Event()  # cleared while the model is unloaded for training
        self._stopping = threading.Event()
        # One adapter change at a time, CURRENT written inside it: a reload poll that ran while
        # an admin's switch was loading would read the old CURRENT and swap the old one back.
        self._switching = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self.system_prompt = ""
        self.language = "en"  # the owner's (twin.core.language), for the fixed messages
        self._memory: Memory | None = None  # opened and read on the model thread only
        self._memory_files = contextlib.ExitStack()
        # What the last reply of each conversation recalled (for /persona memory), the
        # conversation replied to last at the end.
        self.last_recall: dict[Where, Recall] = {}
        # Called (on the event loop) with a one-line problem the admins should hear about.
        self.on_problem: Callable[[str], Awaitable[None]] | None = None

    @property
    def version(self) -> str | None:
        return self._twin.version if self._twin else None

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    async def start(self) -> None:
        """Load the base model and start answering; `follow_current` then adds the adapter."""
        await self.load()
        self._task = asyncio.create_task(self._serve(), name="twin-model-worker")

    async def load(self) -> None:
        self._twin = await self._run(load_served_twin, self.config, with_adapter=False)
        self.system_prompt = self._twin.system_prompt
        _, self.language = owner_and_language(self.config)
        await self._run(self._open_memory)
        self._loaded.set()

    def _open_memory(self) -> None:
        """Open the memory index on the model thread, the only thread that reads it (SQLite
        connections stay on their thread). The bot only reads it: ingest and the nightly
        retrain bring it up to date."""
        self._memory_files.close()
        self._memory = None
        if not self.config.memory.enabled or not self.config.store_path.exists():
            return
        assert self._twin is not None
        # The block leaves the prompt room for a message, by the served tokenizer.
        fit = block_fit(
            self._twin.tokenizer, lambda: (self.system_prompt, prompt_budget(self.config))
        )
        with open_store(self.config.store_path) as store:
            self._memory = self._memory_files.enter_context(
                open_recall(self.config, store, update=False, fit=fit)
            )

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
                self.load_problem = _one_line(err)
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
                        f"({self.load_problem}). Trying again in {_seconds(wait)}, then less often."
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

        if self._twin is not None:
            self._twin.engine.close()
        self._twin = None
        self._memory_files.close()
        self._memory = None
        self.refused.clear()
        self._retry.clear()
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def interrupt(self) -> None:
        """Shutting down: a generate in progress ends after its next token, and what it
        wrote so far is never sent (half a reply is worse than none)."""
        self._stopping.set()

    async def stop(self) -> None:
        self.interrupt()
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._run(self._memory_files.close)  # on the thread that opened it
        self._executor.shutdown(wait=True, cancel_futures=True)

    async def check_settings(self, config: Config) -> None:
        """Raise TwinError when, with the served tokenizer, `config`'s system prompt and one
        short message do not fit the prompt budget (the admin gets the reason)."""
        if self._twin is None:
            return
        tokenizer = self._twin.tokenizer
        prompt = served_prompt(config)
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
        self.system_prompt = served_prompt(config)

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

    async def follow_current(self) -> Swap | None:
        """Swap in the adapter CURRENT points to, if it changed (None: nothing to do). A
        damaged CURRENT or current adapter is reported once; what serves keeps serving."""
        async with self._switching:
            return await self._follow_current()

    async def _follow_current(self) -> Swap | None:
        adapters_dir = self.config.adapters_dir
        problem = current_problem(adapters_dir)
        if problem is not None:
            if problem in self.reported:
                return None
            self.reported.add(problem)
            log.error("%s", problem)
            if self.version is None:  # just started: rather the last good twin than the base
                await self._serve_newest_promotable()
            return Swap("CURRENT", refused=problem, serving=self.version)
        version = current_version(adapters_dir)
        # What was refused or waits is kept only while CURRENT points at it: pointed elsewhere
        # (a newer adapter, /persona use) and back, an adapter is tried afresh.
        self.refused = {v: why for v, why in self.refused.items() if v == version}
        self._retry = {v: retry for v, retry in self._retry.items() if v == version}
        if self._twin is None or version in (None, self.version) or version in self.refused:
            return None
        retry = self._retry.get(version)
        if retry is not None and time.monotonic() < retry.at:
            return None
        try:
            await self.use(version)
        except AdapterRefused as err:
            return Swap(version, refused=str(err), serving=self.version)
        except PASSING as err:
            # The adapter may be fine (its server down, the disk full): tried again later.
            wait = ADAPTER_RETRY_S if retry is None else min(retry.wait * 2, ADAPTER_RETRY_MAX_S)
            self._retry[version] = _Retry(time.monotonic() + wait, wait)
            why = _one_line(err)
            log.warning(
                "adapter %s not swapped in yet (%s); next try in %.0f s", version, why, wait
            )
            if retry is not None:
                return None  # the admins heard it at the first failure
            return Swap(version, serving=self.version, waiting=why, retry_in=wait)
        self._retry.pop(version, None)
        return Swap(version)

    async def _serve_newest_promotable(self) -> None:
        version = newest_promotable(self.config.adapters_dir)
        if version is not None:  # `use` refuses (changing nothing) while the model is unloaded
            with contextlib.suppress(AdapterRefused, *PASSING):
                await self.use(version)

    async def switch_to(self, version: str) -> None:
        """Serve `version`, then point CURRENT at it (an admin's choice). Raises as `use`
        does, with CURRENT unchanged: a refused adapter changes nothing."""
        async with self._switching:
            await self.use(version)
            set_current(self.config.adapters_dir, version)

    async def use(self, version: str) -> None:
        """Serve `version` (between batches). Raises AdapterRefused (or EngineUnavailable
        when its server cannot take it now); the old one stays."""
        if self._twin is None:
            raise AdapterRefused("the model is unloaded while a retrain runs; try when it ends")
        folder = self.config.adapters_dir / version
        try:
            await self._run(swap_adapter, self._twin, folder)
        except AdapterRefused as err:
            self.refused[version] = str(err)
            log.error("%s", err)
            raise
        log.info("serving adapter %s", version)

    def prompt_for(self, where: Where, group: bool) -> Prompt:
        """The conversation a reply in `where` is written after: its current session's turns,
        built from memory by the rule the dataset used, after the persona prompt."""
        rules = TurnRules.of(self.config.dataset, group=group)
        return conversation_prompt(self.system_prompt, self.memory.recent(where), rules)

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
        assert self._twin is not None
        twin = self._twin
        budget = prompt_budget(config)
        replies = [""] * len(prompts)
        todo: list[int] = []
        fitted: list[list[ChatMessage]] = []
        for i, item in enumerate(prompts):
            turns = item.prompt.conversation
            # A conversation whose last turn is not a user's (memory cleared meanwhile) gets none.
            if not turns or turns[-1]["role"] != "user":
                continue
            conversation, recall = remembering(self._memory, item.prompt, chat=item.chat)
            if recall is not None and item.where is not None:
                self.last_recall.pop(item.where, None)  # newest last (/persona memory)
                self.last_recall[item.where] = recall
            try:
                fitted.append(fit_prompt(twin.tokenizer, conversation, budget))
            except PromptTooLong as err:
                log.error("no reply: %s", err)
                continue
            todo.append(i)
        asked = [prompts[i] for i in todo]
        outputs = self._answerable(twin.engine, fitted, asked, config)
        outputs = self._resample_empty(twin.engine, fitted, asked, outputs, config)
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
        try:
            return list(engine.generate(fitted, config.generation, stop=self._stopping))
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

    async def _run(self, fn, *args, **kwargs):  # type: ignore[no-untyped-def]
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))
