"""The model worker: one thread owns the model; every chat's request waits in one bounded queue.

The event loop never runs the model. Requests that queue up while the model is busy go into
the next `generate` call together (left padding, each row stops at its own end of turn), so
16 chats cost little more than one. Several messages from one chat that arrive before its
request is taken become one reply, as a person answers a burst. Adapter swaps run on the same
thread, so they happen between batches and never drop a queued request.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from bot.memory import ChatMemory
from bot.serving import AdapterRefused, ServedTwin, load_served_twin, served_prompt, swap_adapter
from trainer.registry import current_version
from twin.chat_format import ChatMessage, fit_prompt, with_system_prompt
from twin.config import Config
from twin.generation import generate_replies

log = logging.getLogger(__name__)


@dataclass
class _Request:
    future: asyncio.Future[str]
    chat_id: int | None = None  # answer this chat from its memory...
    conversation: list[ChatMessage] | None = None  # ...or exactly this conversation


@dataclass(frozen=True)
class Swap:
    """The outcome of following the current-adapter pointer."""

    version: str
    refused: str | None = None  # why, when the adapter was refused
    serving: str | None = None  # what serves meanwhile

    def message(self) -> str:
        if self.refused:
            return (
                f"Adapter {self.version} was refused and {self.serving or 'the base model'} "
                f"keeps serving: {self.refused}"
            )
        return f"Now serving adapter {self.version}."


@dataclass
class WorkerStats:
    generate_calls: int = 0
    replies: int = 0
    largest_batch: int = 0


class ModelWorker:
    def __init__(self, config: Config, memory: ChatMemory) -> None:
        self.config = config  # replaced when admins change settings
        self.memory = memory
        self.stats = WorkerStats()
        self.refused: dict[str, str] = {}  # version -> why, so a broken one is tried once
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="twin-model")
        self._queue: asyncio.Queue[_Request] = asyncio.Queue(maxsize=config.bot.queue_size)
        self._waiting: dict[int, _Request] = {}  # chats whose request is queued, not started
        self._twin: ServedTwin | None = None
        self._loaded = asyncio.Event()  # cleared while the model is unloaded for training
        self._task: asyncio.Task[None] | None = None
        self.system_prompt = ""

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
        self._loaded.set()

    async def unload(self) -> None:
        """Free the model's memory (for training on the same GPU); requests wait in the queue
        until `load` and are answered then."""
        self._loaded.clear()
        await self._run(self._drop_model)
        log.info("model unloaded while training; messages wait")

    def _drop_model(self) -> None:
        import gc

        import torch

        self._twin = None
        self.refused.clear()
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._executor.shutdown(wait=True)

    def set_config(self, config: Config) -> None:
        """Admins changed a setting: later batches use it (the prompt too)."""
        self.config = config
        self.system_prompt = served_prompt(config)

    async def answer(self, chat_id: int) -> str | None:
        """The twin's reply to `chat_id`'s latest messages; None when a request of this chat
        is already waiting (that reply will cover this message too)."""
        if chat_id in self._waiting:
            return None
        request = _Request(asyncio.get_running_loop().create_future(), chat_id=chat_id)
        self._waiting[chat_id] = request
        await self._queue.put(request)
        return await request.future

    async def sample(self, conversation: list[ChatMessage]) -> str:
        """The reply to a given conversation (persona prompt added), sent to nobody."""
        request = _Request(asyncio.get_running_loop().create_future(), conversation=conversation)
        await self._queue.put(request)
        return await request.future

    async def follow_current(self) -> Swap | None:
        """Swap in the adapter CURRENT points to, if it changed (None: nothing to do)."""
        version = current_version(self.config.adapters_dir)
        if self._twin is None or version in (None, self.version) or version in self.refused:
            return None
        try:
            await self.use(version)
        except AdapterRefused as err:
            return Swap(version, refused=str(err), serving=self.version)
        return Swap(version)

    async def use(self, version: str) -> None:
        """Serve `version` (between batches). Raises AdapterRefused; the old one stays."""
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

    async def _serve(self) -> None:
        while True:
            batch = [await self._queue.get()]
            await self._loaded.wait()
            while len(batch) < self.config.bot.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            conversations = []
            for request in batch:
                if request.chat_id is not None:
                    self._waiting.pop(request.chat_id, None)
                    turns = self.memory.recent(request.chat_id)
                else:
                    turns = request.conversation or []
                conversations.append(with_system_prompt(self.system_prompt, turns))
            try:
                replies = await self._run(self._generate, conversations, self.config)
            except Exception as err:  # the model failed: every waiting handler learns it
                log.exception("generation failed for a batch of %d", len(batch))
                for request in batch:
                    request.future.set_exception(err)
                continue
            for request, reply in zip(batch, replies, strict=True):
                if not request.future.done():
                    request.future.set_result(reply)

    def _generate(self, conversations: list[list[ChatMessage]], config: Config) -> list[str]:
        """Runs on the model thread."""
        assert self._twin is not None
        twin = self._twin
        budget = max(config.bot.context_tokens - config.generation.max_new_tokens, 16)
        fitted = [fit_prompt(twin.tokenizer, c, budget) for c in conversations]
        # A conversation whose last turn is not a user's (memory cleared meanwhile) gets none.
        todo = [i for i, c in enumerate(fitted) if c and c[-1]["role"] == "user"]
        replies = [""] * len(fitted)
        outputs = generate_replies(
            twin.model, twin.tokenizer, [fitted[i] for i in todo], config.generation
        )
        self.stats.generate_calls += 1 if todo else 0
        self.stats.largest_batch = max(self.stats.largest_batch, len(todo))
        self.stats.replies += len(todo)
        for i, reply in zip(todo, outputs, strict=True):
            replies[i] = reply
        return replies

    async def _run(self, fn, *args, **kwargs):  # type: ignore[no-untyped-def]
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))
