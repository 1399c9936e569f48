"""The openai engine: the twin served by an OpenAI-compatible server (vLLM; SGLang speaks the
same), for owners with a GPU box. The server holds the training base and twin's adapters:

    VLLM_ALLOW_RUNTIME_LORA_UPDATING=True vllm serve BASE --enable-lora \\
        --max-lora-rank 16 [--api-key KEY]          # >= [lora] r; the key: TWIN_ENGINE_API_KEY

twin renders every prompt itself, with its own chat format and the training base's tokenizer,
and sends the token ids to `/completions`: never the chat endpoint, whose template is the
server's, and never text, which the server would tokenize again (adding a BOS of its own by
default). What is served is exactly what was trained. Replies stop on the end-of-turn tokens
twin's own generation stops on.

Each adapter version is loaded under its own name, `twin-<version>`, which never names other
weights: loading new weights under a name already used can serve the old ones (vLLM issues
#42125, #31326). A swap loads the new one, switches
the replies to it, then unloads the old one. A server that already holds the name (twin
restarted, the server did not) counts as loaded; one that lost it (the server restarted, twin
did not: completions answer 404) gets it loaded again, once. An adapter is checked here first
(readable, finite, trained on the configured base), so a broken one never reaches the server.

Refused or dropped connections and 5xx answers are retried with exponential backoff (tenacity,
a few seconds in all), then raise EngineUnavailable with one line naming the URL and the
status: never a prompt, a reply, or the key.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from tenacity import RetryCallState, Retrying, retry_if_exception_type, wait_exponential

from trainer.engines import AdapterRefused, EngineUnavailable
from trainer.engines.checks import read_adapter
from trainer.model import base_checkpoint, load_tokenizer
from twin.core.chat_format import encode_prompt
from twin.core.config import Config, GenerationConfig
from twin.core.conversation import ChatMessage
from twin.core.generation import stop_tokens

log = logging.getLogger(__name__)

API_KEY_ENV = "TWIN_ENGINE_API_KEY"
ADAPTER_PREFIX = "twin-"  # the server-side name of adapter version V is twin-V
ATTEMPTS = 5
RETRY_WAIT = wait_exponential(multiplier=0.25, max=2)  # 0.25, 0.5, 1, 2 s: ~4 s bridged
# A reply of a few dozen tokens takes seconds on a GPU, even queued behind others.
TIMEOUT = httpx.Timeout(120.0, connect=5.0)


class _Transient(Exception):
    """A failure worth trying again: no connection, a 5xx or 429 answer."""


class OpenAIEngine:
    """The Engine of `[serving] engine = "openai"`: replies from the server at `[serving] url`."""

    def __init__(self, config: Config) -> None:
        self.checkpoint = base_checkpoint(config)
        self.tokenizer: Any = load_tokenizer(self.checkpoint)
        self.version: str | None = None
        self.url = config.serving.url.rstrip("/")
        # The URL as messages show it: without any user:password written into it.
        self.shown_url = str(httpx.URL(self.url).copy_with(username=None, password=None))
        self.adapters_path = config.serving.adapters_path
        self._stop_ids = stop_tokens(self.tokenizer)
        self._adapter: tuple[str, str] | None = None  # (server-side name, path) replies use
        self._base_name: str | None = None  # the base's name on the server, from /models
        key = os.environ.get(API_KEY_ENV, "").strip()
        self._keyed = bool(key)
        self._http = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {key}"} if key else {},
            timeout=TIMEOUT,
        )

    # --- the Engine protocol -------------------------------------------------------------------

    def generate(
        self,
        conversations: list[list[ChatMessage]],
        settings: GenerationConfig,
        *,
        stop: threading.Event | None = None,
    ) -> list[str]:
        """The reply to each conversation, all in one request (a list of prompts). `stop` ends
        the retries (a request under way runs to its end: max_new_tokens bounds it)."""
        if not conversations:
            return []
        body: dict[str, Any] = {
            "prompt": [encode_prompt(self.tokenizer, c) for c in conversations],
            "max_tokens": settings.max_new_tokens,
            "temperature": settings.temperature,  # 0: greedy, as twin's own generation
            "top_p": settings.top_p,
            "repetition_penalty": settings.repetition_penalty,
            "stop_token_ids": self._stop_ids,
            "skip_special_tokens": True,
        }
        response = self._complete(body, stop)
        return self._replies(response, len(conversations))

    def swap(self, folder: Path) -> None:
        """Serve the adapter in `folder` (a registry version) instead of the current one.

        Raises AdapterRefused, with nothing changed, when it is broken, trained on another base
        or refused by the server; EngineUnavailable, with nothing changed, when the server
        cannot be reached (try again later).
        """
        version = folder.name
        if version == self.version:
            return
        check_adapter_files(folder, self.checkpoint)
        name = ADAPTER_PREFIX + version
        path = self.server_path(folder)
        self._load(name, path, version)
        old, self._adapter, self.version = self._adapter, (name, path), version
        log.info("serving adapter %s from %s as %s", version, self.shown_url, name)
        if old is not None and old[0] != name:
            self._unload(old[0])

    def close(self) -> None:
        """Unload the adapter this engine loaded (one try: the server may be gone already)."""
        if self._adapter is not None:
            self._unload(self._adapter[0], attempts=1)
            self._adapter, self.version = None, None
        self._http.close()

    # --- adapters ------------------------------------------------------------------------------

    def server_path(self, folder: Path) -> str:
        """Where the server finds an adapter version: under `[serving] adapters_path` (the
        adapters folder as the server sees it) when set, else the folder itself."""
        if self.adapters_path:
            return f"{self.adapters_path.rstrip('/')}/{folder.name}"
        return str(folder.resolve())

    def _load(self, name: str, path: str, version: str) -> None:
        response = self._send("POST", "/load_lora_adapter", {"lora_name": name, "lora_path": path})
        if response.status_code == 200:
            return
        self._check_key(response)
        if response.status_code == 400 and name in self._served_names():
            log.info("the server at %s already holds %s", self.shown_url, name)
            return
        if response.status_code == 404 and _body(response) == {"detail": "Not Found"}:
            raise EngineUnavailable(
                f"{self.shown_url} has no /load_lora_adapter: start the server with "
                "--enable-lora and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True"
            )
        if response.status_code == 404:
            hint = (
                "check [serving] adapters_path (the adapters folder as the server sees it)"
                if self.adapters_path
                else "on another machine, set [serving] adapters_path to the adapters folder "
                "as the server sees it"
            )
            raise AdapterRefused(
                f"adapter {version}: the server at {self.shown_url} finds no adapter at "
                f"{path}; {hint}"
            )
        raise AdapterRefused(
            f"adapter {version}: the server at {self.shown_url} refused it "
            f"({response.status_code}): {_server_message(response)}"
        )

    def _unload(self, name: str, *, attempts: int | None = None) -> None:
        """Unload `name`; one the server no longer holds is fine. A failure only leaves an
        unused adapter on the server: it is logged, never raised."""
        try:
            response = self._send(
                "POST", "/unload_lora_adapter", {"lora_name": name}, attempts=attempts
            )
        except EngineUnavailable as err:
            log.warning("could not unload %s: %s", name, err)
            return
        if response.status_code not in (200, 404):
            log.warning(
                "could not unload %s: %s answered %s: %s",
                name,
                self.shown_url,
                response.status_code,
                _server_message(response),
            )

    def _served_names(self) -> list[str]:
        """The model names the server answers to: its base, then the adapters it holds."""
        response = self._send("GET", "/models")
        self._check_key(response)
        try:
            if response.status_code != 200:
                raise ValueError(response.status_code)
            cards = response.json()["data"]
            names = [str(card["id"]) for card in cards]
        except (ValueError, KeyError, TypeError):
            raise EngineUnavailable(
                f"{self.shown_url}/models answered {response.status_code}, not a model list"
            ) from None
        # Adapters name their base as `parent`; the base itself has none.
        bases = [str(c["id"]) for c in cards if isinstance(c, dict) and not c.get("parent")]
        self._base_name = next(
            (n for n in bases if not n.startswith(ADAPTER_PREFIX)), names[0] if names else None
        )
        return names

    # --- completions ---------------------------------------------------------------------------

    def _model(self) -> str:
        """The name replies are asked of: the current adapter's, else the server's base."""
        if self._adapter is not None:
            return self._adapter[0]
        if self._base_name is None:
            self._served_names()
        if self._base_name is None:
            raise EngineUnavailable(f"{self.shown_url}/models lists no model")
        return self._base_name

    def _complete(self, body: dict[str, Any], stop: threading.Event | None) -> httpx.Response:
        model = self._model()
        response = self._send("POST", "/completions", {"model": model, **body}, stop=stop)
        if response.status_code == 404:
            # The server restarted and forgot the adapter (or serves its base under another
            # name now): load it again, once, and ask again.
            if self._adapter is not None:
                name, path = self._adapter
                log.warning("the server at %s lost %s: loading it again", self.shown_url, name)
                try:
                    self._load(name, path, self.version or name)
                except AdapterRefused as err:
                    raise EngineUnavailable(str(err)) from None
            else:
                self._base_name = None
            model = self._model()
            response = self._send("POST", "/completions", {"model": model, **body}, stop=stop)
        if response.status_code != 200:
            self._check_key(response)
            # The server's own message is left out: an error about a request may quote it.
            raise EngineUnavailable(
                f"{self.shown_url}/completions answered {response.status_code} "
                f"({_error_type(response)}) for {model}"
                + (
                    ": check the server's --max-model-len against [bot] context_tokens"
                    if response.status_code == 400
                    else ""
                )
            )
        return response

    def _replies(self, response: httpx.Response, expected: int) -> list[str]:
        try:
            choices = sorted(response.json()["choices"], key=lambda c: int(c["index"]))
            replies = [str(c["text"]).strip() for c in choices]
        except (ValueError, KeyError, TypeError):
            replies = []
        if len(replies) != expected:
            raise EngineUnavailable(
                f"{self.shown_url}/completions answered 200 without one reply per prompt"
            )
        return replies

    # --- HTTP ----------------------------------------------------------------------------------

    def _send(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        stop: threading.Event | None = None,
        attempts: int | None = None,
    ) -> httpx.Response:
        """One call, retried while the failure is transient; the answer, whatever its status
        otherwise. Raises EngineUnavailable when every try failed."""
        where = f"{self.shown_url}{path}"
        tries = attempts or ATTEMPTS
        tried = 0

        def once() -> httpx.Response:
            nonlocal tried
            tried += 1
            try:
                response = self._http.request(method, path, json=body)
            except httpx.ReadTimeout:
                # The server has the request and is slow: asking again would only add to its
                # queue.
                raise EngineUnavailable(
                    f"{where} did not answer within {TIMEOUT.read:g} s"
                ) from None
            except httpx.TransportError as err:
                raise _Transient(f"cannot reach {where}: {_transport_failure(err)}") from None
            if response.status_code >= 500 or response.status_code == 429:
                raise _Transient(f"{where} answered {response.status_code}")
            return response

        retrying = Retrying(
            retry=retry_if_exception_type(_Transient),
            stop=_stop_after(tries, stop),
            wait=RETRY_WAIT,
            sleep=_sleeper(stop),
            before_sleep=_log_retry,
            reraise=True,
        )
        try:
            return retrying(once)
        except _Transient as err:
            times = "once" if tried == 1 else f"{tried} times"
            raise EngineUnavailable(f"{err} (tried {times})") from None

    def _check_key(self, response: httpx.Response) -> None:
        if response.status_code not in (401, 403):
            return
        if self._keyed:
            raise EngineUnavailable(
                f"{self.shown_url} refused the API key in {API_KEY_ENV} "
                f"({response.status_code}): set it to the server's --api-key"
            )
        raise EngineUnavailable(
            f"{self.shown_url} wants an API key ({response.status_code}): "
            f"export {API_KEY_ENV}=... (the server's --api-key)"
        )


def check_adapter_files(folder: Path, checkpoint: str) -> None:
    """Refuse an adapter that cannot be served on `checkpoint`, from its files alone: readable,
    trained on that base, weights present and finite (trainer.engines.checks), and a LoRA, the
    only kind the server loads. The server checks the shapes against its own copy of the base."""
    settings, _ = read_adapter(folder, checkpoint)
    kind = settings.get("peft_type", "LORA")
    if kind != "LORA":
        raise AdapterRefused(f"adapter {folder.name} is a {kind} adapter, not a LoRA")


def _stop_after(attempts: int, stop: threading.Event | None) -> Callable[[RetryCallState], bool]:
    def done(state: RetryCallState) -> bool:
        return state.attempt_number >= attempts or (stop is not None and stop.is_set())

    return done


def _sleeper(stop: threading.Event | None) -> Callable[[float], None]:
    """Backoff sleeps that end at once when the engine is stopped (shutting down)."""
    if stop is None:
        return time.sleep
    event = stop

    def sleep(seconds: float) -> None:
        event.wait(seconds)

    return sleep


def _log_retry(state: RetryCallState) -> None:
    failure = state.outcome.exception() if state.outcome else None
    wait = state.next_action.sleep if state.next_action else 0.0
    log.warning("%s; trying again in %.1f s", failure, wait)


def _transport_failure(err: httpx.TransportError) -> str:
    """What went wrong with the connection, in a few words (httpx's own text has no URL,
    headers or body)."""
    if isinstance(err, httpx.ConnectError):
        return f"connection failed ({err})" if str(err) else "connection failed"
    if isinstance(err, httpx.TimeoutException):
        return f"timed out ({type(err).__name__})"
    return type(err).__name__


def _body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _error_type(response: httpx.Response) -> str:
    """The error's type as the server names it ("BadRequestError"), or its status text."""
    body = _body(response)
    error = body.get("error", body) if isinstance(body, dict) else None
    kind = error.get("type") if isinstance(error, dict) else None
    return str(kind) if kind else response.reason_phrase or "error"


def _server_message(response: httpx.Response) -> str:
    """The server's error message, one line (vLLM: {"error": {"message"}}, older versions
    {"message"}, FastAPI {"detail"}). Only for calls that carry no message text."""
    body = _body(response)
    message: Any = None
    if isinstance(body, dict):
        error = body.get("error")
        message = (
            error.get("message") if isinstance(error, dict) else error or body.get("message")
        ) or body.get("detail")
    text = str(message) if message else response.text or response.reason_phrase
    return " ".join(text.split())[:300]
