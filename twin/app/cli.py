"""The `twin` command: one entry point for every stage (ingest -> dataset -> trainer -> bot)."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from twin.core.errors import TwinError
from twin.core.lock import data_dir_lock, serve_lock
from twin.core.noise import quiet_libraries

if TYPE_CHECKING:  # config (pydantic) loads after parsing: `twin --help` answers at once
    from twin.core.config import Config

DEFAULT_CONFIG = Path("config.toml")
OUR_LOGGERS = ("twin", "ingest", "trainer", "bot")
# The commands that write the data dir: each holds its lock, one at a time (twin.core.lock).
WRITERS = (
    "ingest export",
    "ingest telegram",
    "ingest whatsapp",
    "dataset",
    "train",
    "retrain",
    "eval",
    "fact add",
    "fact forget",
)


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    # Libraries stay at WARNING: httpx, for one, logs every request URL at INFO, and a Bot API
    # URL carries the bot token. Secrets and message text never reach the log.
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    for name in OUR_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO)
    quiet_libraries()
    try:
        config = _config(args.config)
        with _lock(config, args):
            return int(args.run(config, args) or 0)
    except TwinError as err:
        print(f"twin: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("twin: interrupted", file=sys.stderr)
        return 130


def _config(path: Path) -> Config:
    from twin.core.loading import load_config

    # Without a config.toml in the current folder every default applies; an explicit
    # --config that does not exist is an error.
    if path == DEFAULT_CONFIG and not path.exists():
        return load_config(None)
    return load_config(path)


def _lock(config: Config, args: argparse.Namespace) -> contextlib.AbstractContextManager[None]:
    """A writer holds the data dir's lock, `twin serve` the serve lock, the rest none."""
    words = (args.command, getattr(args, "source", None), getattr(args, "action", None))
    command = " ".join(word for word in words if word)
    if command == "serve":
        return serve_lock(config.data_dir)
    if command in WRITERS:
        return data_dir_lock(config.data_dir, f"twin {command}")
    return contextlib.nullcontext()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="twin", description="Your Telegram digital twin, trained and served on your machine."
    )
    config_help = (
        "config file (default ./config.toml); relative paths in it resolve against its folder"
    )
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help=config_help)
    # --config is also accepted after the command (`twin chat --config x.toml`), as people
    # type it; SUPPRESS keeps the subcommand from resetting a --config given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, default=argparse.SUPPRESS, help=config_help)
    commands = _Commands(
        parser.add_subparsers(dest="command", required=True, metavar="COMMAND"), common
    )

    ingest = commands.add_parser(
        "ingest", help="bring Telegram (or WhatsApp) history into the local store"
    )
    sources = _Commands(
        ingest.add_subparsers(dest="source", required=True, metavar="SOURCE"), common
    )
    export = sources.add_parser("export", help="import a Telegram Desktop export (result.json)")
    export.add_argument("path", type=Path, help="result.json, or the export folder holding it")
    export.add_argument("--me", default="", help="your user id or display name in the export")
    export.set_defaults(run=_ingest_export)
    pull = sources.add_parser("telegram", help="pull new messages from your account (Telethon)")
    pull.add_argument("--takeout", action="store_true", help="use a takeout session (bulk export)")
    pull.set_defaults(run=_ingest_telegram)
    whatsapp = sources.add_parser("whatsapp", help="import a WhatsApp chat export (.txt or .zip)")
    whatsapp.add_argument(
        "path", type=Path, help="the exported chat: 'WhatsApp Chat with X.txt', or the .zip"
    )
    whatsapp.add_argument(
        "--me", default="", help="your name as the export writes it (default: [identity] me)"
    )
    whatsapp.set_defaults(run=_ingest_whatsapp)

    dataset = commands.add_parser("dataset", help="build the training dataset from the store")
    dataset.set_defaults(run=_dataset)

    train = commands.add_parser("train", help="fine-tune a LoRA adapter on the dataset")
    train.add_argument("--max-steps", type=int, default=None, help="override [train] max_steps")
    train.add_argument("--resume", action="store_true", help="continue an interrupted run")
    train.set_defaults(run=_train)

    evaluate = commands.add_parser(
        "eval", help="does the twin sound like you, and does it leak? (fidelity report)"
    )
    evaluate.add_argument("--adapter", default=None, help="a version (default: the current one)")
    evaluate.add_argument(
        "--canaries",
        type=int,
        default=0,
        metavar="N",
        help="also plant N fake secrets, train a throwaway adapter, report if it leaks them",
    )
    evaluate.set_defaults(run=_eval)

    retrain = commands.add_parser(
        "retrain", help="ingest new messages, rebuild the dataset, train and promote"
    )
    retrain.add_argument("--force", action="store_true", help="train even if nothing new arrived")
    retrain.set_defaults(run=_retrain)

    serve = commands.add_parser("serve", help="run the Telegram bot (needs TWIN_BOT_TOKEN)")
    serve.set_defaults(run=_serve)

    chat = commands.add_parser(
        "chat",
        help="talk to the current twin in the terminal (or answer stdin, a message a line)",
    )
    chat.add_argument(
        "--json", action="store_true", help="print one JSON object per message: message, reply"
    )
    chat.add_argument(
        "--chat",
        type=int,
        default=None,
        metavar="CHAT_ID",
        help="answer as in this chat: its memory, its scope (a store or a Bot API chat id)",
    )
    chat.add_argument("--show-memory", action="store_true", help="print what each reply recalled")
    chat.set_defaults(run=_chat)

    facts = commands.add_parser(
        "facts", help="your profile facts (shared with every chat) and candidates to approve"
    )
    facts.set_defaults(run=_facts)
    fact = commands.add_parser("fact", help="add or forget a profile fact")
    fact_actions = _Commands(
        fact.add_subparsers(dest="action", required=True, metavar="ACTION"), common
    )
    add = fact_actions.add_parser("add", help="share a fact about you with every chat")
    add.add_argument("text", nargs="+", help="the fact, e.g. i'm vegetarian")
    add.set_defaults(run=_fact_add)
    forget = fact_actions.add_parser("forget", help="forget fact N (see `twin facts`)")
    forget.add_argument("number", type=int)
    forget.set_defaults(run=_fact_forget)

    status = commands.add_parser("status", help="what is stored, built and trained")
    status.add_argument("--json", action="store_true", help="print one JSON object")
    status.set_defaults(run=_status)

    demo = commands.add_parser("demo", help="the whole pipeline offline on a bundled sample")
    demo.add_argument("--dir", type=Path, default=None, help="where (default twin-demo[-ru])")
    demo.add_argument(
        "--lang",
        choices=("en", "ru"),
        default="en",
        help="en: Mira, SmolLM2 (default); ru: Аня, Gemma 3 270M (Gemma Terms of Use)",
    )
    demo.set_defaults(run=_demo)
    return parser


