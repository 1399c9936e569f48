"""Hot reload: a new current adapter is swapped in while chats go on; a broken one is refused."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from concurrent.futures import Future
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from bot import adapters as adapters_module
from serving.engine import AdapterRefused
from serving.twin import load_served_twin, swap_adapter
from tests.bot.botapi import BotApiStandIn
from tests.bot.helpers import ADMIN, FRIENDS, bot_config, copy_adapters, serving
from trainer import registry
from twin.core.config import Config


def logits_of(model: torch.nn.Module, ids: list[int]) -> torch.Tensor:
    with torch.inference_mode():
        return model(input_ids=torch.tensor([ids])).logits[0]


PROBE = [1, 22, 333, 4444, 5555, 6, 77]


@pytest.mark.anyio
async def test_new_adapter_swapped_in_mid_traffic_without_losing_a_message(
    tmp_path: Path, tiny_base: Path, trained_adapters: Path, api: BotApiStandIn
) -> None:
    config = bot_config(tmp_path, tiny_base, api.url)
    first, second = copy_adapters(trained_adapters, config)
    async with serving(config) as runtime:
        assert runtime.worker.version == first
        for user in FRIENDS[:10]:
            api.push_message(user, "before the swap")
        registry.set_current(config.adapters_dir, second)  # as a nightly retrain does
        for user in FRIENDS[10:]:
            api.push_message(user, "around the swap")
        await api.wait_for(lambda a: {c.chat_id for c in a.sent()} >= set(FRIENDS), 60)
        await api.wait_for(lambda a: f"Now serving adapter {second}." in a.texts(ADMIN))
        assert runtime.worker.version == second
        assert runtime.worker.stats.replies == 20
        served = runtime.worker._engine  # the model thread is idle now
        assert served is not None
        # No stale weights: the swapped model computes what a fresh load of `second` does.
        fresh = load_served_twin(config)
        assert fresh.version == second
        assert torch.allclose(
            logits_of(served.model, PROBE), logits_of(fresh.engine.model, PROBE), atol=1e-4
        )
        assert list(served.model.peft_config) == [second]  # the old one was unloaded


@pytest.mark.anyio
async def test_a_reload_poll_during_an_admin_switch_does_not_undo_it(
    tmp_path: Path,
    tiny_base: Path,
    trained_adapters: Path,
    api: BotApiStandIn,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = bot_config(tmp_path, tiny_base, api.url)
    first, second = copy_adapters(trained_adapters, config)
    async with serving(config) as runtime:
        assert runtime.worker.version == first
        loop = asyncio.get_running_loop()
        polls: list[Future[object]] = []
        engine = runtime.worker._engine
        assert engine is not None
        swap = engine.swap

        def swap_then_poll(folder: Path) -> None:
            swap(folder)
            if not polls:
                # The reload job's poll, landing after the new adapter loaded and before the
                # admin's switch returned: the window CI once hit, made certain here.
                poll = runtime.adapters.follow_current()
                polls.append(asyncio.run_coroutine_threadsafe(poll, loop))

        monkeypatch.setattr(engine, "swap", swap_then_poll)
        seen = len(api.texts(ADMIN))
        api.push_message(ADMIN, f"/persona use {second}", first_name="Owner")
        await api.wait_for(lambda a: len(a.texts(ADMIN)) > seen)
        assert await asyncio.wrap_future(polls[0]) is None  # nothing to follow: it waited
        await api.settle(1.0)  # more reload polls
        assert api.texts(ADMIN)[seen:] == [f"Now serving adapter {second}."]
        assert runtime.worker.version == second
        assert registry.current_version(config.adapters_dir) == second


def test_merged_and_unmerged_adapter_give_the_same_logits(
    tmp_path: Path, tiny_base: Path, trained_adapters: Path
) -> None:
    config = bot_config(tmp_path, tiny_base, "http://127.0.0.1:9", model={"cpu_dtype": "fp32"})
    first, second = copy_adapters(trained_adapters, config)
    merged = load_served_twin(config)
    assert merged.engine.merged  # fp32: the fast path
    from peft import PeftModel

    base = load_served_twin(config, with_adapter=False)
    unmerged = PeftModel.from_pretrained(base.engine.model, str(config.adapters_dir / first))
    assert torch.allclose(
        logits_of(merged.engine.model, PROBE), logits_of(unmerged, PROBE), atol=1e-4
    )
    # and the adapter does change the model (the comparison above could fail)
    plain = load_served_twin(config, with_adapter=False)
    assert not torch.allclose(
        logits_of(plain.engine.model, PROBE), logits_of(unmerged, PROBE), atol=1e-4
    )
    # swapping back and forth returns to the same weights (unmerge restores the base)
    before = logits_of(merged.engine.model, PROBE)
    swap_adapter(merged, config.adapters_dir / second)
    swap_adapter(merged, config.adapters_dir / first)
    assert torch.allclose(logits_of(merged.engine.model, PROBE), before, atol=1e-5)
    # Half precision would round the merged deltas away: there the adapter stays separate.
    bf16 = bot_config(tmp_path, tiny_base, "http://127.0.0.1:9", model={"cpu_dtype": "bf16"})
    assert not load_served_twin(bf16).engine.merged


def break_base(folder: Path) -> None:
    settings = json.loads((folder / "adapter_config.json").read_text())
    settings["base_model_name_or_path"] = "someone/other-model-7b"
    (folder / "adapter_config.json").write_text(json.dumps(settings))


def break_shape(folder: Path) -> None:
    path = folder / "adapter_model.safetensors"
    state = load_file(str(path))
    key = next(k for k in state if k.endswith("lora_A.weight"))
    state[key] = torch.zeros(state[key].shape[0], state[key].shape[1] + 3)
    save_file(state, str(path))


def break_values(folder: Path) -> None:
    path = folder / "adapter_model.safetensors"
    state = load_file(str(path))
    key = next(k for k in state if k.endswith("lora_B.weight"))
    state[key] = torch.full_like(state[key], float("nan"))
    save_file(state, str(path))


def break_file(folder: Path) -> None:
    path = folder / "adapter_model.safetensors"
    path.write_bytes(path.read_bytes()[:100])


@pytest.mark.parametrize(
    ("damage", "why"),
    [
        (break_base, "was trained on 'someone/other-model-7b'"),
        (break_shape, "does not fit the base"),
        (break_values, "non-finite weights"),
        (break_file, "cannot be read"),
    ],
)
def test_broken_adapter_is_refused_and_the_old_one_stays(
    tmp_path: Path, tiny_base: Path, trained_adapters: Path, damage: object, why: str
) -> None:
    config = bot_config(tmp_path, tiny_base, "http://127.0.0.1:9")
    first, second = copy_adapters(trained_adapters, config)
    broken = config.adapters_dir / "29990101-000000"
    shutil.copytree(config.adapters_dir / second, broken)
    damage(broken)  # type: ignore[operator]
    twin = load_served_twin(config)
    before = logits_of(twin.engine.model, PROBE)
    with pytest.raises(AdapterRefused, match=why):
        swap_adapter(twin, broken)
    assert twin.version == first
    assert torch.equal(logits_of(twin.engine.model, PROBE), before)


@pytest.mark.anyio
async def test_bot_reports_a_refused_adapter_to_admins(
    tmp_path: Path, tiny_base: Path, trained_adapters: Path, api: BotApiStandIn
) -> None:
    config: Config = bot_config(tmp_path, tiny_base, api.url)
    first, second = copy_adapters(trained_adapters, config)
    broken = config.adapters_dir / "29990101-000000"
    shutil.copytree(config.adapters_dir / second, broken)
    break_shape(broken)
    async with serving(config) as runtime:
        registry.set_current(config.adapters_dir, broken.name)
        await api.wait_for(lambda a: any("refused" in t for t in a.texts(ADMIN)))
        assert runtime.worker.version == first
        api.push_message(1, "still answering?")
        await api.wait_for(lambda a: len(a.sent(chat_id=1)) >= 1)
        await api.settle()
        assert sum("refused" in t for t in api.texts(ADMIN)) == 1  # told once, not every poll


@pytest.mark.anyio
async def test_damaged_adapters_and_pointer_are_skipped_and_reported_once(
    tmp_path: Path,
    tiny_base: Path,
    trained_adapters: Path,
    api: BotApiStandIn,
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = bot_config(tmp_path, tiny_base, api.url)
    first, second = copy_adapters(trained_adapters, config)
    metrics = config.adapters_dir / second / "metrics.json"
    metrics.write_text(metrics.read_text()[:200])  # a full disk cut it short
    empty = config.adapters_dir / "20200101-000000"
    shutil.copytree(config.adapters_dir / first, empty)
    (empty / "metrics.json").write_text("{}")
    # Listing survives both, naming them; the current one is untouched.
    assert [a.version for a in registry.list_adapters(config.adapters_dir)] == [first]
    assert f"{second}: metrics.json is damaged (JSONDecodeError)" in caplog.text
    assert "20200101-000000: metrics.json is damaged (no steps, train_loss" in caplog.text
    async with serving(config) as runtime:
        assert runtime.worker.version == first
        (config.adapters_dir / "CURRENT").write_bytes(b"\xff\xfe\x00garbage")
        await api.wait_for(lambda a: any("CURRENT" in t for t in a.texts(ADMIN)))
        api.push_message(1, "still there?")
        await api.wait_for(lambda a: len(a.sent(chat_id=1)) >= 1)
        await api.settle(1.0)  # several reload polls
        assert sum("CURRENT" in t for t in api.texts(ADMIN)) == 1
        assert runtime.worker.version == first  # what served keeps serving
        assert "Traceback" not in caplog.text


@pytest.mark.anyio
async def test_started_with_a_damaged_current_the_newest_good_adapter_serves(
    tmp_path: Path, tiny_base: Path, trained_adapters: Path, api: BotApiStandIn
) -> None:
    config = bot_config(tmp_path, tiny_base, api.url)
    _first, second = copy_adapters(trained_adapters, config)
    (config.adapters_dir / "CURRENT").write_bytes(b"\xff\xfe\x00garbage")  # a disk error
    async with serving(config) as runtime:
        await api.wait_for(lambda a: any("CURRENT" in t for t in a.texts(ADMIN)))
        (told,) = [t for t in api.texts(ADMIN) if "CURRENT" in t]
        assert told.startswith(f"Adapter CURRENT was refused and {second} keeps serving: ")
        assert runtime.worker.version == second  # the last good twin, not the bare base


@pytest.mark.anyio
async def test_an_adapter_the_engine_cannot_take_now_is_tried_again_later(
    tmp_path: Path,
    tiny_base: Path,
    trained_adapters: Path,
    api: BotApiStandIn,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A passing failure (a full disk while converting it, its server busy) is no refusal:
    the admins hear it once, and the adapter is tried again, less and less often, until it
    serves."""
    import errno

    from serving.engine import EngineUnavailable

    config = bot_config(tmp_path, tiny_base, api.url)
    first, second = copy_adapters(trained_adapters, config)
    monkeypatch.setattr(adapters_module, "ADAPTER_RETRY_S", 0.3)
    failures: list[BaseException] = [
        OSError(errno.ENOSPC, "No space left on device"),
        EngineUnavailable("http://gpu:8000/v1/load_lora_adapter answered 503 (tried 3 times)"),
    ]
    tries: list[float] = []
    async with serving(config) as runtime:
        engine = runtime.worker._engine
        assert engine is not None
        swap = engine.swap

        def full_then_free(folder: Path) -> None:
            if folder.name == second:
                tries.append(time.monotonic())
                if failures:
                    raise failures.pop(0)
            swap(folder)

        monkeypatch.setattr(engine, "swap", full_then_free)
        registry.set_current(config.adapters_dir, second)
        await api.wait_for(lambda a: f"Now serving adapter {second}." in a.texts(ADMIN), 60)
        assert runtime.worker.version == second
        told = [t for t in api.texts(ADMIN) if "not served yet" in t]
        assert told == [
            f"Adapter {second} is not served yet and {first} keeps serving: OSError: [Errno 28] "
            "No space left on device. Trying again in 0 s, then less often."
        ]
        # backed off: the second wait doubled the first (polls come every 0.2 s)
        assert len(tries) == 3
        assert tries[2] - tries[1] >= 0.6 - 0.05


@pytest.mark.anyio
async def test_a_refused_adapter_stays_refused_until_current_moves(
    tmp_path: Path, tiny_base: Path, trained_adapters: Path, api: BotApiStandIn
) -> None:
    config = bot_config(tmp_path, tiny_base, api.url)
    first, second = copy_adapters(trained_adapters, config)
    broken = config.adapters_dir / "29990101-000000"
    shutil.copytree(config.adapters_dir / second, broken)
    break_shape(broken)
    async with serving(config) as runtime:
        registry.set_current(config.adapters_dir, broken.name)
        await api.wait_for(lambda a: sum("refused" in t for t in a.texts(ADMIN)) == 1)
        await api.settle(1.0)  # polls: not tried again while CURRENT points at it
        assert sum("refused" in t for t in api.texts(ADMIN)) == 1
        registry.set_current(config.adapters_dir, first)  # someone points elsewhere...
        await api.settle(0.5)
        registry.set_current(config.adapters_dir, broken.name)  # ...and back: tried afresh
        await api.wait_for(lambda a: sum("refused" in t for t in a.texts(ADMIN)) == 2)
        assert runtime.worker.version == first
