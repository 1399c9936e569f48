"""A Bot API stand-in: a real HTTP server on 127.0.0.1 that speaks enough of Telegram's Bot API
for the real python-telegram-bot Application to run against it.

It serves getMe, getUpdates (long polling with offsets), sendMessage, sendChatAction,
setMyCommands, sendPhoto/sendDocument (multipart uploads) and the webhook calls; records
every call the bot makes (with the time it arrived); and can answer chosen calls with a 429
(retry_after) or a 500, as Telegram does under load.

Files (a voice message's sound) are served as Telegram serves them: getFile gives a file_path,
and the bytes come from /file/bot<token>/<file_path>; `add_file` puts one there, and
fail("download", ...) makes the download fail.

It also plays the Telegram Business side: tests register business connections (the owner's
account lent to the bot), push business_message / edited / deleted updates, and the bot's
sends through a connection are checked (400 unknown connection, 403 when the owner took the
rights away) and echoed back as business_message updates, as Telegram does. Every message it
returns or pushes is kept in `messages`, so inline buttons, callback queries and
editMessageText / editMessageReplyMarkup act on the message as it stands now.
"""

from __future__ import annotations

import asyncio
import copy
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
from urllib.parse import parse_qsl, unquote

TOKEN = "123456:TEST-token"
BOT_ID = 999_000
BOT_USERNAME = "twin_test_bot"
BOT_USER: dict[str, Any] = {
    "id": BOT_ID,
    "is_bot": True,
    "first_name": "Twin",
    "username": BOT_USERNAME,
    "can_join_groups": True,
    "can_read_all_group_messages": False,
    "supports_inline_queries": False,
}
# Telegram's own wording, which PTB turns into BadRequest / Forbidden for the bot.
CONNECTION_INVALID = "Bad Request: BUSINESS_CONNECTION_INVALID"
BUSINESS_MISSING = "Forbidden: BOT_BUSINESS_MISSING"
EDIT_NOT_FOUND = "Bad Request: message to edit not found"