class _Commands:
    """Subcommand registration that gives every subcommand the shared options."""

    def __init__(self, actions: Any, common: argparse.ArgumentParser) -> None:
        self.actions = actions
        self.common = common

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = self.actions.add_parser(
            name, parents=[self.common], **kwargs
        )
        return parser


def _ingest_export(config: Config, args: argparse.Namespace) -> int:
    from ingest.export import import_export
    from ingest.store import open_store
    from ingest.voice import voice_for

    with open_store(config.store_path) as store:
        summary = import_export(
            args.path,
            store,
            me=args.me or config.identity.me,
            voice=lambda store: voice_for(config, store),
        )
        print(summary.line())
        _update_memory(config, store)
    return 0


def _ingest_whatsapp(config: Config, args: argparse.Namespace) -> int:
    from ingest.store import open_store
    from ingest.voice import voice_for
    from ingest.whatsapp import import_whatsapp

    me = args.me
    # [identity] me may be a Telegram user id ("123", "user123"): no WhatsApp sender is one.
    if not me and not config.identity.me.strip().removeprefix("user").isdigit():
        me = config.identity.me
    if not me.strip():
        raise TwinError(
            f"{args.path}: pass --me NAME, your name as the WhatsApp export writes it "
            "(or set [identity] me to it)"
        )
    with open_store(config.store_path) as store:
        voice = voice_for(config, store)
        summary = import_whatsapp(
            args.path, store, me=me, transcribe=lambda sound, _name: voice.heard(sound)
        )
        print(summary.line())
        if voice.summary():
            print(voice.summary())
        _update_memory(config, store)
    return 0


