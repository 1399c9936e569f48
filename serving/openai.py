"""The openai engine: the twin served by an OpenAI-compatible server (vLLM; SGLang speaks the
same), for owners with a GPU box. The server holds the training base and twin's adapters:

    VLLM_ALLOW_RUNTIME_LORA_UPDATING=True VLLM_API_KEY=... vllm serve BASE --enable-lora \\
        --max-lora-rank 16 --host 127.0.0.1     # >= [lora] r; the same key: TWIN_ENGINE_API_KEY

(the key from the environment, where `ps` does not show it; another machine reaches the server
through an SSH tunnel or https: twin refuses plain http to another host unless `[serving]
allow_plain_http` says otherwise).

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

Refused or dropped connections, 429 and 5xx answers are retried with exponential backoff
(tenacity, a few seconds in all), then raise EngineUnavailable with one line naming the URL and
the status: never a prompt, a reply, or the key. Any other 4xx to a completion (a prompt over
the server's --max-model-len, a proxy's body limit) will never pass: it raises PromptRefused,
and the bot splits the batch to find the prompt and answer the rest.

A server is trusted with nothing else: each request ends by DEADLINE_S however the server
dribbles its answer, or at once when `stop` is set or the engine closes (its connection shut
down from a watching thread: a read blocked on a silent server wakes only so); a request body
stays under REQUEST_CAP (a larger batch goes in several); an answer is read as a stream and cut
off past what its replies could take; a reply is cut to what max_new_tokens tokens could make
before anything sends it on.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from tenacity import RetryCallState, Retrying, retry_if_exception_type, wait_exponential

from serving.checks import read_adapter
from serving.engine import AdapterRefused, EngineUnavailable, PromptRefused
from serving.request_watch import Connections, RequestWatch
from trainer.generation import stop_tokens
from trainer.model import base_checkpoint, load_tokenizer
from twin.core.chat_format import encode_prompt
from twin.core.config import Config, GenerationConfig
from twin.core.conversation import ChatMessage

log = logging.getLogger(__name__)

API_KEY_ENV = "TWIN_ENGINE_API_KEY"
ADAPTER_PREFIX = "twin-"  # the server-side name of adapter version V is twin-V
ATTEMPTS = 5
RETRY_WAIT = wait_exponential(multiplier=0.25, max=2)  # 0.25, 0.5, 1, 2 s: ~4 s bridged
# A request ends by then, answer included: a reply of a few dozen tokens takes seconds on a
# GPU, even queued behind others. Reads and writes time out after as long, a connection after 5 s.
DEADLINE_S = 120.0
TIMEOUT = httpx.Timeout(DEADLINE_S, connect=5.0)
CLOSE_DEADLINE_S = 5.0  # closing unloads the adapter, if the server answers that soon
# A request body at most this large (nginx's default client_max_body_size): a batch that
# would be larger goes in several requests.
REQUEST_CAP = 1024 * 1024
# An answer at most this large besides its replies (the JSON around them, a model list, an
# error), and a reply's character at most this many bytes of JSON ("\u00e9").
ANSWER_ROOM = 1024 * 1024
BYTES_PER_CHAR = 6
# Answers worth asking again: too many requests, or a proxy that gave up waiting for ours.
RETRIED_STATUSES = (408, 429)


class _Transient(Exception):
    """A failure worth trying again: no connection, a 5xx, 429 or 408 answer."""


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
        # The most characters one token can add to a reply (its text in the vocabulary is at
        # least as long as what it decodes to): what max_new_tokens tokens can make.
        self.longest_token = max((len(t) for t in self.tokenizer.get_vocab()), default=1)
        self._adapter: tuple[str, str] | None = None  # (server-side name, path) replies use
        self._base_name: str | None = None  # the base's name on the server, from /models
        key = os.environ.get(API_KEY_ENV, "").strip()
        self._keyed = bool(key)
        if not key:
            log.warning(
                "no %s is set: anyone who can reach %s can ask the twin's adapters for "
                "replies; give the server a key (VLLM_API_KEY) and export the same key here",
                API_KEY_ENV,
                self.shown_url,
            )
        self._http = httpx.Client(
            base_url=self.url,
            # Answers come as sent: a compressed one could unpack to any size.
            headers={"Accept-Encoding": "identity"}
            | ({"Authorization": f"Bearer {key}"} if key else {}),
            timeout=TIMEOUT,
        )
        self._connections = Connections()
        self._watches: set[RequestWatch] = set()  # requests under way, for close() to cut off
        self._watches_lock = threading.Lock()
        self._closed = threading.Event()

    # --- the Engine protocol -------------------------------------------------------------------

    def generate(
        self,
        conversations: list[list[ChatMessage]],
        generation: GenerationConfig,
        *,
        stop: threading.Event | None = None,
        chats: list[str | None] | None = None,  # the server keeps its own prefix cache
    ) -> list[str]:
        """The reply to each conversation, all in one request (a list of prompts) unless its
        body would pass REQUEST_CAP. `stop` ends the retries and cuts off a request under way.
        Raises PromptRefused when the server refuses one of them (the batch may be split to
        find it), EngineUnavailable when it cannot answer now."""
        if not conversations:
            return []
        if stop is not None and stop.is_set():
            raise EngineUnavailable(f"{self.shown_url}/completions: not asked, stopping")
        prompts = [encode_prompt(self.tokenizer, c) for c in conversations]
        fields: dict[str, Any] = {
            "max_tokens": generation.max_new_tokens,
            "temperature": generation.temperature,  # 0: greedy, as twin's own generation
            "top_p": generation.top_p,
            "repetition_penalty": generation.repetition_penalty,
            "stop_token_ids": self._stop_ids,
            "skip_special_tokens": True,
        }
        return self._complete(prompts, fields, stop)

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
        """Unload the adapter this engine loaded (one try, a few seconds at most: the server may
        be gone already) and close the connection. Safe from another thread: a request under
        way there ends at once (EngineUnavailable) and is not tried again."""
        self._closed.set()
        with self._watches_lock:
            under_way = list(self._watches)
        for watch in under_way:
            watch.cut("closed")
        if self._adapter is not None:
            self._unload(self._adapter[0], attempts=1, deadline=CLOSE_DEADLINE_S)
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

    def _unload(
        self, name: str, *, attempts: int | None = None, deadline: float | None = None
    ) -> None:
        """Unload `name`; one the server no longer holds is fine. A failure only leaves an
        unused adapter on the server: it is logged, never raised."""
        try:
            response = self._send(
                "POST",
                "/unload_lora_adapter",
                {"lora_name": name},
                attempts=attempts,
                deadline=deadline,
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

    def _complete(
        self, prompts: list[list[int]], fields: dict[str, Any], stop: threading.Event | None
    ) -> list[str]:
        """The replies to `prompts`, in as few requests as keep each body under REQUEST_CAP."""
        body = {"model": self._model(), "prompt": prompts, **fields}
        size = len(_json_bytes(body))
        if size > REQUEST_CAP:
            if len(prompts) == 1:
                raise PromptRefused(
                    f"{self.shown_url}/completions: a prompt of {len(prompts[0])} tokens makes "
                    f"a {size}-byte request, over the {REQUEST_CAP}-byte cap on a request"
                )
            half = len(prompts) // 2
            return self._complete(prompts[:half], fields, stop) + self._complete(
                prompts[half:], fields, stop
            )
        max_tokens = int(fields["max_tokens"])
        response = self._ask(body, stop)
        return self._replies(response, len(prompts), max_tokens)

    def _ask(self, body: dict[str, Any], stop: threading.Event | None) -> httpx.Response:
        where = f"{self.shown_url}/completions"
        count, max_tokens = len(body["prompt"]), int(body["max_tokens"])
        cap = ANSWER_ROOM + count * max_tokens * self.longest_token * BYTES_PER_CHAR
        replies = "1 reply of" if count == 1 else f"{count} replies of"
        takes = f", more than {replies} at most {max_tokens} tokens take{'s' if count == 1 else ''}"

        def send(model: str) -> httpx.Response:
            return self._send(
                "POST", "/completions", {**body, "model": model}, stop=stop, cap=(cap, takes)
            )

        response = send(body["model"])
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
            response = send(self._model())
        status = response.status_code
        if status == 200:
            return response
        self._check_key(response)
        # The server's own message is left out: an error about a request may quote it.
        kind = _error_type(response)
        if 400 <= status < 500 and status != 404:
            raise PromptRefused(f"{where} refused a prompt: {status} ({kind}){_hint(status)}")
        raise EngineUnavailable(f"{where} answered {status} ({kind}) for {body['model']}")

    def _replies(self, response: httpx.Response, expected: int, max_tokens: int) -> list[str]:
        try:
            choices = sorted(response.json()["choices"], key=lambda c: int(c["index"]))
            replies = [str(c["text"]).strip() for c in choices]
        except (ValueError, KeyError, TypeError):
            replies = []
        if len(replies) != expected:
            raise EngineUnavailable(
                f"{self.shown_url}/completions answered 200 without one reply per prompt"
            )
        return [self._within(reply, max_tokens) for reply in replies]

    def _within(self, reply: str, max_tokens: int) -> str:
        """`reply` cut to what `max_tokens` tokens can make: as many characters as its longest
        tokens, as many lines with text as tokens. A server that sends more ignores
        max_tokens; what is past that never reaches a chat."""
        most = max_tokens * self.longest_token
        lines = sum(1 for line in reply.splitlines() if line.strip())
        if len(reply) <= most and lines <= max_tokens:
            return reply
        log.warning(
            "%s/completions sent a reply of %d characters in %d lines, more than "
            "max_new_tokens %d can make (at most %d characters, %d lines): cut to that",
            self.shown_url,
            len(reply),
            lines,
            max_tokens,
            most,
            max_tokens,
        )
        kept: list[str] = []
        with_text = 0
        for line in reply[:most].splitlines(keepends=True):
            if line.strip():
                if with_text == max_tokens:
                    break
                with_text += 1
            kept.append(line)
        return "".join(kept).strip()

    # --- HTTP ----------------------------------------------------------------------------------

    def _send(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        stop: threading.Event | None = None,
        attempts: int | None = None,
        deadline: float | None = None,
        cap: tuple[int, str] = (ANSWER_ROOM, ""),
    ) -> httpx.Response:
        """One call, retried while the failure is transient; the answer, whatever its status
        otherwise. Raises EngineUnavailable when every try failed, or when the server took
        longer than `deadline` (DEADLINE_S), sent more than `cap` (bytes, and what they are
        more than) or the engine stopped: none of those is asked again."""
        where = f"{self.shown_url}{path}"
        data = None if body is None else _json_bytes(body)
        tries = attempts or ATTEMPTS
        tried = 0

        def once() -> httpx.Response:
            nonlocal tried
            tried += 1
            try:
                response = self._exchange(
                    method, path, data, stop=stop, deadline=deadline or DEADLINE_S, cap=cap
                )
            except httpx.ReadTimeout:
                # The server has the request and is slow: asking again would only add to its
                # queue.
                raise EngineUnavailable(
                    f"{where} did not answer within {TIMEOUT.read:g} s"
                ) from None
            except httpx.TransportError as err:
                raise _Transient(f"cannot reach {where}: {_transport_failure(err)}") from None
            if response.status_code >= 500 or response.status_code in RETRIED_STATUSES:
                raise _Transient(f"{where} answered {response.status_code}")
            return response

        retrying = Retrying(
            retry=retry_if_exception_type(_Transient),
            stop=_stop_after(tries, stop, self._closed),
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

    def _exchange(
        self,
        method: str,
        path: str,
        data: bytes | None,
        *,
        stop: threading.Event | None,
        deadline: float,
        cap: tuple[int, str],
    ) -> httpx.Response:
        """One request and its answer, read as it streams in: cut off `deadline` seconds in,
        when `stop` is set or the engine closes, and past `cap` bytes."""
        where = f"{self.shown_url}{path}"
        most, more_than = cap
        headers = {"Content-Type": "application/json"} if data is not None else {}
        watch = RequestWatch(self._connections, time.monotonic() + deadline, stop)
        with self._watches_lock:
            self._watches.add(watch)
        try:
            with (
                watch,
                self._http.stream(
                    method, path, content=data, headers=headers, extensions={"trace": watch.trace}
                ) as response,
            ):
                answer = bytearray()
                for chunk in response.iter_raw():
                    answer += chunk
                    if len(answer) > most:
                        raise EngineUnavailable(
                            f"{where} sent more than {most / 1e6:.1f} MB{more_than}: cut off there"
                        )
                    if time.monotonic() > watch.deadline:
                        watch.cut("deadline")
                        break
                if watch.why is None:
                    return httpx.Response(
                        response.status_code,
                        headers=response.headers,
                        content=bytes(answer),
                        request=response.request,
                    )
        except httpx.TransportError:
            if watch.why is None:
                raise
        finally:
            with self._watches_lock:
                self._watches.discard(watch)
        if watch.why == "deadline":
            raise EngineUnavailable(f"{where} did not finish answering within {deadline:g} s")
        raise EngineUnavailable(f"{where}: stopped while waiting for its answer")

    def _check_key(self, response: httpx.Response) -> None:
        if response.status_code not in (401, 403):
            return
        if self._keyed:
            raise EngineUnavailable(
                f"{self.shown_url} refused the API key in {API_KEY_ENV} "
                f"({response.status_code}): set it to the server's key (its VLLM_API_KEY)"
            )
        raise EngineUnavailable(
            f"{self.shown_url} wants an API key ({response.status_code}): "
            f"export {API_KEY_ENV}=... (the server's key, its VLLM_API_KEY)"
        )


def check_adapter_files(folder: Path, checkpoint: str) -> None:
    """Refuse an adapter that cannot be served on `checkpoint`, from its files alone: readable,
    trained on that base, weights present and finite (serving.checks), and a LoRA, the
    only kind the server loads. The server checks the shapes against its own copy of the base."""
    adapter_config, _ = read_adapter(folder, checkpoint)
    kind = adapter_config.get("peft_type", "LORA")
    if kind != "LORA":
        raise AdapterRefused(f"adapter {folder.name} is a {kind} adapter, not a LoRA")


def _json_bytes(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


def _hint(status: int) -> str:
    """What to check when the server refuses a prompt with `status`."""
    if status == 400:
        return ": check the server's --max-model-len against [bot] context_tokens"
    if status == 413:
        return (
            f": a proxy's body limit? let requests of {REQUEST_CAP // 1024} KiB through "
            "(nginx: client_max_body_size)"
        )
    return ""


def _stop_after(attempts: int, *stops: threading.Event | None) -> Callable[[RetryCallState], bool]:
    def done(state: RetryCallState) -> bool:
        return state.attempt_number >= attempts or any(s is not None and s.is_set() for s in stops)

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
