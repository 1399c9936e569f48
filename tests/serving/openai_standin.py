"""An OpenAI-compatible server stand-in: a real HTTP server on 127.0.0.1 that speaks the part of
vLLM's API the openai engine uses, the way tests/bot/botapi.py stands in for Telegram.

    GET  /v1/models               the base and the adapters loaded
    POST /v1/completions          text for each prompt (a string, token ids, or a list of them)
    POST /v1/load_lora_adapter    {"lora_name", "lora_path"}: 400 if the name is loaded, 404 if
                                  no adapter is at the path
    POST /v1/unload_lora_adapter  {"lora_name"}: 404 if the name is not loaded

It validates requests as vLLM does (a model name it does not serve is a 404, a malformed body a
400, a missing or wrong `Authorization: Bearer` a 401 when it has a key), answers errors with
vLLM's body (`{"error": {"message", "type", "param", "code"}}`), and records every call. What it
"generates" is a function of the model name and the prompt (`reply_for`), so a test can tell
which adapter answered. Faults on demand: `fail` answers chosen calls with an error status,
`stall` answers one late, `refuse` stops listening (connection refused) for a while or until
`resume`, `drop` forgets adapters as a server restart would, `answer_with` answers with a given
text (`answer_empty`: nothing), `drip` sends an answer a byte at a time, `flood` sends a huge
one. Limits as a real deployment has them: `max_model_len` refuses a request whose prompt and
completion do not fit (400, vLLM's --max-model-len), `max_body` refuses a request body over
that many bytes (413, as a proxy's body limit does).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import socket
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

BASE_NAME = "tiny-base"
PREFIX = "/v1"


@dataclass
class Call:
    method: str
    path: str  # under /v1: "/completions", "/load_lora_adapter"...
    body: Any  # the JSON sent (None for a GET)
    at: float  # time.monotonic() when it arrived
    authorization: str | None
    status: int = 200

    @property
    def lora_name(self) -> str | None:
        return self.body.get("lora_name") if isinstance(self.body, dict) else None


class OpenAIStandIn:
    def __init__(
        self,
        *,
        api_key: str | None = None,
        base: str = BASE_NAME,
        vocab_size: int | None = None,
        runtime_lora: bool = True,
        max_model_len: int = 2048,
        max_body: int | None = None,
    ) -> None:
        self.api_key = api_key
        self.base = base
        self.vocab_size = vocab_size
        self.max_model_len = max_model_len  # vLLM's --max-model-len
        self.max_body = max_body  # a proxy's body limit (nginx: client_max_body_size)
        self.runtime_lora = runtime_lora  # VLLM_ALLOW_RUNTIME_LORA_UPDATING: the routes exist
        self.calls: list[Call] = []
        self.adapters: dict[str, str] = {}  # lora_name -> lora_path, in load order
        self._faults: list[tuple[str, int, str]] = []  # (path or "*", status, message)
        self._stalls: list[tuple[str, float]] = []  # (path, seconds)
        self._texts: list[str] = []  # what the next completions answer each prompt with
        self._deliveries: list[tuple[str, str, float]] = []  # (path, "drip" | "flood", how)
        self._lock = threading.Lock()
        self._port = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The API root, as `[serving] url` names it."""
        return f"http://127.0.0.1:{self._port}{PREFIX}"

    def __enter__(self) -> OpenAIStandIn:
        self._listen()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop_listening()

    # --- what the server "generates" ---------------------------------------------------------

    @staticmethod
    def reply_for(model: str, prompt: str | list[int]) -> str:
        """The text it answers `prompt` with, as served by `model` (stripped)."""
        digest = hashlib.sha256(json.dumps(prompt).encode()).hexdigest()[:10]
        return f"{model} says {digest}"

    # --- what tests do -----------------------------------------------------------------------

    def fail(self, path: str, status: int = 503, *, times: int = 1, message: str = "") -> None:
        """Answer the next `times` calls to `path` ("/completions"... or "*") with `status`."""
        with self._lock:
            self._faults += [(path, status, message or _STATUS_TEXT.get(status, "error"))] * times

    def answer_empty(self, times: int = 1) -> None:
        """Answer the next `times` completions with an empty text, as a model that sampled its
        end of turn first."""
        self.answer_with("", times=times)

    def answer_with(self, text: str, *, times: int = 1) -> None:
        """Answer every prompt of the next `times` completions with `text` (a server that
        ignores max_tokens, say)."""
        with self._lock:
            self._texts += [text] * times

    def drip(self, path: str, seconds_per_byte: float) -> None:
        """Send the next answer to `path` one byte at a time, `seconds_per_byte` apart (a
        server, or something between, that never quite stops and never quite answers)."""
        with self._lock:
            self._deliveries.append((path, "drip", seconds_per_byte))

    def flood(self, path: str, size: int) -> None:
        """Answer the next call to `path` with a 200 of `size` bytes of JSON."""
        with self._lock:
            self._deliveries.append((path, "flood", size))

    def stall(self, path: str, seconds: float) -> None:
        """Take `seconds` over the next call to `path` (a server busy past the client's
        timeout)."""
        with self._lock:
            self._stalls.append((path, seconds))

    def refuse(self, seconds: float | None = None) -> None:
        """Stop listening and cut open connections (connection refused, as a server that is
        down); listen again on the same port after `seconds`, or at `resume()`."""
        self._stop_listening()
        if seconds is not None:
            timer = threading.Timer(seconds, self.resume)
            timer.daemon = True
            timer.start()

    def resume(self) -> None:
        if self._server is None:
            self._listen()

    def drop(self, name: str | None = None) -> None:
        """Forget adapter `name` (None: every adapter), as a server restart does."""
        with self._lock:
            if name is None:
                self.adapters.clear()
            else:
                self.adapters.pop(name, None)

    def load(self, name: str, path: str) -> None:
        """Hold an adapter already, as a server that outlived a twin process does."""
        with self._lock:
            self.adapters[name] = path

    def calls_to(self, path: str) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.path == path]

    def adapter_calls(self) -> list[tuple[str, str | None, int]]:
        """(path, lora_name, status) of every load and unload, in order."""
        with self._lock:
            return [
                (c.path, c.lora_name, c.status)
                for c in self.calls
                if c.path in ("/load_lora_adapter", "/unload_lora_adapter")
            ]

    # --- listening -----------------------------------------------------------------------------

    def _listen(self) -> None:
        server = _Server(("127.0.0.1", self._port), _handler_for(self))
        server.daemon_threads = True
        self._port = server.server_address[1]
        self._server = server
        # A short poll: `refuse` and the end of a test wait for the loop to notice.
        self._thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def _stop_listening(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        server.cut_connections()

    # --- the server side -----------------------------------------------------------------------

    def _stall(self, path: str) -> None:
        with self._lock:
            stalls = [s for s in self._stalls if s[0] == path][:1]
            for stall in stalls:
                self._stalls.remove(stall)
        for _, seconds in stalls:
            time.sleep(seconds)

    def _take_delivery(self, path: str) -> tuple[str, float] | None:
        with self._lock:
            for i, (where, kind, how) in enumerate(self._deliveries):
                if where == path:
                    del self._deliveries[i]
                    return kind, how
        return None

    def _take_fault(self, path: str) -> tuple[int, str] | None:
        with self._lock:
            for i, (where, status, message) in enumerate(self._faults):
                if where in (path, "*"):
                    del self._faults[i]
                    return status, message
        return None

    def _answer(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        """(status, JSON body or text) of one request, as vLLM answers it."""
        if method == "GET" and path == "/models":
            return 200, self._models()
        if method != "POST":
            return 405, {"detail": "Method Not Allowed"}
        if path == "/completions":
            return self._complete(body)
        if path in ("/load_lora_adapter", "/unload_lora_adapter") and self.runtime_lora:
            return self._load(body) if path == "/load_lora_adapter" else self._unload(body)
        return 404, {"detail": "Not Found"}  # FastAPI's answer for a route it lacks

    def _models(self) -> dict[str, Any]:
        created = int(time.time())
        cards = [
            {
                "id": self.base,
                "object": "model",
                "created": created,
                "owned_by": "vllm",
                "root": f"/models/{self.base}",
                "parent": None,
                "max_model_len": self.max_model_len,
                "permission": [],
            }
        ]
        with self._lock:
            cards += [
                {
                    "id": name,
                    "object": "model",
                    "created": created,
                    "owned_by": "vllm",
                    "root": path,
                    "parent": self.base,
                    "max_model_len": None,
                    "permission": [],
                }
                for name, path in self.adapters.items()
            ]
        return {"object": "list", "data": cards}

    def _complete(self, body: Any) -> tuple[int, Any]:
        if not isinstance(body, dict):
            return _error(400, "BadRequestError", "the body must be a JSON object")
        model = body.get("model")
        with self._lock:
            served = model == self.base or model in self.adapters
        if not served:
            return _error(404, "NotFoundError", f"The model `{model}` does not exist.", "model")
        prompts = _prompts(body.get("prompt"))
        if prompts is None:
            return _error(400, "BadRequestError", "prompt must be a string, token ids or a list")
        for prompt in prompts:
            if not prompt:
                return _error(400, "BadRequestError", "The prompt cannot be empty")
            vocab = self.vocab_size or sys.maxsize
            if isinstance(prompt, list) and not all(0 <= t < vocab for t in prompt):
                return _error(400, "BadRequestError", "Token id out of vocabulary")
        problem = _sampling_problem(body)
        if problem:
            return _error(400, "BadRequestError", problem)
        completion = body.get("max_tokens") or 16
        for prompt in prompts:
            if len(prompt) + completion > self.max_model_len:
                # vLLM refuses the whole request when one prompt does not fit.
                return _error(
                    400,
                    "BadRequestError",
                    f"This model's maximum context length is {self.max_model_len} tokens. "
                    f"However, you requested {len(prompt) + completion} tokens "
                    f"({len(prompt)} in the messages, {completion} in the completion). Please "
                    "reduce the length of the messages or completion.",
                )
        with self._lock:
            text = self._texts.pop(0) if self._texts else None
        choices = [
            {
                "index": i,
                "text": text if text is not None else f" {self.reply_for(str(model), prompt)}\n",
                "logprobs": None,
                "finish_reason": "stop",
                "stop_reason": None,
            }
            for i, prompt in enumerate(prompts)
        ]
        # The spec ties choices to prompts by `index`, not by position: answer out of order.
        choices.reverse()
        return 200, {
            "id": f"cmpl-{len(self.calls)}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": model,
            "choices": choices,
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        }

    def _load(self, body: Any) -> tuple[int, Any]:
        name = body.get("lora_name") if isinstance(body, dict) else None
        path = body.get("lora_path") if isinstance(body, dict) else None
        if not name or not path:
            return _error(
                400, "InvalidUserInput", "Both 'lora_name' and 'lora_path' must be provided."
            )
        with self._lock:
            if name in self.adapters:
                return _error(
                    400,
                    "InvalidUserInput",
                    f"The lora adapter '{name}' has already been loaded. If you want to load "
                    "the adapter in place, set 'load_inplace' to True.",
                )
        if not (Path(path) / "adapter_config.json").is_file():
            return _error(
                404, "NotFoundError", f"Loading lora {name} failed: No adapter found for {path}"
            )
        with self._lock:
            self.adapters[name] = path
        return 200, f"Success: LoRA adapter '{name}' added successfully."

    def _unload(self, body: Any) -> tuple[int, Any]:
        name = body.get("lora_name") if isinstance(body, dict) else None
        if not name:
            return _error(
                400,
                "InvalidUserInput",
                "'lora_name' needs to be provided to unload a LoRA adapter.",
            )
        with self._lock:
            if self.adapters.pop(name, None) is None:
                return _error(404, "NotFoundError", f"The lora adapter '{name}' cannot be found.")
        return 200, f"Success: LoRA adapter '{name}' removed successfully."


_NGINX_413 = (
    "<html>\r\n<head><title>413 Request Entity Too Large</title></head>\r\n<body>\r\n"
    "<center><h1>413 Request Entity Too Large</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)
_STATUS_TEXT = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}


def _error(status: int, kind: str, message: str, param: str | None = None) -> tuple[int, Any]:
    return status, {"error": {"message": message, "type": kind, "param": param, "code": status}}


def _prompts(prompt: Any) -> list[str | list[int]] | None:
    """The prompts of a completions request: a string, a list of token ids, or a list of
    either; None when it is none of these."""

    def token_ids(value: Any) -> bool:
        return isinstance(value, list) and all(
            isinstance(t, int) and not isinstance(t, bool) for t in value
        )

    if isinstance(prompt, str):
        return [prompt]
    if token_ids(prompt) and prompt:
        return [prompt]
    if not isinstance(prompt, list) or not prompt:
        return None
    if all(isinstance(p, str) for p in prompt) or all(token_ids(p) for p in prompt):
        return list(prompt)
    return None


def _sampling_problem(body: dict[str, Any]) -> str | None:
    def number(v: Any) -> bool:
        return isinstance(v, int | float) and not isinstance(v, bool)

    checks = {
        "max_tokens": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1,
        "temperature": lambda v: number(v) and v >= 0,
        "top_p": lambda v: number(v) and 0 < v <= 1,
        "repetition_penalty": lambda v: number(v) and v > 0,
        "stop_token_ids": lambda v: isinstance(v, list) and all(isinstance(t, int) for t in v),
        "skip_special_tokens": lambda v: isinstance(v, bool),
    }
    for key, valid in checks.items():
        if body.get(key) is not None and not valid(body[key]):
            return f"{key}: invalid value {body[key]!r}"
    return None


class _Server(ThreadingHTTPServer):
    """Keeps its open connections, so that refusing cuts the client's kept-alive ones too."""

    def __init__(self, *args: Any) -> None:
        self.open_connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(*args)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self.open_connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self.open_connections.discard(request)
        super().shutdown_request(request)

    def cut_connections(self) -> None:
        with self._connections_lock:
            connections = list(self.open_connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A connection cut by `refuse` or by the client is normal here, not an error.
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


def _handler_for(server: OpenAIStandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as uvicorn does

        def log_message(self, format: str, *args: Any) -> None:  # quiet test output
            pass

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def _serve(self, method: str) -> None:
            length = int(self.headers.get("Content-Length", 0) or 0)
            raw = self.rfile.read(length) if length else b""
            if not self.path.startswith(PREFIX + "/"):
                self._reply(404, {"detail": "Not Found"})
                return
            path = self.path[len(PREFIX) :]
            if server.max_body is not None and length > server.max_body:
                with server._lock:
                    server.calls.append(Call(method, path, None, time.monotonic(), None, 413))
                self._reply(413, _NGINX_413)
                return
            delivery = server._take_delivery(path)
            if delivery is not None:
                kind, how = delivery
                self._flood(int(how)) if kind == "flood" else self._drip(how)
                return
            authorization = self.headers.get("Authorization")
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = raw.decode(errors="replace")
            call = Call(method, path, body, time.monotonic(), authorization)
            status, answer = self._answer(method, path, body, authorization)
            call.status = status
            with server._lock:
                server.calls.append(call)
            self._reply(status, answer)

        def _answer(
            self, method: str, path: str, body: Any, authorization: str | None
        ) -> tuple[int, Any]:
            # vLLM's --api-key guards every /v1 route, before anything else looks at the call.
            if server.api_key is not None and authorization != f"Bearer {server.api_key}":
                return 401, {"error": "Unauthorized"}
            server._stall(path)
            fault = server._take_fault(path)
            if fault is not None:
                status, message = fault
                return _error(status, "InternalServerError", message)
            if isinstance(body, str):
                return _error(400, "BadRequestError", "the body is not JSON")
            return server._answer(method, path, body)

        def _drip(self, seconds_per_byte: float) -> None:
            data = json.dumps({"id": "cmpl-drip", "object": "text_completion", "choices": []})
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            for byte in data.encode():  # a gone client ends it: OSError, quietly
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(seconds_per_byte)

        def _flood(self, size: int) -> None:
            head = b'{"id": "cmpl-flood", "object": "text_completion", "junk": "'
            tail = b'", "choices": []}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(size))
            self.end_headers()
            self.wfile.write(head)
            left = size - len(head) - len(tail)
            chunk = b"a" * 65536
            while left > 0:
                self.wfile.write(chunk[:left])
                left -= len(chunk)
            self.wfile.write(tail)

        def _reply(self, status: int, answer: Any) -> None:
            if isinstance(answer, str):
                data, kind = answer.encode(), "text/plain; charset=utf-8"
            else:
                data, kind = json.dumps(answer).encode(), "application/json"
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler
