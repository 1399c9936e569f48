"""The openai engine against a stand-in vLLM server on 127.0.0.1 (tests/serving/openai_standin.py):
prompts rendered by twin and sent as token ids, batches in one request, adapters swapped under
immutable names, broken adapters refused before the server sees them, and a server that fails,
restarts or is down met with retries, one reload, and one-line errors that never show a
prompt or the key. A prompt the server refuses is told apart from a server that is down; a
server that drips, floods or ignores max_tokens is cut off; plain http to another machine is
refused unless the owner allows it."""

from __future__ import annotations

import functools
import json
import logging
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tenacity import wait_exponential

from serving import openai as engine_module
from serving.engine import AdapterRefused, Engine, EngineUnavailable, PromptRefused
from serving.openai import API_KEY_ENV, OpenAIEngine
from tests.serving.openai_standin import BASE_NAME, OpenAIStandIn
from trainer.generation import stop_tokens
from trainer.model import load_tokenizer
from twin.core.chat_format import encode_prompt
from twin.core.config import Config, GenerationConfig, config_from_dict
from twin.core.conversation import ChatMessage
from twin.core.errors import TwinError

OLD, NEW = "20261124-031500", "20261125-030002"
NAN, OTHER_BASE, TRUNCATED = "20261126-030000", "20261127-030000", "20261128-030000"
KEY = "sk-test-5ecret-key"
SECRET_WORDS = "meet me at the old bridge at nine"
SETTINGS = GenerationConfig(max_new_tokens=8, temperature=0.7, top_p=0.9, repetition_penalty=1.1)
DEFAULT_WAIT = engine_module.RETRY_WAIT


def conversation(text: str = SECRET_WORDS) -> list[ChatMessage]:
    return [
        {"role": "system", "content": "You are Mira. Reply to this Telegram chat as Mira would."},
        {"role": "user", "content": "hey"},
        {"role": "assistant", "content": "ok ok"},
        {"role": "user", "content": text},
    ]


