"""Typed configuration, read once from config.toml and validated at start.

Every key has a default, so an empty file (or none) is a valid config. Unknown keys and wrong
types are errors that name the key: a typo in config.toml must not silently fall back to a
default. Secrets never live here: they come from environment variables (see `secret`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import tomllib
import types
import typing
import zoneinfo
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twin.errors import TwinError
from twin.files import ensure_private_dir, write_private_text


@dataclass(frozen=True)
class PathsConfig:
    data_dir: Path = Path("data")


@dataclass(frozen=True)
class IdentityConfig:
    # Who the owner is: a user id ("123456789" or "user123456789") or, for exports that carry
    # no ids, the display name exactly as it appears in the export. Empty = detect.
    me: str = ""


@dataclass(frozen=True)
class IngestConfig:
    # Chats to use, by id or by name. Empty include list = all chats.
    include_chats: tuple[str, ...] = ()
    exclude_chats: tuple[str, ...] = ()
    # Telegram Desktop exports re-read (idempotently) by the nightly retrain.
    exports: tuple[Path, ...] = ()
    # Bulk pulls through Telegram's takeout session, which has laxer flood limits.
    takeout: bool = False


@dataclass(frozen=True)
class DatasetConfig:
    merge_gap_minutes: float = 5.0
    session_gap_minutes: float = 60.0
    max_tokens: int = 1024
    eval_fraction: float = 0.05
    eval_min_examples: int = 5
    chat_types: tuple[str, ...] = (
        "personal_chat",
        "private_group",
        "private_supergroup",
        "public_supergroup",
    )
    phone_regions: tuple[str, ...] = ("RU", "US", "GB", "DE")


@dataclass(frozen=True)
class PersonaConfig:
    # The owner's name as the twin uses it; empty = the name found in the store.
    name: str = ""
    # System prompt used in training and at serving time alike; {name} is filled in.
    # Empty = no system turn (not recommended: some chat templates then inject their own).
    system_prompt: str = "You are {name}. Reply to this Telegram chat exactly as {name} would."


@dataclass(frozen=True)
class ModelConfig:
    # "smollm2-135m" (the embedded default, offline), a local transformers checkpoint folder,
    # or a Hugging Face id (downloaded by transformers; needs internet once).
    base: str = "smollm2-135m"
    # "auto": 4-bit NF4 (QLoRA) on CUDA, full precision on CPU; "none": never quantize;
    # "nf4": always 4-bit (CUDA, or CPU with a bitsandbytes that supports it).
    quantization: str = "auto"
    # Training dtype on CPU: "auto" picks bf16 on CPUs with AMX (faster there), else fp32.
    cpu_dtype: str = "auto"


@dataclass(frozen=True)
class LoraConfig:
    r: int = 16
    alpha: int = 32
    # 0: PEFT's LoRA dropout copies the input of every adapted layer, which made CPU training
    # 1.6x slower for no measurable gain on the demo persona (README). 0.05-0.1 regularizes
    # long runs on little data.
    dropout: float = 0.0
    # Modules LoRA adapts: "all-linear" (every linear layer but the output head) or names.
    target_modules: tuple[str, ...] = ("all-linear",)


@dataclass(frozen=True)
class TrainConfig:
    max_steps: int = 200
    learning_rate: float = 2e-4
    batch_size: int = 4
    grad_accumulation: int = 1
    # Longest training sequence in tokens; longer examples lose their oldest turns.
    max_seq_tokens: int = 512
    warmup_ratio: float = 0.1
    seed: int = 1234
    # Save a checkpoint every N steps (0 = never) so `twin train --resume` can go on.
    checkpoint_steps: int = 50
    # Promotion gate: the new adapter's eval loss may exceed the current one's by this much.
    promote_tolerance: float = 0.02
    # Adapters kept in the registry (the current one is never deleted).
    keep_adapters: int = 5
    # Sample replies stored with each adapter, generated for the first eval prompts.
    sample_replies: int = 3


@dataclass(frozen=True)
class GenerationConfig:
    max_new_tokens: int = 64
    temperature: float = 0.8
    top_p: float = 0.9
    repetition_penalty: float = 1.1


@dataclass(frozen=True)
class EvalConfig:
    # Fidelity and privacy measured after every training run (and by `twin eval`).
    on_train: bool = True
    # Held-out prompts the base and the twin answer (the first N of eval.jsonl).
    max_prompts: int = 64
    # Training prompts the twin answers to measure memorization.
    memorization_prompts: int = 32
    # Promotion gate, beyond held-out loss: the twin's style distance must be below the base's;
    # its replies must be harder to tell from yours than the base's (off by default: with few
    # eval prompts the classifier's AUC is noisy); verbatim copies of training replies must
    # stay at or under this share of what it writes.
    require_style_win: bool = True
    require_indistinguishability_win: bool = False
    max_memorization_rate: float = 0.05


@dataclass(frozen=True)
class TelegramConfig:
    # The Bot API server: Telegram's own, or a local telegram-bot-api server.
    api_base_url: str = "https://api.telegram.org"
    # User ids the twin answers in private chats; admins are always allowed too.
    allowed_users: tuple[int, ...] = ()
    # User ids that may use /persona (and receive reports and alerts).
    admins: tuple[int, ...] = ()
    # Group chat ids where the twin answers when mentioned or replied to.
    allowed_chats: tuple[int, ...] = ()
    # Sent once to anyone else who writes; "" = stay silent. Never model output.
    stranger_reply: str = "Sorry, I only talk to people I know here."
    # Webhook mode when set (the public https URL Telegram posts to); "" = long polling.
    webhook_url: str = ""
    webhook_listen: str = "127.0.0.1"
    webhook_port: int = 8443


@dataclass(frozen=True)
class BotConfig:
    # Chat memory: at most this many recent messages, and at most this many prompt tokens.
    context_messages: int = 20
    context_tokens: int = 1024
    # Each line of a reply is its own message, after a pause of this many seconds per
    # character (capped by max_line_pause): the owner's bursts, paced. 0 = no pause.
    line_pause_per_char: float = 0.03
    max_line_pause: float = 3.0
    # Requests waiting for the model (beyond this, new messages wait to be queued), and the
    # most chats answered by one generate call.
    queue_size: int = 64
    max_batch: int = 16
    # Stickers, voice, files...: "model" = shown to the twin as "[sticker]" (as in training)
    # and answered in character; "ignore" = no answer.
    media: str = "model"
    # How often the current-adapter pointer is checked for a new version (seconds).
    reload_seconds: float = 10.0


@dataclass(frozen=True)
class ScheduleConfig:
    # When `twin serve` runs `twin retrain` (crontab syntax: minute hour day month weekday);
    # "" = never (run it yourself, or /persona train).
    retrain_cron: str = "0 3 * * *"
    # IANA time zone of retrain_cron, e.g. "Europe/Berlin"; "" = this machine's.
    timezone: str = ""
    # Unload the model while training (one GPU, not enough memory for both); messages wait.
    pause_serving_while_training: bool = False


@dataclass(frozen=True)
class Config:
    paths: PathsConfig = field(default_factory=PathsConfig)
    identity: IdentityConfig = field(default_factory=IdentityConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    persona: PersonaConfig = field(default_factory=PersonaConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    telegram: TelegramConfig = field(default_factory=TelegramConfig)
    bot: BotConfig = field(default_factory=BotConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    # The file this config came from (None: defaults only); relative paths resolve against it.
    source: Path | None = None

    @property
    def data_dir(self) -> Path:
        return self.paths.data_dir

    @property
    def store_path(self) -> Path:
        return self.paths.data_dir / "twin.db"

    @property
    def dataset_dir(self) -> Path:
        return self.paths.data_dir / "dataset"

    @property
    def models_dir(self) -> Path:
        return self.paths.data_dir / "models"

    @property
    def adapters_dir(self) -> Path:
        return self.paths.data_dir / "adapters"

    @property
    def settings_path(self) -> Path:
        return self.paths.data_dir / SETTINGS_FILE


# Settings admins change from Telegram (/persona set, /persona prompt). They are kept in the
# data dir and applied over config.toml by every command, so training uses the prompt that
# serving uses.
SETTINGS_FILE = "settings.json"
ADMIN_SETTINGS = {
    "generation": ("max_new_tokens", "temperature", "top_p", "repetition_penalty"),
    "bot": ("line_pause_per_char", "max_line_pause"),
    "persona": ("system_prompt",),
}

_SECTIONS = {f.name: f for f in dataclasses.fields(Config) if f.name != "source"}


def load_config(path: Path | None) -> Config:
    """Read and validate `path` (None: every default), then apply the admins' settings."""
    if path is None:
        return with_admin_settings(config_from_dict({}, None))
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TwinError(f"{path}: config file not found (pass --config PATH)") from None
    except tomllib.TOMLDecodeError as err:
        raise TwinError(f"{path}: not valid TOML: {err}") from None
    return with_admin_settings(config_from_dict(raw, path))


