"""Benchmark: transcribe voice messages with Whisper base (int8, faster-whisper) on the CPU.

Makes a speech set as a friend would send it: chat-like sentences in English and Russian,
spoken by espeak-ng and encoded by opusenc into Ogg/Opus, as Telegram sends a voice message
(into bench/out/voice/, made once). Loads twin's `Transcriber` once, transcribes every file
in its language, and reports the real-time factor (seconds spent transcribing / seconds of
speech), the model's load time, the process's peak RSS and the word error rate per language.

espeak-ng's voice is robotic, so its WER is not what Whisper base reaches on real speech:
bench/__main__.py sets the published figures beside it.

    .venv/bin/python -m bench.voice [--quick] [--out FILE]   (or all benchmarks: python -m bench)
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import re
import resource
import shutil
import subprocess
import sys
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import emit

ROOT = Path(__file__).resolve().parents[1]
VOICE_OUT = ROOT / "bench" / "out" / "voice"
FIXTURES = ROOT / "tests" / "fixtures" / "voice"

# Everyday messages with no numbers in them: Whisper writes numbers as digits ("at 6"), which
# would count as errors against the words espeak-ng was given.
SENTENCES = {
    "en": (
        "Hey, are you coming to the party tonight or not?",
        "I just got home and the cat is asleep on my bed.",
        "Can you pick up some bread and milk on your way back?",
        "Sorry I missed your call, I was stuck in a meeting.",
        "Let's grab coffee tomorrow morning before work if you are free.",
        "The weather is terrible today, I think I will stay inside.",
        "Did you watch the new episode last night? It was amazing.",
        "I am running a little late, please wait for me at the station.",
        "Thanks for dinner yesterday, the soup was really good.",
        "My phone is almost dead, so text me instead of calling.",
        "We should go hiking this weekend if it does not rain.",
        "Have you seen my keys anywhere? I cannot find them.",
        "Happy birthday! I hope you have a wonderful day with your family.",
        "The train is delayed again, so I will be home late.",
        "Could you send me the photos from the trip when you have time?",
        "I finally finished the book you gave me, and I loved the ending.",
    ),
    "ru": (
        "Привет, ты сегодня придёшь на ужин или нет?",
        "Я уже дома, кот спит на моей кровати.",
        "Купи, пожалуйста, хлеб и молоко по дороге домой.",
        "Извини, я не слышал звонок, был на встрече.",
        "Давай завтра утром выпьем кофе перед работой.",
        "Погода сегодня ужасная, я лучше посижу дома.",
        "Ты смотрел вчера новую серию? Она просто отличная.",
        "Я немного опаздываю, подожди меня у входа в метро.",
        "Спасибо за вчерашний ужин, суп был очень вкусный.",
        "У меня садится телефон, лучше напиши мне сообщение.",
        "Давай поедем за город в выходные, если не будет дождя.",
        "Ты не видел мои ключи? Никак не могу их найти.",
        "С днём рождения! Желаю тебе счастья и хорошего настроения.",
        "Поезд опять задерживается, так что я приеду поздно.",
        "Пришли мне, пожалуйста, фотографии из поездки, когда будет время.",
        "Я наконец дочитала книгу, которую ты подарил, и мне понравился конец.",
    ),
}
QUICK_SENTENCES = 3  # per language

# How each language is spoken: espeak-ng's voice and words per minute (Russian slower, as its
# robotic Russian is harder to follow), and opusenc's bitrate in kbit/s.
ESPEAK = {"en": ("en-us", "150"), "ru": ("ru", "130")}
OPUS_KBPS = "24"
TOOLS = {"espeak-ng": "espeak-ng", "opusenc": "opus-tools"}  # command: its apt package

# The committed voice messages (tests/fixtures/voice/README.md has how they were made).
FIXTURE_SET = (
    ("en", FIXTURES / "see-you-on-monday.en.ogg", "See you on Monday at six, near the old bridge."),
    ("ru", FIXTURES / "privet.ru.ogg", "Привет, увидимся в понедельник."),
)
EXAMPLES = 3  # (reference, hypothesis) pairs kept per language


@dataclass(frozen=True)
class Heard:
    language: str
    reference: str
    hypothesis: str
    audio_s: float
    transcribe_s: float


def missing_tools() -> list[str]:
    return [tool for tool in TOOLS if shutil.which(tool) is None]


def spoken(language: str, text: str) -> Path:
    """`text` as an Ogg/Opus voice message in bench/out/voice/, made once: the name carries
    what made it, so a changed sentence or setting makes a new file."""
    voice, speed = ESPEAK[language]
    recipe = "\n".join((voice, speed, OPUS_KBPS, text))
    name = f"{language}-{hashlib.sha256(recipe.encode()).hexdigest()[:12]}.ogg"
    ogg = VOICE_OUT / name
    if ogg.exists() and ogg.stat().st_size > 0:
        return ogg
    VOICE_OUT.mkdir(parents=True, exist_ok=True)
    wav = ogg.with_suffix(".wav")
    subprocess.run(["espeak-ng", "-v", voice, "-s", speed, "-w", str(wav), text], check=True)
    # Written aside and renamed: an interrupted run never leaves half a file to be reused.
    partial = ogg.with_suffix(".partial")
    subprocess.run(
        ["opusenc", "--quiet", "--bitrate", OPUS_KBPS, str(wav), str(partial)], check=True
    )
    wav.unlink()
    os.replace(partial, ogg)
    return ogg


def speech_set(quick: bool) -> tuple[list[tuple[str, Path, str]], str]:
    """(language, file, what was said) for every voice message, and where they came from."""
    if missing := missing_tools():
        packages = ", ".join(TOOLS[tool] for tool in missing)
        if not quick:
            raise SystemExit(
                f"bench.voice: {' and '.join(missing)} not found: apt install {packages}"
            )
        return list(FIXTURE_SET), (
            f"tests/fixtures/voice ({' and '.join(missing)} not found: apt install {packages})"
        )
    per_language = QUICK_SENTENCES if quick else None
    made = [
        (language, spoken(language, text), text)
        for language, texts in SENTENCES.items()
        for text in texts[:per_language]
    ]
    return made, f"espeak-ng, Ogg/Opus at {OPUS_KBPS} kbit/s"


def normalized(text: str) -> str:
    """Both sides of a WER the same way: case, punctuation and "ё" are not what is scored."""
    text = text.lower().replace("ё", "е")
    text = "".join(c for c in text if not unicodedata.category(c).startswith("P"))
    return re.sub(r"\s+", " ", text).strip()


def word_error_rate(heard: list[Heard]) -> float:
    """Errors over all the reference words of `heard` (not a mean of per-file rates)."""
    import jiwer  # measure_voice checked it is there, before the long part

    return float(
        jiwer.wer(
            [normalized(h.reference) for h in heard], [normalized(h.hypothesis) for h in heard]
        )
    )


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KB on Linux


def measure_voice(quick: bool) -> dict[str, Any]:
    from ingest.voice import Transcriber, cpu_count, decoded
    from twin.core.config import VoiceConfig, default_model_cache

    if importlib.util.find_spec("jiwer") is None:
        raise SystemExit(
            "bench.voice: jiwer is not installed: pip install jiwer (in twin's dev extra)"
        )
    files, source = speech_set(quick)
    # The machine may be shared: what else ran says how far to trust the timings.
    load_average_before = os.getloadavg()[0]
    voice = VoiceConfig()
    transcriber = Transcriber(voice, default_model_cache(), language=None)
    started = time.perf_counter()
    # The model loads at the first transcription; loading it here keeps that out of the RTF.
    transcriber.load()
    load_s = time.perf_counter() - started

    in_language = {lang: transcriber.with_language(lang) for lang in SENTENCES}
    heard: list[Heard] = []
    for i, (language, path, reference) in enumerate(files, 1):
        started = time.perf_counter()
        transcript = in_language[language].transcribe(path)
        seconds = time.perf_counter() - started
        heard.append(Heard(language, reference, transcript.text, transcript.seconds, seconds))
        print(
            f"[{i}/{len(files)}] {language} {transcript.seconds:.1f} s of speech in "
            f"{seconds:.2f} s: {transcript.text}",
            flush=True,
        )
    # The transcription above decodes the sound too: decoding alone, for the raw numbers.
    started = time.perf_counter()
    for _, path, _ in files:
        decoded(path)
    decode_s = time.perf_counter() - started

    def rtf(of: list[Heard]) -> float:
        return sum(h.transcribe_s for h in of) / sum(h.audio_s for h in of)

    languages = sorted({h.language for h in heard})
    by_language = {lang: [h for h in heard if h.language == lang] for lang in languages}
    result = {
        "quick": quick,
        "speech": source,
        "model": transcriber.name,
        "compute_type": voice.compute_type,
        "threads": cpu_count(),
        "files": {lang: len(of) for lang, of in by_language.items()},
        "audio_s": sum(h.audio_s for h in heard),
        "transcribe_s": sum(h.transcribe_s for h in heard),
        "decode_s": decode_s,
        "load_s": load_s,
        "load_average_before": load_average_before,
        "realtime_factor": rtf(heard),
        **{f"realtime_factor_{lang}": rtf(of) for lang, of in by_language.items()},
        **{f"wer_{lang}": word_error_rate(of) for lang, of in by_language.items()},
        "peak_rss_gb": peak_rss_gb(),
        "examples": {
            lang: [[h.reference, h.hypothesis] for h in of[:EXAMPLES]]
            for lang, of in by_language.items()
        },
    }
    print(
        f"voice: {len(heard)} messages, {result['audio_s']:.0f} s of speech in "
        f"{result['transcribe_s']:.1f} s (real-time factor {result['realtime_factor']:.2f}), "
        f"load {load_s:.1f} s, peak RSS {result['peak_rss_gb']:.2f} GB, "
        + ", ".join(f"WER {lang} {result[f'wer_{lang}']:.2f}" for lang in languages),
        file=sys.stderr,
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"{QUICK_SENTENCES} sentences per language; the committed voice messages when "
        "espeak-ng or opusenc is missing",
    )
    parser.add_argument("--out", type=Path, help="also write the result there (JSON)")
    args = parser.parse_args()
    emit(measure_voice(args.quick), args.out)


if __name__ == "__main__":
    main()
