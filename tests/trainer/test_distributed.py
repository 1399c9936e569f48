"""`twin train` under torchrun: two CPU processes (DDP over gloo) train the tiny model.

Every rank trains; only the main one measures, registers and prints. The adapter must be the
one a single process trains on the same 8 examples per step (2 ranks x batch 4 there,
batch 4 x grad_accumulation 2 here).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO
from tests.trainer.helpers import PROMPTS, REPLIES, make_config
from trainer import registry
from trainer.metrics import AdapterMetrics
from twin.core.config import Config
from twin.core.conversation import ChatMessage
from twin.core.loading import load_config

WORDS = [
    "ok",
    "no",
    "yes",
    "lol",
    "sure",
    "nah",
    "maybe",
    "later",
    "now",
    "soon",
    "tbh",
    "idk",
    "brb",
    "omg",
    "haha",
]

# Measured on seeds 7, 42, 99 and 1234, in fp32 and in bf16: the two held-out losses were
# bitwise equal (each DDP step sums the same 8 examples' gradients as one process's two
# micro-batches), while training moved the loss by ~0.45 and a process that trained on one
# rank's half of each step alone landed 0.004-0.022 away. 1e-4 leaves room for another
# summation order (other gloo or BLAS builds) and still catches a rank training alone.
TOLERANCE = 1e-4


def write_equal_lengths(folder: Path, base: Path) -> None:
    """24 different two-word replies whose examples all have the same token length. The
    length-grouped sampler cuts a random permutation into groups of a process's batch x
    grad_accumulation (4 on each rank here, 8 in one process), sorts each group by length and
    moves the longest example to the front: with varied lengths the two runs' steps would hold
    different examples. With one length only the permutation decides, and it is the same in
    one process as in two: every step holds the same 8 examples."""
    from trainer.data import encode_examples
    from trainer.model import load_tokenizer

    tokenizer = load_tokenizer(str(base))
    system: ChatMessage = {"role": "system", "content": "You are Mira. Reply as Mira would."}
    chats: list[list[ChatMessage]] = [
        [system, {"role": "user", "content": PROMPTS[0]}, {"role": "assistant", "content": reply}]
        for reply in (f"{a} {b}" for a in WORDS for b in WORDS if a != b)
    ]
    lengths = [len(e["input_ids"]) for e in encode_examples(tokenizer, chats, 128)]
    common = max(set(lengths), key=lengths.count)
    train = [chat for chat, n in zip(chats, lengths, strict=True) if n == common][:24]
    assert len(train) == 24
    evals = [
        [
            system,
            {"role": "user", "content": PROMPTS[i % len(PROMPTS)]},
            {"role": "assistant", "content": REPLIES[i]},
        ]
        for i in range(6)
    ]
    for name, rows in (("train.jsonl", train), ("eval.jsonl", evals)):
        lines = [json.dumps({"messages": messages}) for messages in rows]
        (folder / name).write_text("\n".join(lines) + "\n")


def distributed_config(folder: Path, base: Path, **train: object) -> Config:
    """make_config's run in fp32 (bf16 only where the CPU has AMX would make the numbers
    machine-dependent), on the equal-length dataset, saving a checkpoint every 4 steps."""
    folder.mkdir(parents=True)
    config = make_config(folder, base, checkpoint_steps=4, **train)
    assert config.source is not None
    text = config.source.read_text().replace("[model]\n", '[model]\ncpu_dtype = "fp32"\n')
    config.source.write_text(text)
    write_equal_lengths(config.dataset_dir, base)
    return load_config(config.source)


def cpu_env() -> dict[str, str]:
    # No GPU may be used even where there is one: both runs must take the same CPU path.
    return {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}


def run_twin(config: Config, *launcher: str) -> subprocess.CompletedProcess[str]:
    assert config.source is not None
    command = [*launcher, "-m", "twin", "--config", str(config.source), "train"]
    return subprocess.run(
        command, cwd=REPO, env=cpu_env(), capture_output=True, text=True, timeout=600, check=False
    )


def only_adapter(config: Config) -> AdapterMetrics:
    (adapter,) = registry.list_adapters(config.adapters_dir)
    assert adapter.state == "current"
    assert registry.current_version(config.adapters_dir) == adapter.version
    return adapter.metrics


def test_torchrun_trains_one_adapter_like_one_process(tmp_path: Path, tiny_base: Path) -> None:
    ddp = distributed_config(tmp_path / "ddp", tiny_base)
    stale = ddp.adapters_dir / ".tmp-20260101-000000"  # what a killed run leaves
    stale.mkdir(parents=True)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    two = run_twin(ddp, *torchrun, "--nproc_per_node", "2")
    assert two.returncode == 0, two.stderr[-3000:]

    # One adapter, current, nothing half-written left; only the main process printed.
    distributed = only_adapter(ddp)
    assert not list(ddp.adapters_dir.glob(".tmp-*"))
    assert two.stderr.count("removed 1 incomplete adapter folder") == 1
    assert two.stderr.count("base model held-out loss") == 1
    assert not (ddp.data_dir / "checkpoints").exists()
    lines = [line for line in two.stdout.splitlines() if line.startswith("adapter ")]
    assert len(lines) == 1 and distributed.version in lines[0], two.stdout

    single = distributed_config(tmp_path / "single", tiny_base, grad_accumulation=2)
    one = run_twin(single, sys.executable)
    assert one.returncode == 0, one.stderr[-3000:]
    alone = only_adapter(single)

    # Both ranks trained: the tokens are counted over both, as many as one process saw.
    assert distributed.run.steps == alone.run.steps == 12
    assert distributed.run.train_tokens == alone.run.train_tokens
    assert distributed.base_eval_loss == alone.base_eval_loss
    assert distributed.eval_loss < distributed.base_eval_loss - 0.1
    assert abs(distributed.eval_loss - alone.eval_loss) < TOLERANCE, (
        distributed.eval_loss,
        alone.eval_loss,
    )


EXAMPLES = REPO / "examples" / "accelerate"


def test_example_accelerate_configs_are_what_accelerate_reads() -> None:
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DistributedType

    ddp = load_config_from_file(str(EXAMPLES / "multi_gpu.yaml"))
    fsdp = load_config_from_file(str(EXAMPLES / "fsdp.yaml"))
    zero3 = load_config_from_file(str(EXAMPLES / "deepspeed_zero3.yaml"))
    assert ddp.distributed_type == DistributedType.MULTI_GPU and ddp.num_processes == 2
    # twin sets bf16 / fp16 from its plan; a launcher's mixed precision would override it.
    assert ddp.mixed_precision == fsdp.mixed_precision == "no"
    assert fsdp.distributed_type == DistributedType.FSDP
    f = fsdp.fsdp_config
    assert f["fsdp_sharding_strategy"] == "FULL_SHARD"
    # accelerate launch refuses RAM-efficient loading without syncing the ranks' weights.
    assert f["fsdp_cpu_ram_efficient_loading"] and f["fsdp_sync_module_states"]
    assert zero3.distributed_type == DistributedType.DEEPSPEED
    assert zero3.deepspeed_config["zero_stage"] == 3 and zero3.deepspeed_config["zero3_init_flag"]


def test_fsdp_launch_is_refused_in_one_line_before_loading(tmp_path: Path) -> None:
    # The real launcher with the example file: the variables it sets are the ones twin reads.
    # The base does not exist: the refusal must come before anything touches it.
    config = make_config(tmp_path, tmp_path / "no-such-base")
    assert config.source is not None
    launch = [sys.executable, "-m", "accelerate.commands.launch"]
    fsdp = run_twin(config, *launch, "--config_file", str(EXAMPLES / "fsdp.yaml"))
    assert fsdp.returncode != 0
    errors = [line for line in fsdp.stderr.splitlines() if line.startswith("twin: error:")]
    # One per process at most: the launcher SIGTERMs the other rank as soon as one exits, so
    # the second line may never be printed (CI saw that race).
    assert 1 <= len(errors) <= 2 and len(set(errors)) == 1, fsdp.stderr[-3000:]
    assert "FSDP shards the base" in errors[0] and "torchrun" in errors[0]
    assert str(REPO / "trainer") not in fsdp.stderr  # no traceback of ours (the launcher's own)


def test_zero3_is_refused_and_zero2_is_not(
    tmp_path: Path, tiny_base: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from trainer.train import setup
    from twin.core.errors import TwinError

    config = make_config(tmp_path, tiny_base)
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "3")
    with pytest.raises(TwinError, match="DeepSpeed ZeRO-3 shards the base"):
        setup(config, max_steps=None, resume=False)
    # A DeepSpeed config file of its own (accelerate's deepspeed_config_file) says the stage.
    monkeypatch.delenv("ACCELERATE_DEEPSPEED_ZERO_STAGE")
    ds_config = tmp_path / "ds.json"
    ds_config.write_text(json.dumps({"zero_optimization": {"stage": 3}}))
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_CONFIG_FILE", str(ds_config))
    with pytest.raises(TwinError, match="ZeRO-3"):
        setup(config, max_steps=None, resume=False)
    # ZeRO-2 shards optimizer states and gradients, not the weights the main process reads.
    ds_config.write_text(json.dumps({"zero_optimization": {"stage": 2}}))
    assert setup(config, max_steps=None, resume=False).main_process