def _update_memory(config: Config, store: Any) -> None:
    """What was imported becomes recallable at once (the index is incremental)."""
    from ingest.recall import update_memory

    indexed = update_memory(config, store)
    if indexed is not None:
        print(indexed.line())


def _ingest_telegram(config: Config, args: argparse.Namespace) -> int:
    from ingest.store import open_store
    from ingest.telegram import run_pull

    summary = run_pull(config, takeout=True if args.takeout else None)
    print(summary.line())
    with open_store(config.store_path) as store:
        _update_memory(config, store)
    return 0


def _dataset(config: Config, args: argparse.Namespace) -> int:
    from ingest.dataset import build_dataset
    from ingest.store import open_store

    with open_store(config.store_path) as store:
        summary = build_dataset(config, store)
    print(summary.line())
    print(f"wrote {config.dataset_dir / 'train.jsonl'} and eval.jsonl")
    if advice := summary.advice():
        print(f"note: the dataset is {advice}")
    for note in summary.notes:  # include / exclude entries that match no chat
        print(f"note: {note}")
    return 0


def _train(config: Config, args: argparse.Namespace) -> int:
    from trainer.train import train
    from twin.app.corrections import learned_from, read_corrections

    corrections = read_corrections(config)
    result = train(config, max_steps=args.max_steps, resume=args.resume, corrections=corrections)
    if result is not None:  # None: a non-main rank of a distributed run
        learned_from(config, result)
        print(result.line())
    return 0


def _eval(config: Config, args: argparse.Namespace) -> int:
    from trainer.eval.evaluate import evaluate_adapter
    from trainer.report import headline_table

    metrics = evaluate_adapter(config, args.adapter, canaries=args.canaries)
    print(f"adapter {metrics.version}:")
    print(headline_table(metrics))
    print(f"report: {config.adapters_dir / metrics.version / 'eval' / 'report.md'}")
    return 0


def _retrain(config: Config, args: argparse.Namespace) -> int:
    from twin.app.retrain import retrain

    print(retrain(config, force=args.force).line())
    return 0


def _serve(config: Config, args: argparse.Namespace) -> int:
    from bot.app import serve

    return serve(config)


def _chat(config: Config, args: argparse.Namespace) -> int:
    from bot.chat import run_terminal_chat

    return run_terminal_chat(
        config, as_json=args.json, chat=args.chat, show_memory=args.show_memory
    )


def _facts(config: Config, args: argparse.Namespace) -> int:
    from ingest.profile import fact_listing

    print(fact_listing(config))
    return 0


def _fact_add(config: Config, args: argparse.Namespace) -> int:
    from ingest.profile import add_fact

    print(add_fact(config, " ".join(args.text)))
    return 0


def _fact_forget(config: Config, args: argparse.Namespace) -> int:
    from ingest.profile import forget_fact

    print(forget_fact(config, args.number))
    return 0


def _status(config: Config, args: argparse.Namespace) -> int:
    from twin.app.status import print_status, status_of

    status = status_of(config)
    if args.json:
        print(json.dumps(status))
    else:
        print_status(status)
    return 0


def _demo(config: Config, args: argparse.Namespace) -> int:
    from twin.app.demo import run_demo

    folder = args.dir or Path("twin-demo" if args.lang == "en" else "twin-demo-ru")
    return run_demo(folder, args.lang)