@pytest.fixture(scope="session")
def adapters(tmp_path_factory: pytest.TempPathFactory, tiny_base: Path) -> Path:
    """A registry folder of small LoRAs for the tiny base: two good versions, and broken ones
    (non-finite weights, trained on another base, a cut-off weights file)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import load_file, save_file
    from transformers import AutoModelForCausalLM

    folder = tmp_path_factory.mktemp("adapters")
    for seed, version in ((1, OLD), (2, NEW)):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_pretrained(tiny_base)
        lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
        get_peft_model(model, lora).save_pretrained(str(folder / version))
    for broken in (NAN, OTHER_BASE, TRUNCATED):
        shutil.copytree(folder / NEW, folder / broken)
    weights = folder / NAN / "adapter_model.safetensors"
    state = load_file(str(weights))
    first = sorted(state)[0]
    state[first][0, 0] = float("nan")
    save_file(state, str(weights))
    settings_file = folder / OTHER_BASE / "adapter_config.json"
    settings = json.loads(settings_file.read_text())
    settings["base_model_name_or_path"] = "someone/other-model-7b"
    settings_file.write_text(json.dumps(settings))
    cut = folder / TRUNCATED / "adapter_model.safetensors"
    cut.write_bytes(cut.read_bytes()[:100])
    return folder


@functools.cache
def shared_tokenizer(checkpoint: str) -> Any:
    return load_tokenizer(checkpoint)


@pytest.fixture(autouse=True)
def fast_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    """Backoff in hundredths of the real one (one test below keeps the real one), no key, and
    the tokenizer read once for every engine here (0.7 s each time otherwise)."""
    monkeypatch.setattr(engine_module, "RETRY_WAIT", wait_exponential(multiplier=0.01, max=0.1))
    monkeypatch.setattr(engine_module, "load_tokenizer", shared_tokenizer)
    monkeypatch.delenv(API_KEY_ENV, raising=False)


@pytest.fixture
def server() -> Iterator[OpenAIStandIn]:
    with OpenAIStandIn() as standin:
        yield standin


def engine_config(url: str, base: Path, tmp_path: Path, **serving: Any) -> Config:
    return config_from_dict(
        {
            "paths": {"data_dir": str(tmp_path / "data")},
            "model": {"base": str(base)},
            "serving": {"engine": "openai", "url": url, **serving},
        }
    )


@pytest.fixture
def engine(server: OpenAIStandIn, tiny_base: Path, tmp_path: Path) -> Iterator[OpenAIEngine]:
    served = OpenAIEngine(engine_config(server.url, tiny_base, tmp_path))
    yield served
    served.close()


def expected(engine: OpenAIEngine, model: str, *texts: str) -> list[str]:
    """What the stand-in answers each conversation with, served by `model`."""
    return [
        OpenAIStandIn.reply_for(model, encode_prompt(engine.tokenizer, conversation(t)))
        for t in texts
    ]


def statuses(server: OpenAIStandIn, path: str) -> list[int]:
    return [c.status for c in server.calls_to(path)]


# --- replies ---------------------------------------------------------------------------------


def test_reply_is_twin_s_own_prompt_as_token_ids_to_completions(
    engine: OpenAIEngine, server: OpenAIStandIn
) -> None:
    served: Engine = engine  # what mypy checks: it is an Engine
    assert served.version is None
    assert served.generate([conversation()], SETTINGS) == expected(engine, BASE_NAME, SECRET_WORDS)

    [call] = server.calls_to("/completions")
    assert call.body == {
        "model": BASE_NAME,  # no adapter yet: the base, by the name /models gives it
        "prompt": [encode_prompt(engine.tokenizer, conversation())],
        "max_tokens": 8,
        "temperature": 0.7,
        "top_p": 0.9,
        "repetition_penalty": 1.1,
        "stop_token_ids": stop_tokens(engine.tokenizer),
        "skip_special_tokens": True,
    }
    im_end = engine.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert im_end in call.body["stop_token_ids"]  # SmolLM2's end of turn
    assert not server.calls_to("/chat/completions")
    assert [c.path for c in server.calls] == ["/models", "/completions"]


def test_a_batch_is_one_request_and_replies_keep_their_order(
    engine: OpenAIEngine, server: OpenAIStandIn
) -> None:
    texts = ("first one", "second", "and a third")
    replies = engine.generate([conversation(t) for t in texts], SETTINGS)

    # The stand-in answers choices in reverse: the engine orders them by `index`.
    assert replies == expected(engine, BASE_NAME, *texts)
    [call] = server.calls_to("/completions")
    assert len(call.body["prompt"]) == 3
    assert engine.generate([], SETTINGS) == []
    assert len(server.calls_to("/completions")) == 1


# --- swapping adapters ------------------------------------------------------------------------


def test_swap_loads_the_new_name_then_unloads_the_old_and_the_new_one_answers(
    engine: OpenAIEngine, server: OpenAIStandIn, adapters: Path
) -> None:
    engine.swap(adapters / OLD)
    assert engine.version == OLD
    assert engine.generate([conversation()], SETTINGS) == expected(
        engine, f"twin-{OLD}", SECRET_WORDS
    )

    engine.swap(adapters / NEW)
    assert engine.version == NEW
    assert server.adapter_calls() == [
        ("/load_lora_adapter", f"twin-{OLD}", 200),
        ("/load_lora_adapter", f"twin-{NEW}", 200),
        ("/unload_lora_adapter", f"twin-{OLD}", 200),
    ]
    assert server.adapters == {f"twin-{NEW}": str((adapters / NEW).resolve())}
    assert engine.generate([conversation()], SETTINGS) == expected(
        engine, f"twin-{NEW}", SECRET_WORDS
    )

    engine.swap(adapters / NEW)  # already served: nothing to do
    assert len(server.adapter_calls()) == 3
    engine.close()
    assert server.adapter_calls()[-1] == ("/unload_lora_adapter", f"twin-{NEW}", 200)
    assert server.adapters == {}


def test_adapters_path_is_where_the_server_sees_the_adapters(
    server: OpenAIStandIn, tiny_base: Path, adapters: Path, tmp_path: Path
) -> None:
    seen_by_server = tmp_path / "gpu-box" / "adapters"
    shutil.copytree(adapters / OLD, seen_by_server / OLD)
    config = engine_config(server.url, tiny_base, tmp_path, adapters_path=str(seen_by_server))
    engine = OpenAIEngine(config)

    engine.swap(adapters / OLD)

    [load] = server.calls_to("/load_lora_adapter")
    assert load.body == {"lora_name": f"twin-{OLD}", "lora_path": f"{seen_by_server}/{OLD}"}
    with pytest.raises(AdapterRefused, match=r"finds no adapter at .*adapters_path"):
        engine.swap(adapters / NEW)  # never copied to the server's side
    assert engine.version == OLD
    assert engine.generate([conversation()], SETTINGS) == expected(
        engine, f"twin-{OLD}", SECRET_WORDS
    )
    engine.close()


@pytest.mark.parametrize(
    ("broken", "reason"),
    [
        (NAN, "non-finite weights"),
        (OTHER_BASE, "trained on 'someone/other-model-7b'"),
        (TRUNCATED, "cannot be read"),
    ],
)
def test_a_broken_adapter_is_refused_before_the_server_sees_it(
    engine: OpenAIEngine, server: OpenAIStandIn, adapters: Path, broken: str, reason: str
) -> None:
    engine.swap(adapters / OLD)
    calls = len(server.calls)

    with pytest.raises(AdapterRefused, match=reason):
        engine.swap(adapters / broken)

    assert len(server.calls) == calls  # nothing was sent
    assert engine.version == OLD
    assert engine.generate([conversation()], SETTINGS) == expected(
        engine, f"twin-{OLD}", SECRET_WORDS
    )


def test_an_adapter_the_server_refuses_changes_nothing(
    engine: OpenAIEngine, server: OpenAIStandIn, adapters: Path
) -> None:
    engine.swap(adapters / OLD)
    server.fail("/load_lora_adapter", 400, message="LoRA rank 64 is greater than max_lora_rank 16")

    with pytest.raises(AdapterRefused, match="max_lora_rank 16"):
        engine.swap(adapters / NEW)

    assert engine.version == OLD
    assert server.adapters == {f"twin-{OLD}": str((adapters / OLD).resolve())}


def test_a_server_without_runtime_lora_loading_says_how_to_start_it(
    tiny_base: Path, adapters: Path, tmp_path: Path
) -> None:
    with OpenAIStandIn(runtime_lora=False) as server:
        engine = OpenAIEngine(engine_config(server.url, tiny_base, tmp_path))
        with pytest.raises(EngineUnavailable, match="VLLM_ALLOW_RUNTIME_LORA_UPDATING=True"):
            engine.swap(adapters / OLD)
        assert engine.version is None
        engine.close()


def test_twin_restarted_against_a_server_that_already_holds_the_adapter(
    server: OpenAIStandIn, tiny_base: Path, adapters: Path, tmp_path: Path
) -> None:
    server.load(f"twin-{OLD}", str((adapters / OLD).resolve()))  # loaded by the last twin

    engine = OpenAIEngine(engine_config(server.url, tiny_base, tmp_path))
    engine.swap(adapters / OLD)

    assert engine.version == OLD
    assert server.adapter_calls() == [("/load_lora_adapter", f"twin-{OLD}", 400)]
    assert engine.generate([conversation()], SETTINGS) == expected(
        engine, f"twin-{OLD}", SECRET_WORDS
    )
    engine.close()


# --- a server that fails --------------------------------------------------------------------------


def test_5xx_answers_are_retried(
    engine: OpenAIEngine, server: OpenAIStandIn, adapters: Path
) -> None:
    server.fail("/load_lora_adapter", 500)
    engine.swap(adapters / OLD)
    assert statuses(server, "/load_lora_adapter") == [500, 200]

    server.fail("/completions", 503, times=2)
    assert engine.generate([conversation()], SETTINGS) == expected(
        engine, f"twin-{OLD}", SECRET_WORDS
    )
    assert statuses(server, "/completions") == [503, 503, 200]


def test_a_refused_connection_is_retried_with_backoff(
    engine: OpenAIEngine, server: OpenAIStandIn, adapters: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine_module, "RETRY_WAIT", DEFAULT_WAIT)  # the real backoff
    engine.swap(adapters / OLD)
    server.refuse(seconds=0.5)  # down for half a second, kept-alive connections cut too

    started = time.monotonic()
    replies = engine.generate([conversation()], SETTINGS)
    took = time.monotonic() - started

    assert replies == expected(engine, f"twin-{OLD}", SECRET_WORDS)
    # 0.25 s, then 0.5 s: the third try, 0.75 s in, finds the server back.
    assert 0.5 <= took < 3.0
    assert statuses(server, "/completions") == [200]


def test_an_adapter_lost_in_a_server_restart_is_loaded_again(
    engine: OpenAIEngine, server: OpenAIStandIn, adapters: Path
) -> None:
    engine.swap(adapters / OLD)
    server.drop()  # the server restarted: it serves the base only

    assert engine.generate([conversation()], SETTINGS) == expected(
        engine, f"twin-{OLD}", SECRET_WORDS
    )
    assert [(c.path, c.status) for c in server.calls[-3:]] == [
        ("/completions", 404),
        ("/load_lora_adapter", 200),
        ("/completions", 200),
    ]


def test_an_adapter_that_cannot_be_loaded_again_makes_the_engine_unavailable(
    server: OpenAIStandIn, tiny_base: Path, adapters: Path, tmp_path: Path
) -> None:
    served = tmp_path / "adapters" / OLD
    shutil.copytree(adapters / OLD, served)
    engine = OpenAIEngine(engine_config(server.url, tiny_base, tmp_path))
    engine.swap(served)
    server.drop()
    shutil.rmtree(served)  # and the server can no longer find it

    with pytest.raises(EngineUnavailable, match="finds no adapter"):
        engine.generate([conversation()], SETTINGS)
    assert statuses(server, "/completions") == [404]  # reloaded once, never asked again
    engine.close()


def test_persistent_failure_is_one_line_without_the_prompt(
    engine: OpenAIEngine,
    server: OpenAIStandIn,
    adapters: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    engine.swap(adapters / OLD)
    server.fail("/completions", 503, times=100)

    with caplog.at_level(logging.WARNING), pytest.raises(EngineUnavailable) as failed:
        engine.generate([conversation()], SETTINGS)

    message = str(failed.value)
    assert message == f"{server.url}/completions answered 503 (tried 5 times)"
    assert statuses(server, "/completions") == [503] * engine_module.ATTEMPTS
    assert SECRET_WORDS not in caplog.text and "\n" not in message

    server.refuse()
    with pytest.raises(EngineUnavailable, match=r"cannot reach .*connection failed") as down:
        engine.generate([conversation()], SETTINGS)
    assert server.url in str(down.value) and SECRET_WORDS not in str(down.value)
    with pytest.raises(EngineUnavailable, match="cannot reach"):
        engine.swap(adapters / NEW)
    assert engine.version == OLD


def test_a_server_too_slow_to_answer_is_not_asked_again(
    server: OpenAIStandIn, tiny_base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine_module, "TIMEOUT", httpx.Timeout(0.3, connect=2.0))
    engine = OpenAIEngine(engine_config(server.url, tiny_base, tmp_path))
    engine.generate([conversation()], SETTINGS)
    server.stall("/completions", 0.8)

    with pytest.raises(EngineUnavailable, match=r"did not answer within 0\.3 s"):
        engine.generate([conversation()], SETTINGS)
    deadline = time.monotonic() + 5
    while len(server.calls_to("/completions")) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)  # the stalled call is recorded when the server is done with it
    time.sleep(0.1)
    assert len(server.calls_to("/completions")) == 2  # the first reply and the stalled one
    engine.close()


def test_a_bad_request_is_not_retried_and_its_message_is_not_shown(
    engine: OpenAIEngine, server: OpenAIStandIn
) -> None:
    # A server's message about a request may quote the request.
    server.fail("/completions", 400, message=f"cannot parse {SECRET_WORDS!r}")

    with pytest.raises(PromptRefused, match="refused a prompt: 400") as failed:
        engine.generate([conversation()], SETTINGS)

    assert SECRET_WORDS not in str(failed.value)
    assert statuses(server, "/completions") == [400]


# --- a prompt the server refuses ---------------------------------------------------------------


def test_a_prompt_over_the_server_s_max_model_len_is_refused_not_unavailable(
    tiny_base: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with OpenAIStandIn(max_model_len=200) as server, caplog.at_level(logging.DEBUG):
        engine = OpenAIEngine(engine_config(server.url, tiny_base, tmp_path))
        long_chat = conversation(SECRET_WORDS + " and then" * 100)

        with pytest.raises(PromptRefused) as refused:
            engine.generate([conversation("hi"), long_chat], SETTINGS)

        message = str(refused.value)
        assert message == (
            f"{server.url}/completions refused a prompt: 400 (BadRequestError): check the "
            "server's --max-model-len against [bot] context_tokens"
        )
        assert statuses(server, "/completions") == [400]  # never asked again: it cannot pass
        assert SECRET_WORDS not in caplog.text
        # The short one alone is answered: only its neighbour was too long.
        assert engine.generate([conversation("hi")], SETTINGS) == expected(engine, BASE_NAME, "hi")
        engine.close()


@pytest.mark.parametrize("status", [413, 422])
def test_other_4xx_answers_are_refusals_and_429_is_retried(
    engine: OpenAIEngine, server: OpenAIStandIn, status: int
) -> None:
    server.fail("/completions", status)
    with pytest.raises(PromptRefused, match=f"refused a prompt: {status} "):
        engine.generate([conversation()], SETTINGS)
    assert statuses(server, "/completions") == [status]

    server.fail("/completions", 429, times=2)
    assert engine.generate([conversation()], SETTINGS) == expected(engine, BASE_NAME, SECRET_WORDS)
    assert statuses(server, "/completions") == [status, 429, 429, 200]


def test_a_batch_is_split_to_keep_each_request_under_the_body_cap(
    engine: OpenAIEngine, server: OpenAIStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine_module, "REQUEST_CAP", 3000, raising=False)
    texts = [f"message number {n} " + "blah " * 40 for n in range(6)]

    replies = engine.generate([conversation(t) for t in texts], SETTINGS)

    assert replies == expected(engine, BASE_NAME, *texts)
    calls = server.calls_to("/completions")
    assert len(calls) > 1
    assert sum(len(c.body["prompt"]) for c in calls) == 6
    assert all(len(json.dumps(c.body)) <= 3000 for c in calls)

    with pytest.raises(PromptRefused, match=r"over the 3000-byte cap on a request"):
        engine.generate([conversation("blah " * 1000)], SETTINGS)
    assert len(server.calls_to("/completions")) == len(calls)  # never sent


def test_a_proxy_s_body_limit_is_a_refusal(
    tiny_base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with OpenAIStandIn(max_body=2000) as server:
        engine = OpenAIEngine(engine_config(server.url, tiny_base, tmp_path))
        with pytest.raises(PromptRefused, match="refused a prompt: 413 ") as refused:
            engine.generate([conversation("blah " * 400)], SETTINGS)
        assert "a proxy's body limit" in str(refused.value)
        assert statuses(server, "/completions") == [413]
        engine.close()


# --- a server that drips, stalls, floods or says too much ---------------------------------------


def test_a_dripping_server_is_cut_off_at_the_request_deadline(
    engine: OpenAIEngine, server: OpenAIStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine_module, "DEADLINE_S", 1.0, raising=False)
    engine.generate([conversation()], SETTINGS)  # the base's name is known: one call to time
    server.drip("/completions", 0.3)  # a byte every 0.3 s: the whole answer would take 20 s+

    started = time.monotonic()
    with pytest.raises(EngineUnavailable) as failed:
        engine.generate([conversation()], SETTINGS)
    took = time.monotonic() - started

    assert str(failed.value) == f"{server.url}/completions did not finish answering within 1 s"
    assert took < 10  # 1 s and a little; never the drip's 20
    # The next request gets a connection of its own and its answer.
    assert engine.generate([conversation()], SETTINGS) == expected(engine, BASE_NAME, SECRET_WORDS)


@pytest.mark.parametrize("how", ["stop", "close"])
def test_stopping_or_closing_ends_a_request_in_flight_at_once(
    engine: OpenAIEngine, server: OpenAIStandIn, how: str
) -> None:
    engine.generate([conversation()], SETTINGS)
    server.stall("/completions", 60)  # far past anything a test waits
    stop = threading.Event()
    ender = threading.Timer(0.5, stop.set if how == "stop" else engine.close)
    ender.start()

    started = time.monotonic()
    with pytest.raises(EngineUnavailable, match="stopped while waiting for its answer"):
        engine.generate([conversation()], SETTINGS, stop=stop)
    took = time.monotonic() - started
    ender.join()

    assert took < 10  # half a second and a little; never the server's 60


def test_a_flood_is_cut_at_the_cap_in_one_line(
    engine: OpenAIEngine, server: OpenAIStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    engine.generate([conversation()], SETTINGS)
    server.flood("/completions", 64 * 1024 * 1024)

    with caplog.at_level(logging.WARNING), pytest.raises(EngineUnavailable) as failed:
        engine.generate([conversation()], SETTINGS)

    message = str(failed.value)
    assert message.startswith(f"{server.url}/completions sent more than ")
    assert message.endswith(" MB, more than 1 reply of at most 8 tokens takes: cut off there")
    assert "\n" not in message
    assert engine.generate([conversation()], SETTINGS) == expected(engine, BASE_NAME, SECRET_WORDS)


def test_a_reply_longer_than_max_new_tokens_could_make_is_cut_before_it_goes_anywhere(
    engine: OpenAIEngine, server: OpenAIStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    spam = "".join(f"buy {SECRET_WORDS} now, offer {n}\n" for n in range(5000))
    server.answer_with(spam)

    with caplog.at_level(logging.WARNING):
        [reply] = engine.generate([conversation()], SETTINGS)

    most = SETTINGS.max_new_tokens * engine.longest_token
    assert 0 < len(reply) <= most
    assert len([line for line in reply.splitlines() if line.strip()]) <= SETTINGS.max_new_tokens
    assert spam.startswith(reply)
    assert (
        f"{server.url}/completions sent a reply of {len(spam.strip())} characters in 5000 "
        f"lines, more than max_new_tokens 8 can make (at most {most} characters, 8 lines): "
        "cut to that"
    ) in caplog.text
    assert SECRET_WORDS not in caplog.text


# --- plain http and the key ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "url", ["http://gpu-box:8000/v1", "http://10.0.0.7:8000/v1", "http://[2001:db8::1]:8000/v1"]
)
def test_plain_http_to_another_machine_is_refused_unless_the_owner_allows_it(
    url: str, tiny_base: Path, tmp_path: Path
) -> None:
    with pytest.raises(TwinError) as refused:
        engine_config(url, tiny_base, tmp_path)
    message = str(refused.value)
    assert message.startswith(f"config: [serving] url {url} is plain http to another machine")
    assert "allow_plain_http = true" in message and "\n" not in message

    allowed = engine_config(url, tiny_base, tmp_path, allow_plain_http=True)
    assert allowed.serving.url == url


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/v1",
        "http://localhost:8000/v1",
        "http://127.0.0.2:8000/v1",
        "http://[::1]:8000/v1",
        "https://gpu-box:8000/v1",
    ],
)
def test_loopback_and_https_need_no_opt_in(url: str, tiny_base: Path, tmp_path: Path) -> None:
    assert engine_config(url, tiny_base, tmp_path).serving.url == url


def test_an_engine_without_a_key_says_so_once_at_start(
    server: OpenAIStandIn,
    tiny_base: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING):
        OpenAIEngine(engine_config(server.url, tiny_base, tmp_path)).close()
    assert [r.getMessage() for r in caplog.records] == [
        f"no {API_KEY_ENV} is set: anyone who can reach {server.url} can ask the twin's "
        "adapters for replies; give the server a key (VLLM_API_KEY) and export the same key here"
    ]
    caplog.clear()
    monkeypatch.setenv(API_KEY_ENV, KEY)
    with caplog.at_level(logging.WARNING):
        OpenAIEngine(engine_config(server.url, tiny_base, tmp_path)).close()
    assert caplog.records == []


def test_stopping_ends_the_retries(
    engine: OpenAIEngine, server: OpenAIStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine_module, "RETRY_WAIT", DEFAULT_WAIT)  # 0.25 s, 0.5 s...
    stop = threading.Event()
    stop.set()
    with pytest.raises(EngineUnavailable, match="stopping"):
        engine.generate([conversation()], SETTINGS, stop=stop)
    assert statuses(server, "/completions") == []  # nothing is asked once stopping

    server.fail("/completions", 503, times=100)
    stop.clear()
    threading.Timer(0.3, stop.set).start()  # while it waits to try again
    with pytest.raises(EngineUnavailable):
        engine.generate([conversation()], SETTINGS, stop=stop)
    assert 1 <= len(statuses(server, "/completions")) < engine_module.ATTEMPTS


# --- the API key ---------------------------------------------------------------------------------


def test_the_api_key_is_sent_and_never_shown(
    tiny_base: Path,
    adapters: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv(API_KEY_ENV, KEY)
    with OpenAIStandIn(api_key=KEY) as server, caplog.at_level(logging.DEBUG):
        engine = OpenAIEngine(engine_config(server.url, tiny_base, tmp_path))
        engine.swap(adapters / OLD)
        assert engine.generate([conversation()], SETTINGS) == expected(
            engine, f"twin-{OLD}", SECRET_WORDS
        )
        assert {c.authorization for c in server.calls} == {f"Bearer {KEY}"}

        server.fail("/completions", 503, times=100)
        with pytest.raises(EngineUnavailable) as failed:
            engine.generate([conversation()], SETTINGS)
        chain: BaseException | None = failed.value
        while chain is not None:  # nor in what the traceback would show beneath it
            assert KEY not in str(chain) and KEY not in repr(chain)
            chain = chain.__cause__ or chain.__context__
        engine.close()

        monkeypatch.setenv(API_KEY_ENV, "sk-wrong-one")
        wrong = OpenAIEngine(engine_config(server.url, tiny_base, tmp_path))
        with pytest.raises(EngineUnavailable, match=f"refused the API key in {API_KEY_ENV}") as e:
            wrong.generate([conversation()], SETTINGS)
        assert "sk-wrong-one" not in str(e.value)

        monkeypatch.delenv(API_KEY_ENV)
        keyless = OpenAIEngine(engine_config(server.url, tiny_base, tmp_path))
        with pytest.raises(EngineUnavailable, match=f"wants an API key .*{API_KEY_ENV}"):
            keyless.swap(adapters / NEW)
    assert KEY not in caplog.text
