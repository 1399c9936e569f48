"""Which adapter serves: the bot follows the registry's CURRENT pointer, and admins may switch.

A retrain (the nightly one, /persona train, or `twin retrain` by hand) moves CURRENT; the
reload job (`follow_current`, every `[bot] reload_seconds`) swaps the new adapter in on the
model worker's thread, between batches. An adapter refused for itself (AdapterRefused: its
files damaged, another base's, not a LoRA) is reported once and not tried again while CURRENT
points at it; what served keeps serving. One the engine cannot take for a passing reason (its
server down or busy, a full disk while converting it) is tried again later, less and less
often. `/persona use` and `rollback` switch with `switch_to`, which serves first and moves
CURRENT only once it serves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

from bot.worker import ModelWorker, one_line, wait_text
from serving.engine import AdapterRefused, EngineUnavailable
from trainer.registry import current_problem, current_version, newest_promotable, set_current

log = logging.getLogger(__name__)

# A promoted adapter the engine could not take for a passing reason (EngineUnavailable: its
# server down or busy; OSError: a full disk while converting it) is tried again after these
# many seconds, doubling up to the cap. One refused for itself (AdapterRefused: its files are
# damaged, another base's, not a LoRA) is not tried again while CURRENT points at it.
ADAPTER_RETRY_S = 30.0
ADAPTER_RETRY_MAX_S = 1800.0
PASSING = (EngineUnavailable, OSError, MemoryError)


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
                f"keeps serving: {self.waiting}. Trying again in {wait_text(self.retry_in)}, "
                "then less often."
            )
        return f"Now serving adapter {self.version}."


@dataclass
class _Retry:
    at: float  # time.monotonic() of the next try
    wait: float  # seconds since the last one


class AdapterFollower:
    """Keeps the worker's model serving the adapter CURRENT points to (or the admins' pick)."""

    def __init__(self, worker: ModelWorker) -> None:
        self.worker = worker
        self.refused: dict[str, str] = {}  # version -> why, so a broken one is tried once
        self._retry: dict[str, _Retry] = {}  # version -> when to try it again (passing failure)
        # Refusals and retries are the loaded model's: a model loaded again (after a retrain
        # that unloaded it) tries every adapter afresh.
        self._model = worker.loads
        self.reported: set[str] = set()  # CURRENT problems already told to admins
        # One adapter change at a time, CURRENT written inside it: a reload poll that ran while
        # an admin's switch was loading would read the old CURRENT and swap the old one back.
        self._switching = asyncio.Lock()

    async def follow_current(self) -> Swap | None:
        """Swap in the adapter CURRENT points to, if it changed (None: nothing to do). A
        damaged CURRENT or current adapter is reported once; what serves keeps serving."""
        async with self._switching:
            return await self._follow_current()

    async def switch_to(self, version: str) -> None:
        """Serve `version`, then point CURRENT at it (an admin's choice). Raises as `_use`
        does, with CURRENT unchanged: a refused adapter changes nothing."""
        async with self._switching:
            await self._use(version)
            set_current(self.worker.config.adapters_dir, version)

    async def _follow_current(self) -> Swap | None:
        worker = self.worker
        adapters_dir = worker.config.adapters_dir
        self._new_model_starts_afresh()
        problem = current_problem(adapters_dir)
        if problem is not None:
            if problem in self.reported:
                return None
            self.reported.add(problem)
            log.error("%s", problem)
            if worker.version is None:  # just started: rather the last good twin than the base
                await self._serve_newest_promotable()
            return Swap("CURRENT", refused=problem, serving=worker.version)
        version = current_version(adapters_dir)
        # What was refused or waits is kept only while CURRENT points at it: pointed elsewhere
        # (a newer adapter, /persona use) and back, an adapter is tried afresh.
        self.refused = {v: why for v, why in self.refused.items() if v == version}
        self._retry = {v: retry for v, retry in self._retry.items() if v == version}
        if not worker.has_model or version in (None, worker.version) or version in self.refused:
            return None
        retry = self._retry.get(version)
        if retry is not None and time.monotonic() < retry.at:
            return None
        try:
            await self._use(version)
        except AdapterRefused as err:
            return Swap(version, refused=str(err), serving=worker.version)
        except PASSING as err:
            # The adapter may be fine (its server down, the disk full): tried again later.
            wait = ADAPTER_RETRY_S if retry is None else min(retry.wait * 2, ADAPTER_RETRY_MAX_S)
            self._retry[version] = _Retry(time.monotonic() + wait, wait)
            why = one_line(err)
            log.warning(
                "adapter %s not swapped in yet (%s); next try in %.0f s", version, why, wait
            )
            if retry is not None:
                return None  # the admins heard it at the first failure
            return Swap(version, serving=worker.version, waiting=why, retry_in=wait)
        self._retry.pop(version, None)
        return Swap(version)

    async def _serve_newest_promotable(self) -> None:
        version = newest_promotable(self.worker.config.adapters_dir)
        if version is not None:  # `_use` refuses (changing nothing) while the model is unloaded
            with contextlib.suppress(AdapterRefused, *PASSING):
                await self._use(version)

    async def _use(self, version: str) -> None:
        """Serve `version` (between batches). Raises AdapterRefused (or EngineUnavailable
        when its server cannot take it now); the old one stays."""
        if not self.worker.has_model:
            raise AdapterRefused("the model is unloaded while a retrain runs; try when it ends")
        self._new_model_starts_afresh()
        try:
            await self.worker.swap(self.worker.config.adapters_dir / version)
        except AdapterRefused as err:
            self.refused[version] = str(err)
            log.error("%s", err)
            raise
        log.info("serving adapter %s", version)

    def _new_model_starts_afresh(self) -> None:
        if self._model != self.worker.loads:
            self._model = self.worker.loads
            self.refused.clear()
            self._retry.clear()
