"""The `twin` command: one entry point for every stage (ingest -> dataset -> trainer -> bot)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from twin.config import Config, load_config
from twin.errors import TwinError

DEFAULT_CONFIG = Path("config.toml")
OUR_LOGGERS = ("twin", "ingest", "trainer", "bot")


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    # Libraries stay at WARNING: httpx, for one, logs every request URL at INFO, and a Bot API
    # URL carries the bot token. Secrets and message text never reach the log.
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    for name in OUR_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO)
    try:
        config = _config(args.config)
        return int(args.run(config, args) or 0)
    except TwinError as err:
        print(f"twin: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("twin: interrupted", file=sys.stderr)
        return 130


def _config(path: Path) -> Config:
    # Without a config.toml in the current folder every default applies; an explicit
    # --config that does not exist is an error.
    if path == DEFAULT_CONFIG and not path.exists():
        return load_config(None)
    return load_config(path)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="twin", description="Your Telegram digital twin, trained and served on your machine."
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=DEFAULT_CONFIG,
        help="config file (default ./config.toml); relative paths in it resolve against its folder",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    ingest = commands.add_parser("ingest", help="bring Telegram history into the local store")
    sources = ingest.add_subparsers(dest="source", required=True, metavar="SOURCE")
    export = sources.add_parser("export", help="import a Telegram Desktop export (result.json)")
    export.add_argument("path", type=Path, help="result.json, or the export folder holding it")
    export.add_argument("--me", default="", help="your user id or display name in the export")
    export.set_defaults(run=_ingest_export)
    pull = sources.add_parser("telegram", help="pull new messages from your account (Telethon)")
    pull.add_argument("--takeout", action="store_true", help="use a takeout session (bulk export)")
    pull.set_defaults(run=_ingest_telegram)

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

    chat = commands.add_parser("chat", help="talk to the current twin in the terminal")
    chat.set_defaults(run=_chat)

    status = commands.add_parser("status", help="what is stored, built and trained")
    status.add_argument("--json", action="store_true", help="print one JSON object")
    status.set_defaults(run=_status)

    demo = commands.add_parser("demo", help="the whole pipeline offline on a bundled sample")
    demo.add_argument("--dir", type=Path, default=Path("twin-demo"), help="where to put it")
    demo.set_defaults(run=_demo)
    return parser


def _ingest_export(config: Config, args: argparse.Namespace) -> int:
    from ingest.export import import_export
    from ingest.store import open_store

    with open_store(config.store_path) as store:
        summary = import_export(args.path, store, me=args.me or config.identity.me)
    print(summary.line())
    return 0


def _ingest_telegram(config: Config, args: argparse.Namespace) -> int:
    from ingest.telegram import run_pull

    summary = run_pull(config, takeout=True if args.takeout else None)
    print(summary.line())
    return 0


def _dataset(config: Config, args: argparse.Namespace) -> int:
    from ingest.dataset import build_dataset
    from ingest.store import open_store

    with open_store(config.store_path) as store:
        summary = build_dataset(config, store)
    print(summary.line())
    print(f"wrote {config.dataset_dir / 'train.jsonl'} and eval.jsonl")
    return 0


def _train(config: Config, args: argparse.Namespace) -> int:
    from trainer.train import train

    result = train(config, max_steps=args.max_steps, resume=args.resume)
    print(result.line())
    return 0


def _eval(config: Config, args: argparse.Namespace) -> int:
    from trainer.eval_report import headline_table
    from trainer.evaluate import evaluate_adapter

    metrics = evaluate_adapter(config, args.adapter, canaries=args.canaries)
    print(f"adapter {metrics['version']}:")
    print(headline_table(metrics))
    print(f"report: {config.adapters_dir / metrics['version'] / 'eval' / 'report.md'}")
    return 0


def _retrain(config: Config, args: argparse.Namespace) -> int:
    from twin.retrain import retrain

    print(retrain(config, force=args.force).line())
    return 0


def _serve(config: Config, args: argparse.Namespace) -> int:
    from bot.app import serve

    return serve(config)


def _chat(config: Config, args: argparse.Namespace) -> int:
    from bot.chat import run_terminal_chat

    return run_terminal_chat(config)


def status_of(config: Config) -> dict[str, Any]:
    """What `twin status --json` prints; later stages add their keys here."""
    from ingest.dataset import count_examples
    from ingest.store import open_store
    from trainer.registry import current_version, list_adapters
    from twin.retrain import read_records

    status: dict[str, Any] = {"data_dir": str(config.data_dir), "messages": 0, "chats": 0}
    owner = None
    if config.store_path.exists():
        with open_store(config.store_path) as store:
            status["messages"] = store.count_messages()
            status["chats"] = store.count_chats()
            owner = store.owner()
    status["owner"] = owner.name if owner else None
    status["examples"] = count_examples(config.dataset_dir)
    adapters = list_adapters(config.adapters_dir)
    status["adapter"] = current_version(config.adapters_dir)
    status["adapters"] = [a.as_json() for a in adapters]
    runs = read_records(config.data_dir)
    status["last_run"] = runs[-1] if runs else None
    return status


def _status(config: Config, args: argparse.Namespace) -> int:
    status = status_of(config)
    if args.json:
        print(json.dumps(status))
        return 0
    print(f"data dir: {status['data_dir']}")
    print(f"owner:    {status['owner'] or 'unknown (nothing imported yet)'}")
    print(f"store:    {status['messages']} messages in {status['chats']} chats")
    print(f"dataset:  {status['examples']} examples")
    print(f"adapter:  {status['adapter'] or 'none yet (twin train)'}")
    run = status["last_run"]
    if run:
        print(f"last run: {run['started']} {run['outcome']}: {run['reason']}")
    for adapter in status["adapters"][-5:]:
        m = adapter["metrics"]
        print(
            f"  {adapter['version']}  {adapter['state']:<8}  held-out loss "
            f"{m['base_eval_loss']:.3f} -> {m['eval_loss']:.3f}"
        )
    return 0


def _demo(config: Config, args: argparse.Namespace) -> int:
    from twin.demo import run_demo

    return run_demo(args.dir)
