"""A Bot API stand-in: a real HTTP server on 127.0.0.1 that speaks enough of Telegram's Bot API
for the real python-telegram-bot Application to run against it.

It serves getMe, getUpdates (long polling with offsets), sendMessage, sendChatAction,
setMyCommands, sendPhoto/sendDocument (multipart uploads) and the webhook calls; records
every call the bot makes (with the time it arrived); and can answer chosen calls with a 429
(retry_after) or a 500, as Telegram does under load.
"""

from __future__ import annotations

import asyncio
import email.parser
import email.policy
import itertools
import json
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl

TOKEN = "123456:TEST-token"
BOT_ID = 999_000
BOT_USERNAME = "twin_test_bot"


@dataclass
class Call:
    method: str
    params: dict[str, Any]
    at: float  # time.monotonic() when it arrived
    status: int = 200
    files: dict[str, bytes] = field(default_factory=dict)

    @property
    def chat_id(self) -> int:
        return int(self.params["chat_id"])


class BotApiStandIn:
    def __init__(self) -> None:
        self.calls: list[Call] = []
        self._updates: list[dict[str, Any]] = []
        self._update_ids = itertools.count(1)
        self._message_ids = itertools.count(1)
        self._faults: list[tuple[str, int, int | None]] = []  # (method, status, retry_after)
        self._lock = threading.Condition()
        self.pushed_at: dict[int, float] = {}  # update_id -> time.monotonic() it was queued
        self._server = _QuietServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> BotApiStandIn:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._lock.notify_all()
        self._server.shutdown()
        self._server.server_close()

    # --- what tests do -------------------------------------------------------------------

    def push(self, update: dict[str, Any]) -> int:
        with self._lock:
            update_id = next(self._update_ids)
            self._updates.append({"update_id": update_id, **update})
            self.pushed_at[update_id] = time.monotonic()
            self._lock.notify_all()
        return update_id

    def push_message(
        self,
        user_id: int,
        text: str | None = None,
        *,
        chat_id: int | None = None,
        chat_type: str = "private",
        first_name: str = "Ann",
        **fields: Any,
    ) -> int:
        """A user's new message; extra Bot API message fields (sticker, photo...) as kwargs."""
        message: dict[str, Any] = {
            "message_id": next(self._message_ids),
            "date": int(time.time()),
            "chat": {"id": chat_id if chat_id is not None else user_id, "type": chat_type},
            "from": {"id": user_id, "is_bot": False, "first_name": first_name},
            **fields,
        }
        if chat_type != "private":
            message["chat"]["title"] = "Group"
        if text is not None:
            message["text"] = text
            if text.startswith("/"):
                command = text.split()[0]
                message["entities"] = [{"type": "bot_command", "offset": 0, "length": len(command)}]
        return self.push({"message": message})

    def fail(self, method: str, status: int, *, retry_after: int | None = None) -> None:
        """Answer the next call of `method` with an error (429 with retry_after, or 5xx)."""
        with self._lock:
            self._faults.append((method, status, retry_after))

    def sent(self, method: str = "sendMessage", chat_id: int | None = None) -> list[Call]:
        with self._lock:
            return [
                c
                for c in self.calls
                if c.method == method
                and c.status == 200
                and (chat_id is None or c.chat_id == chat_id)
            ]

    def texts(self, chat_id: int | None = None) -> list[str]:
        return [c.params["text"] for c in self.sent("sendMessage", chat_id)]

    async def wait_for(
        self, predicate: Callable[[BotApiStandIn], bool], timeout: float = 30.0
    ) -> None:
        deadline = time.monotonic() + timeout
        while not predicate(self):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; the bot sent: {self.summary()}")
            await asyncio.sleep(0.02)

    async def settle(self, seconds: float = 0.5) -> None:
        """Let the bot act on what it has (for asserting that nothing is sent)."""
        await asyncio.sleep(seconds)

    def summary(self) -> list[tuple[str, int, str]]:
        return [(c.method, c.status, str(c.params.get("text", ""))[:40]) for c in self.calls]

    # --- the server side -----------------------------------------------------------------

    def _take_fault(self, method: str) -> tuple[int, int | None] | None:
        with self._lock:
            for i, (name, status, retry_after) in enumerate(self._faults):
                if name == method:
                    del self._faults[i]
                    return status, retry_after
        return None

    def _get_updates(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        offset = int(params.get("offset", 0) or 0)
        timeout = float(params.get("timeout", 0) or 0)
        deadline = time.monotonic() + timeout
        with self._lock:
            # An offset acknowledges every update before it: Telegram forgets them.
            self._updates = [u for u in self._updates if u["update_id"] >= offset]
            while not self._updates and time.monotonic() < deadline:
                self._lock.wait(deadline - time.monotonic())
            limit = int(params.get("limit", 100) or 100)
            return self._updates[:limit]

    def _answer(self, method: str, params: dict[str, Any]) -> Any:
        bot_user = {
            "id": BOT_ID,
            "is_bot": True,
            "first_name": "Twin",
            "username": BOT_USERNAME,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
        }
        if method == "getMe":
            return bot_user
        if method == "getUpdates":
            return self._get_updates(params)
        if method in ("sendMessage", "sendPhoto", "sendDocument"):
            message = {
                "message_id": next(self._message_ids),
                "date": int(time.time()),
                "chat": {"id": int(params["chat_id"]), "type": "private"},
                "from": bot_user,
            }
            if "text" in params:
                message["text"] = params["text"]
            return message
        if method in (
            "sendChatAction",
            "setMyCommands",
            "deleteWebhook",
            "setWebhook",
            "answerCallbackQuery",
            "close",
        ):
            return True
        if method == "getMyCommands":
            return []
        raise KeyError(method)


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client hanging up mid long-poll (the bot stopping) is normal, not an error.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def _handler_for(api: BotApiStandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet test output
            pass

        def do_POST(self) -> None:
            self._serve()

        def do_GET(self) -> None:
            self._serve()

        def _serve(self) -> None:
            prefix = f"/bot{TOKEN}/"
            if not self.path.startswith(prefix):
                self._reply(401, {"ok": False, "error_code": 401, "description": "Unauthorized"})
                return
            method = self.path[len(prefix) :]
            params, files = self._params()
            call = Call(method, params, time.monotonic(), files=files)
            fault = api._take_fault(method)
            if fault is not None:
                status, retry_after = fault
                call.status = status
                with api._lock:
                    api.calls.append(call)
                body: dict[str, Any] = {"ok": False, "error_code": status}
                if status == 429:
                    body["description"] = f"Too Many Requests: retry after {retry_after}"
                    body["parameters"] = {"retry_after": retry_after}
                else:
                    body["description"] = "Internal Server Error"
                self._reply(status, body)
                return
            try:
                result = api._answer(method, params)
            except KeyError:
                self._reply(
                    404, {"ok": False, "error_code": 404, "description": "Not Found: method"}
                )
                return
            if method != "getUpdates":
                with api._lock:
                    api.calls.append(call)
            self._reply(200, {"ok": True, "result": result})

        def _params(self) -> tuple[dict[str, Any], dict[str, bytes]]:
            length = int(self.headers.get("Content-Length", 0) or 0)
            raw = self.rfile.read(length) if length else b""
            kind = self.headers.get("Content-Type", "")
            if kind.startswith("application/json"):
                return json.loads(raw or b"{}"), {}
            if kind.startswith("multipart/form-data"):
                return _multipart(kind, raw)
            return dict(parse_qsl(raw.decode())), {}

        def _reply(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


def _multipart(content_type: str, body: bytes) -> tuple[dict[str, Any], dict[str, bytes]]:
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    params: dict[str, Any] = {}
    files: dict[str, bytes] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True) or b""
        if part.get_filename():
            files[str(name)] = payload
        else:
            params[str(name)] = payload.decode()
    return params, files