def with_admin_settings(config: Config) -> Config:
    """`config` with data_dir/settings.json (written by /persona set and prompt) applied."""
    try:
        saved = json.loads(config.settings_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return config
    except ValueError as err:
        raise TwinError(f"{config.settings_path}: not valid JSON: {err}") from None
    for section, values in saved.items():
        for key, value in values.items():
            config = with_setting(config, section, key, value, where=config.settings_path.name)
    return config


def with_setting(
    config: Config, section: str, key: str, value: Any, *, where: str = "setting"
) -> Config:
    """`config` with one admin-settable key changed, validated like config.toml.

    `value` may be a string as typed in Telegram ("0.7"); it is converted to the key's type.
    """
    if key not in ADMIN_SETTINGS.get(section, ()):
        known = ", ".join(k for keys in ADMIN_SETTINGS.values() for k in keys)
        raise TwinError(f"{where}: {key} cannot be set here (settable: {known})")
    current = getattr(config, section)
    hint = typing.get_type_hints(type(current))[key]
    label = f"{where}: [{section}] {key}"
    if isinstance(value, str) and hint in (int, float):
        try:
            value = hint(value)
        except ValueError:
            kind = "an integer" if hint is int else "a number"
            raise TwinError(f"{label} must be {kind}, got {value!r}") from None
    updated = dataclasses.replace(
        config, **{section: dataclasses.replace(current, **{key: _coerce(value, hint, label)})}
    )
    _validate(updated, where)
    return updated


def save_setting(config: Config, section: str, key: str) -> None:
    """Persist `config`'s value of one admin-settable key into data_dir/settings.json."""
    path = config.settings_path
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        saved = {}
    saved.setdefault(section, {})[key] = getattr(getattr(config, section), key)
    ensure_private_dir(path.parent)
    write_private_text(path, json.dumps(saved, indent=2) + "\n")


def config_from_dict(raw: dict[str, Any], source: Path | None = None) -> Config:
    """Build a Config from parsed TOML, resolving relative paths against `source`'s folder."""
    where = source.name if source else "config"
    base = source.resolve().parent if source else Path.cwd()
    sections: dict[str, Any] = {}
    for name, value in raw.items():
        if name not in _SECTIONS:
            raise TwinError(f"{where}: unknown section [{name}] (known: {', '.join(_SECTIONS)})")
        if not isinstance(value, dict):
            raise TwinError(f"{where}: [{name}] must be a table")
        section_type = typing.get_type_hints(Config)[name]
        sections[name] = _build_section(section_type, value, f"{where}: [{name}]", base)
    for name in _SECTIONS:
        if name not in sections:
            section_type = typing.get_type_hints(Config)[name]
            sections[name] = _build_section(section_type, {}, f"{where}: [{name}]", base)
    config = Config(**sections, source=source)
    _validate(config, where)
    return config


def _build_section(cls: type, values: dict[str, Any], where: str, base: Path) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key not in known:
            raise TwinError(f"{where} has no key '{key}' (known: {', '.join(sorted(known))})")
        kwargs[key] = _coerce(value, hints[key], f"{where} {key}")
    for f in dataclasses.fields(cls):
        value = kwargs.get(f.name, _default_of(f))
        kwargs[f.name] = _resolve_paths(value, base)
    return cls(**kwargs)


def _default_of(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory()  # type: ignore[operator, misc]


def _resolve_paths(value: Any, base: Path) -> Any:
    if isinstance(value, Path):
        return value if value.is_absolute() else (base / value)
    if isinstance(value, tuple) and value and isinstance(value[0], Path):
        return tuple(_resolve_paths(v, base) for v in value)
    return value


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Check a TOML value against the field's type; convert lists and paths."""
    origin = typing.get_origin(hint)
    if hint is bool:
        if not isinstance(value, bool):
            raise TwinError(f"{where} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TwinError(f"{where} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TwinError(f"{where} must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise TwinError(f"{where} must be a string, got {value!r}")
        return value
    if hint is Path:
        if not isinstance(value, str) or not value:
            raise TwinError(f"{where} must be a path string, got {value!r}")
        return Path(value).expanduser()
    if origin is tuple:
        item = typing.get_args(hint)[0]
        if not isinstance(value, list):
            raise TwinError(f"{where} must be a list, got {value!r}")
        if item is str:
            # Chat lists accept ids as numbers too: [123, "Family"].
            return tuple(
                str(v) if isinstance(v, int) and not isinstance(v, bool) else _coerce(v, str, where)
                for v in value
            )
        return tuple(_coerce(v, item, where) for v in value)
    if origin in (typing.Union, types.UnionType):
        return value
    raise TypeError(f"unsupported config type {hint!r} for {where}")  # our bug, not the user's


def _validate(config: Config, where: str) -> None:
    d = config.dataset
    if d.merge_gap_minutes < 0:
        raise TwinError(f"{where}: [dataset] merge_gap_minutes must be >= 0")
    if d.session_gap_minutes <= d.merge_gap_minutes:
        raise TwinError(
            f"{where}: [dataset] session_gap_minutes must be greater than merge_gap_minutes"
        )
    if d.max_tokens < 32:
        raise TwinError(f"{where}: [dataset] max_tokens must be at least 32, got {d.max_tokens}")
    if not 0 <= d.eval_fraction < 1:
        raise TwinError(
            f"{where}: [dataset] eval_fraction must be in [0, 1), got {d.eval_fraction}"
        )
    if d.eval_min_examples < 0:
        raise TwinError(f"{where}: [dataset] eval_min_examples must be >= 0")
    m = config.model
    if m.quantization not in ("auto", "none", "nf4"):
        raise TwinError(
            f"{where}: [model] quantization must be auto, none or nf4, got {m.quantization!r}"
        )
    if m.cpu_dtype not in ("auto", "fp32", "bf16"):
        raise TwinError(
            f"{where}: [model] cpu_dtype must be auto, fp32 or bf16, got {m.cpu_dtype!r}"
        )
    _positive(where, "lora", config.lora, ("r", "alpha"))
    if not 0 <= config.lora.dropout < 1:
        raise TwinError(f"{where}: [lora] dropout must be in [0, 1)")
    if not config.lora.target_modules:
        raise TwinError(f"{where}: [lora] target_modules must name at least one module")
    t = config.train
    _positive(
        where,
        "train",
        t,
        (
            "max_steps",
            "learning_rate",
            "batch_size",
            "grad_accumulation",
            "max_seq_tokens",
            "keep_adapters",
        ),
    )
    if not 0 <= t.warmup_ratio < 1:
        raise TwinError(f"{where}: [train] warmup_ratio must be in [0, 1)")
    if t.checkpoint_steps < 0 or t.promote_tolerance < 0 or t.sample_replies < 0:
        raise TwinError(
            f"{where}: [train] checkpoint_steps, promote_tolerance and sample_replies must be >= 0"
        )
    g = config.generation
    _positive(where, "generation", g, ("max_new_tokens", "top_p", "repetition_penalty"))
    if g.temperature < 0 or g.top_p > 1:
        raise TwinError(f"{where}: [generation] temperature must be >= 0 and top_p in (0, 1]")
    _positive(where, "eval", config.eval, ("max_prompts", "memorization_prompts"))
    if not 0 <= config.eval.max_memorization_rate <= 1:
        raise TwinError(f"{where}: [eval] max_memorization_rate must be in [0, 1]")
    _validate_bot(config, where)


def _validate_bot(config: Config, where: str) -> None:
    t = config.telegram
    if not t.api_base_url.startswith(("http://", "https://")):
        raise TwinError(f"{where}: [telegram] api_base_url must be an http(s) URL")
    if t.webhook_url and not t.webhook_url.startswith("https://"):
        raise TwinError(f"{where}: [telegram] webhook_url must be an https URL (or empty)")
    if not 0 < t.webhook_port < 65536:
        raise TwinError(f"{where}: [telegram] webhook_port must be a port number")
    b = config.bot
    _positive(
        where,
        "bot",
        b,
        ("context_messages", "context_tokens", "queue_size", "max_batch", "reload_seconds"),
    )
    if b.line_pause_per_char < 0 or b.max_line_pause < 0:
        raise TwinError(f"{where}: [bot] line_pause_per_char and max_line_pause must be >= 0")
    if b.media not in ("model", "ignore"):
        raise TwinError(f"{where}: [bot] media must be model or ignore, got {b.media!r}")
    schedule = config.schedule
    if schedule.timezone:
        try:
            zoneinfo.ZoneInfo(schedule.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise TwinError(
                f"{where}: [schedule] timezone {schedule.timezone!r} is not a known time zone "
                "(use an IANA name such as Europe/Berlin)"
            ) from None
    if schedule.retrain_cron:
        from apscheduler.triggers.cron import CronTrigger

        try:
            CronTrigger.from_crontab(schedule.retrain_cron)
        except ValueError as err:
            raise TwinError(
                f"{where}: [schedule] retrain_cron {schedule.retrain_cron!r} is not a crontab "
                f"line (minute hour day month weekday): {err}"
            ) from None


def _positive(where: str, section: str, values: object, keys: tuple[str, ...]) -> None:
    for key in keys:
        if getattr(values, key) <= 0:
            raise TwinError(
                f"{where}: [{section}] {key} must be positive, got {getattr(values, key)}"
            )


def secret(name: str, purpose: str) -> str:
    """Read a secret from the environment; secrets are never read from config.toml."""
    value = os.environ.get(name, "").strip()
    if not value:
        raise TwinError(f"{name} is not set: export {name}=... ({purpose})")
    return value