class _ApiError(Exception):
    """A refusal Telegram would give (ok false, a status, a description), not a stand-in bug."""

    def __init__(self, status: int, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.description = description


@dataclass
class Call:
    method: str
    params: dict[str, Any]
    at: float  # time.monotonic() when it arrived
    status: int = 200
    files: dict[str, bytes] = field(default_factory=dict)
    result: Any = None  # what the stand-in answered: for sends, the Message JSON (its message_id)

    @property
    def chat_id(self) -> int:
        # int(): form-encoded bodies carry "42", JSON bodies 42.
        return int(self.params["chat_id"])

    @property
    def business(self) -> str | None:
        """The business connection the call went through (None: the bot's own chats)."""
        value = self.params.get("business_connection_id")
        return None if value is None else str(value)


class BotApiStandIn:
    def __init__(self) -> None:
        self.calls: list[Call] = []
        self._updates: list[dict[str, Any]] = []
        self._update_ids = itertools.count(1)
        self._message_ids = itertools.count(1)
        self._faults: list[tuple[str, int, int | None]] = []  # (method, status, retry_after)
        self._lock = threading.Condition()
        self.pushed_at: dict[int, float] = {}  # update_id -> time.monotonic() it was queued
        # (chat_id, message_id) -> the message as it stands now (after edits), for buttons,
        # callback queries and edits to refer to.
        self.messages: dict[tuple[int, int], dict[str, Any]] = {}
        self.connections: dict[str, dict[str, Any]] = {}  # id -> BusinessConnection JSON
        # Telegram sends a business bot's own messages back as business_message updates.
        self.echo_business_sends = True
        self._callback_ids = itertools.count(1)
        # A business chat's friend's first name, as their messages showed it: the chat of a
        # message the owner (or the bot for them) writes is still named after the friend.
        self._friend_names: dict[int, str] = {}
        self.files: dict[str, bytes] = {}  # file_id -> the bytes behind it
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
        _set_text(message, text)
        self._remember(message)
        return self.push({"message": message})

    def add_file(self, data: bytes, *, kind: str = "voice") -> dict[str, Any]:
        """Put a file on the server; returns the Bot API object of a voice message holding
        it (file_id, file_unique_id, file_size), to which tests add its duration."""
        with self._lock:
            file_id = f"{kind}-{len(self.files) + 1}"
            self.files[file_id] = data
        return {"file_id": file_id, "file_unique_id": f"u-{file_id}", "file_size": len(data)}

    # --- business accounts ----------------------------------------------------------------

    def add_business_connection(
        self,
        connection_id: str,
        user_id: int,
        *,
        first_name: str = "Owner",
        can_reply: bool = True,
        is_enabled: bool = True,
        user_chat_id: int | None = None,
    ) -> dict[str, Any]:
        """Register (or replace) a connection; returns its BusinessConnection JSON."""
        connection: dict[str, Any] = {
            "id": connection_id,
            "user": {"id": user_id, "is_bot": False, "first_name": first_name},
            "user_chat_id": user_id if user_chat_id is None else user_chat_id,
            "date": int(time.time()),
            "is_enabled": is_enabled,
            # Only the rights the bot leans on: reading the owner's chats and answering in them.
            "rights": {"can_reply": can_reply, "can_read_messages": True},
        }
        with self._lock:
            self.connections[connection_id] = connection
        return copy.deepcopy(connection)

    def push_business_connection(
        self,
        connection_id: str,
        user_id: int,
        *,
        first_name: str = "Owner",
        can_reply: bool = True,
        is_enabled: bool = True,
        user_chat_id: int | None = None,
    ) -> int:
        """Register a connection and tell the bot, as Telegram does when the owner (re)connects
        it, changes its rights or turns it off; returns the update id."""
        connection = self.add_business_connection(
            connection_id,
            user_id,
            first_name=first_name,
            can_reply=can_reply,
            is_enabled=is_enabled,
            user_chat_id=user_chat_id,
        )
        return self.push({"business_connection": connection})

    def push_business_message(
        self,
        connection_id: str,
        chat_id: int,
        from_id: int,
        text: str | None = None,
        *,
        first_name: str | None = None,
        sender_business_bot: bool = False,
        message_id: int | None = None,
        date: int | None = None,
        **fields: Any,
    ) -> int:
        """A new message in one of the owner's private chats, from the friend or from the owner
        (from_id == the connection's user); returns its message id.

        first_name names the sender: None means the friend's name so far ("Ann" at first), or
        the connection's name for the owner. sender_business_bot marks it as written by the
        bot for the owner."""
        message = self._business_message(
            connection_id, chat_id, from_id, text, first_name, message_id, date
        )
        if sender_business_bot:
            message["sender_business_bot"] = dict(BOT_USER)
        message.update(fields)
        self._remember(message)
        self.push({"business_message": message})
        return int(message["message_id"])

    def push_edited_business_message(
        self,
        connection_id: str,
        chat_id: int,
        from_id: int,
        message_id: int,
        text: str,
        *,
        first_name: str | None = None,
    ) -> int:
        """Someone in the owner's chat edited a message; returns its message id."""
        with self._lock:
            before = self.messages.get((chat_id, message_id))
        date = int(before["date"]) if before is not None else None
        message = self._business_message(
            connection_id, chat_id, from_id, text, first_name, message_id, date
        )
        message["edit_date"] = int(time.time())
        self._remember(message)
        self.push({"edited_business_message": message})
        return message_id

    def push_deleted_business_messages(
        self, connection_id: str, chat_id: int, message_ids: list[int]
    ) -> int:
        """Messages deleted in the owner's chat (they leave `messages`); returns the update id."""
        with self._lock:
            name = self._friend_names.get(chat_id, "Ann")
            for message_id in message_ids:
                self.messages.pop((chat_id, message_id), None)
        return self.push(
            {
                "deleted_business_messages": {
                    "business_connection_id": connection_id,
                    "chat": {"id": chat_id, "type": "private", "first_name": name},
                    "message_ids": list(message_ids),
                }
            }
        )

    # --- inline buttons ------------------------------------------------------------------

    def buttons(self, chat_id: int, message_id: int) -> list[tuple[str, str]]:
        """(text, callback_data) of a message's inline keyboard as it stands now, row by row;
        [] when it has none (or is unknown, so wait_for predicates can poll it). A button
        without callback_data (a URL button) shows "" as its data."""
        with self._lock:
            message = self.messages.get((chat_id, message_id))
            rows = (message or {}).get("reply_markup", {}).get("inline_keyboard", [])
            return [(b["text"], str(b.get("callback_data", ""))) for row in rows for b in row]

    def message_text(self, chat_id: int, message_id: int) -> str:
        """A message's current text (its caption for media), after any edits."""
        with self._lock:
            message = self._stored(chat_id, message_id)
            return str(message.get("text", message.get("caption", "")))

    def push_callback(
        self, user_id: int, chat_id: int, message_id: int, data: str, *, first_name: str = "Owner"
    ) -> int:
        """A user pressed an inline button (data = its callback_data) under a message the
        stand-in knows; returns the update id. The bot should answer with answerCallbackQuery."""
        with self._lock:
            message = copy.deepcopy(self._stored(chat_id, message_id))
        query = {
            "id": str(next(self._callback_ids)),
            "from": {"id": user_id, "is_bot": False, "first_name": first_name},
            "chat_instance": "1",
            "data": data,
            "message": message,
        }
        return self.push({"callback_query": query})

    def fail(self, method: str, status: int, *, retry_after: int | None = None) -> None:
        """Answer the next call of `method` with an error (429 with retry_after, or 5xx)."""
        with self._lock:
            self._faults.append((method, status, retry_after))

    def sent(self, method: str = "sendMessage", chat_id: int | None = None) -> list[Call]:
        """Successful calls of `method` (through a business connection or not)."""
        with self._lock:
            return [
                c
                for c in self.calls
                if c.method == method
                and c.status == 200
                # Only calls that name a chat can match one (getBusinessConnection names none).
                and (chat_id is None or ("chat_id" in c.params and c.chat_id == chat_id))
            ]

    def texts(self, chat_id: int | None = None) -> list[str]:
        """What the bot said in its own chats: sends on an owner's behalf are business_texts."""
        return [c.params["text"] for c in self.sent("sendMessage", chat_id) if c.business is None]

    def business_texts(
        self, connection_id: str | None = None, chat_id: int | None = None
    ) -> list[str]:
        """What the bot said through business connections (one, or any), in owners' chats."""
        return [
            c.params["text"]
            for c in self.sent("sendMessage", chat_id)
            if c.business is not None and (connection_id is None or c.business == connection_id)
        ]

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

    def _remember(self, message: dict[str, Any]) -> None:
        # A copy: what was queued or answered must not change when the message is edited.
        with self._lock:
            key = (int(message["chat"]["id"]), int(message["message_id"]))
            self.messages[key] = copy.deepcopy(message)

    def _stored(self, chat_id: int, message_id: int) -> dict[str, Any]:
        message = self.messages.get((chat_id, message_id))
        if message is None:
            raise KeyError(f"the stand-in never sent or pushed message {message_id} in {chat_id}")
        return message

    def _business_message(
        self,
        connection_id: str,
        chat_id: int,
        from_id: int,
        text: str | None,
        first_name: str | None,
        message_id: int | None,
        date: int | None,
    ) -> dict[str, Any]:
        with self._lock:
            owner = self.connections.get(connection_id, {}).get("user")
            if owner is not None and owner["id"] == from_id:
                sender = {**owner, "first_name": first_name or owner["first_name"]}
                chat_name = self._friend_names.get(chat_id, "Friend")
            else:
                # A friend keeps the name their chat already has unless the test renames them.
                name = first_name or self._friend_names.get(chat_id, "Ann")
                sender = {"id": from_id, "is_bot": False, "first_name": name}
                chat_name = self._friend_names[chat_id] = name
        message: dict[str, Any] = {
            "message_id": next(self._message_ids) if message_id is None else message_id,
            "date": int(time.time()) if date is None else date,
            "chat": {"id": chat_id, "type": "private", "first_name": chat_name},
            "from": sender,
            "business_connection_id": connection_id,
        }
        _set_text(message, text)
        return message

    def _connection_for(self, params: dict[str, Any]) -> dict[str, Any] | None:
        """The connection a call goes through (None: the bot's own chat), refused as Telegram
        refuses it: unknown -> 400, turned off or without the right to reply -> 403."""
        connection_id = params.get("business_connection_id")
        if connection_id is None:
            return None
        with self._lock:
            connection = self.connections.get(str(connection_id))
        if connection is None:
            raise _ApiError(400, CONNECTION_INVALID)
        if not connection["is_enabled"] or not connection["rights"].get("can_reply"):
            raise _ApiError(403, BUSINESS_MISSING)
        return connection

    def _send(self, params: dict[str, Any]) -> dict[str, Any]:
        connection = self._connection_for(params)
        chat_id = int(params["chat_id"])
        message: dict[str, Any] = {
            "message_id": next(self._message_ids),
            "date": int(time.time()),
            "chat": {"id": chat_id, "type": "private"},
            "from": dict(BOT_USER),
        }
        if connection is not None:
            # Sent as the owner: Telegram shows the business account as the sender, and
            # names the bot that actually wrote it.
            with self._lock:
                if chat_id in self._friend_names:
                    message["chat"]["first_name"] = self._friend_names[chat_id]
            message["from"] = dict(connection["user"])
            message["sender_business_bot"] = dict(BOT_USER)
            message["business_connection_id"] = connection["id"]
        for key in ("text", "caption"):
            if key in params:
                message[key] = params[key]
        markup = _inline_markup(params.get("reply_markup"))
        if markup is not None:
            message["reply_markup"] = markup
        self._remember(message)
        if connection is not None and self.echo_business_sends:
            self.push({"business_message": copy.deepcopy(message)})
        return message

    def _edit(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        self._connection_for(params)
        try:
            key = (int(params["chat_id"]), int(params["message_id"]))
        except KeyError:  # an inline_message_id: no inline mode here
            raise _ApiError(400, EDIT_NOT_FOUND) from None
        with self._lock:
            if key not in self.messages:
                raise _ApiError(400, EDIT_NOT_FOUND)
            message = copy.deepcopy(self.messages[key])
            if method == "editMessageText":
                message["text"] = params["text"]
                message.pop("entities", None)  # they described the old text
            # Telegram drops the keyboard when an edit carries none.
            markup = _inline_markup(params.get("reply_markup"))
            if markup is None:
                message.pop("reply_markup", None)
            else:
                message["reply_markup"] = markup
            message["edit_date"] = int(time.time())
            self.messages[key] = message
            return copy.deepcopy(message)

    def _answer(self, method: str, params: dict[str, Any]) -> Any:
        if method == "getMe":
            return dict(BOT_USER)
        if method == "getUpdates":
            return self._get_updates(params)
        if method in ("sendMessage", "sendPhoto", "sendDocument"):
            return self._send(params)
        if method == "sendChatAction":
            self._connection_for(params)
            return True
        if method == "getBusinessConnection":
            with self._lock:
                connection = self.connections.get(str(params.get("business_connection_id")))
            if connection is None:
                raise _ApiError(400, CONNECTION_INVALID)
            return copy.deepcopy(connection)
        if method in ("editMessageText", "editMessageReplyMarkup"):
            return self._edit(method, params)
        if method in (
            "setMyCommands",
            "deleteWebhook",
            "setWebhook",
            "answerCallbackQuery",
            "close",
        ):
            return True
        if method == "getMyCommands":
            return []
        if method == "getFile":
            file_id = str(params.get("file_id"))
            with self._lock:
                data = self.files.get(file_id)
            if data is None:
                raise _ApiError(400, "Bad Request: invalid file_id")
            return {
                "file_id": file_id,
                "file_unique_id": f"u-{file_id}",
                "file_size": len(data),
                "file_path": f"voice/{file_id}.oga",
            }
        raise KeyError(method)

    def _download(self, file_path: str) -> tuple[int, bytes]:
        """GET /file/bot<token>/<file_path>: the file's bytes, or a fault."""
        fault = self._take_fault("download")
        call = Call("download", {"file_path": file_path}, time.monotonic())
        with self._lock:
            self.calls.append(call)
            if fault is not None:
                call.status = fault[0]
                return fault[0], b""
            file_id = file_path.removeprefix("voice/").removesuffix(".oga")
            data = self.files.get(file_id)
        if data is None:
            call.status = 404
            return 404, b""
        return 200, data


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
            files = f"/file/bot{TOKEN}/"
            path = unquote(self.path)  # the token's colon arrives as %3A
            if path.startswith(files):
                status, data = api._download(path[len(files) :])
                self.send_response(status)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return
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
            except _ApiError as error:
                call.status = error.status
                with api._lock:
                    api.calls.append(call)
                self._reply(
                    error.status,
                    {"ok": False, "error_code": error.status, "description": error.description},
                )
                return
            except KeyError:
                self._reply(
                    404, {"ok": False, "error_code": 404, "description": "Not Found: method"}
                )
                return
            call.result = result
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
        decoded = part.get_payload(decode=True)
        payload = decoded if isinstance(decoded, bytes) else b""
        if part.get_filename():
            files[str(name)] = payload
        else:
            params[str(name)] = payload.decode()
    return params, files


def _set_text(message: dict[str, Any], text: str | None) -> None:
    """Text, with the bot_command entity Telegram adds, so PTB's CommandHandler matches it."""
    if text is None:
        return
    message["text"] = text
    if text.startswith("/"):
        command = text.split()[0]
        message["entities"] = [{"type": "bot_command", "offset": 0, "length": len(command)}]


def _inline_markup(value: Any) -> dict[str, Any] | None:
    """A call's reply_markup as a dict: PTB sends it as a JSON string in form bodies, an object
    in JSON ones. Only inline keyboards: Telegram's Message carries no other markup (a reply
    keyboard in it would not parse as InlineKeyboardMarkup in PTB)."""
    if value is None or value == "":
        return None
    markup = json.loads(value) if isinstance(value, str | bytes) else value
    if isinstance(markup, dict) and "inline_keyboard" in markup:
        return markup
    return None
