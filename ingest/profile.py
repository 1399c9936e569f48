"""The owner's profile: short facts they chose to share with every chat (`twin facts`, `twin
fact add|forget`, and the same through /persona). Candidates are mined from what the owner
said about themself (a dozen regexes over the store), shown for approval, and never used
until approved; approved facts live in the recall index (ingest.memory)."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Iterator

from ingest.dialog import said_of
from ingest.memory import MemoryIndex, fold_word, open_memory
from ingest.pii import PiiScrubber
from ingest.recall import memory_path, scrubber_for
from ingest.selection import chat_selection
from ingest.store import Chat, Store, open_store
from twin.core.config import Config
from twin.core.errors import TwinError

CANDIDATES = 8


def fact_listing(config: Config) -> str:
    """The approved facts, numbered, then candidates from the history to approve."""
    with open_memory(memory_path(config)) as index:
        facts = index.facts()
        lines = ["Shared with every chat:"] if facts else ["No profile facts yet."]
        lines += [f"{n}. {fact.text}" for n, fact in enumerate(facts, start=1)]
        candidates: list[str] = []
        if config.store_path.exists():
            with open_store(config.store_path) as store:
                scrubber = scrubber_for(config, store.owner())
                # Only chats the dataset may use: never an excluded chat, nor Saved Messages.
                # A listing writes nothing (the bot shows it too): pins are kept by what
                # builds from the store (the dataset, the memory update, the pull).
                uses = chat_selection(store, config, save=False).uses
                candidates = profile_candidates(index, store, scrubber, CANDIDATES, select=uses)
    if candidates:
        lines += ["", "From your history, not shared until you add them:"]
        lines += [f"- {text}" for text in candidates]
        lines += ["Add one with: fact add TEXT"]
    return "\n".join(lines)


def add_fact(config: Config, text: str) -> str:
    text = " ".join(text.split())
    if not text:
        raise TwinError("a fact needs some text, e.g. fact add i'm vegetarian")
    if len(text) > 200:
        raise TwinError(f"a fact is at most 200 characters; this one has {len(text)}")
    with open_memory(memory_path(config)) as index:
        index.add_fact(text)
        count = len(index.facts())
    return f"Shared with every chat from the next reply on ({count} facts). Retrain to teach it."


def forget_fact(config: Config, number: int) -> str:
    with open_memory(memory_path(config)) as index:
        facts = index.facts()
        if not 1 <= number <= len(facts):
            raise TwinError(f"there is no fact {number} (facts: {len(facts)}; see `facts`)")
        index.forget_fact(facts[number - 1].id)
    return f"Forgotten: {facts[number - 1].text}"


def profile_candidates(
    index: MemoryIndex,
    store: Store,
    scrubber: PiiScrubber,
    limit: int = 10,
    *,
    select: Callable[[Chat], bool] | None = None,
) -> list[str]:
    """What the owner says about themself ("i'm vegetarian", "у меня кошка муся"), mined
    from their messages in the chats `select` allows (None: all) and ranked, for them to
    approve with `add_fact`. Nothing is stored; facts already in `index` are left out."""
    approved = {_candidate_key(fact.text) for fact in index.facts()}
    return [
        scrubber.scrub(text)
        for text in mine_profile_candidates(store, limit + len(approved), select=select)
        if _candidate_key(text) not in approved
    ][:limit]


# ---- mining the store -------------------------------------------------------------------

_WORD_RE = re.compile(r"\w+")
# A clause is where a statement can start: sentences split at . ! ? … ; and new lines,
# then at commas, dashes and "but/and/so/но/а/и" (so "but i live in leeds now, came for uni"
# gives "i live in leeds now").
_SENTENCE_RE = re.compile(r"[^.!?…;\n]+[.!?…;]*")
_CLAUSE_SPLIT_RE = re.compile(
    r"\s*(?:[,:(](?!\d)|\s[-–—]\s|\b(?:but|and|though|because|но|а|и|что|потому что)\b)\s*",
    re.IGNORECASE,
)
# Laughter, emoticons and fillers trimmed off a statement's ends.
_FILLER_RE = re.compile(
    r"^(?:ok|okay|well|oh|also|actually|yeah|ну|да|не|кстати|кста|вообще|короче)\b[\s,]*"
    r"|[\s,]*\b(?:lol|haha\w*|lmao|btw|tbh|ngl|ахах\w*|хах\w*|кста|кстати|вообще|же|ведь)\b"
    r"[\s!.)(:]*$|[\s!.)(:;*]+$",
    re.IGNORECASE,
)
# English first-person present statements about oneself.
_EN_STABLE_RE = re.compile(
    r"^i(?:'m| am| live| work| study| have| own| speak| do not| don't| can't| cannot| never"
    r"| always| usually| hate| love| prefer| play| teach| grew up| come from| was born)\b",
    re.IGNORECASE,
)
_EN_STRONG_RE = re.compile(
    r"^i (?:live|work|study|have|own|speak|don't \w+|do not \w+|can't \w+|cannot \w+|never \w+"
    r"|grew up|come from|was born)\b|^i(?:'m| am) (?:a |an |vegan|vegetarian|from |allergic)",
    re.IGNORECASE,
)
# "i'm in!!", "i'm so tired", "i'm going": states of the moment, not facts about oneself.
_EN_TRANSIENT_RE = re.compile(
    r"^i(?:'m| am) (?:\w+ing\b|so\b|very\b|still\b|not\b|like\b|in\b|on\b|at\b|off\b|at\b"
    r"|just\b|about\b|sorry|late|here|home|back|done|ok|fine|tired|awake|sure|terrified"
    r"|obsessed|free|busy|out|up)",
    re.IGNORECASE,
)
# Russian: "я живу", "я не ем", "у меня кошка"; a verb after "я" must look present tense
# (1st person singular ends in -у/-ю, reflexive -усь/-юсь), so "я купила" (past) is out.
_RU_SUBJECT_RE = re.compile(r"^(?:я|у меня|мой|моя|мои|моё)\b", re.IGNORECASE)
_RU_PRESENT_RE = re.compile(
    r"^я (?:(?:не|никогда не|тоже не|уже не|давно|всё ещё|все еще)\s+)?"
    r"(?:\w+[ую]|\w+[ую]сь|ем)\b",
    re.IGNORECASE,
)
_RU_STRONG_RE = re.compile(
    r"^(?:я (?:не )?(?:живу|работаю|учусь|ем|пью|курю|люблю|говорю|вожу|ненавижу|занимаюсь)"
    r"|у меня (?:есть )?(?:кошка|кот|собака|пёс|пес|муж|жена|сын|дочь|дети|ребёнок|аллергия"
    r"|брат|сестра|машина|парень|девушка))\b",
    re.IGNORECASE,
)
_RU_TRANSIENT_RE = re.compile(
    r"\b(?:\w+(?:л|ла|ло|ли|лась|лся|лись)|бы|щас|сейчас|сегодня|завтра|вчера|потом|тоже"
    r"|скоро|болят|болит|завис|новости|знаю|думаю|помню|понимаю|хочу|надеюсь|жду|иду|еду|бегу"
    r"|сплю|понедельник\w*|вторник\w*|сред[уа]|четверг\w*|пятниц\w*|суббот\w*|воскресень\w*"
    r"|сижу|лежу|стою|могу)\b",
    re.IGNORECASE,
)
_EN_TIME_RE = re.compile(
    r"\b(?:today|tonight|tomorrow|yesterday|this (?:week|morning|evening|afternoon)"
    r"|right now|later|soon|until|again|monday|tuesday|wednesday|thursday|friday|saturday"
    r"|sunday|weekend)\b",
    re.IGNORECASE,
)
_CLOCK_RE = re.compile(r"\b\d{1,2}[:.]\d{2}\b")
_CANDIDATE_WORDS = (2, 10)


def mine_profile_candidates(
    store: Store, limit: int = 10, *, select: Callable[[Chat], bool] | None = None
) -> list[str]:
    """The owner's statements about themself, most likely facts first (not masked), from the
    chats `select` allows (None: all; pass `ingest.selection.ChatSelection.uses`).

    A candidate is a clause of the owner's own typed words that starts in the first person
    ("i'm", "i live", "i can't", "я живу", "я не ем", "у меня"), in the present tense, not a
    question, 2 to 10 words, with no sign of the moment in it ("today", "щас", "i'm so ...",
    a past-tense verb). Ranked by how fact-like its verb is (live, work, have, don't, can't,
    am a ...), how often the owner said it, and how short it is; ties go to the newer one.
    """
    owner = store.owner()
    if owner is None:
        return []
    found: dict[str, tuple[float, int, str]] = {}  # key -> (score, date, text)
    said_times: Counter[str] = Counter()
    for chat in store.chats():
        if select is not None and not select(chat):
            continue
        for message in store.messages_of(chat.chat_id):
            if not owner.wrote(message) or said_of(message, owner) is None:
                continue
            for clause in _statements(message.text):
                score = _statement_score(clause)
                if score is None:
                    continue
                key = _candidate_key(clause)
                said_times[key] += 1
                if key not in found or message.date >= found[key][1]:
                    found[key] = (score, message.date, clause)
    ranked = sorted(
        found.items(),
        key=lambda item: (
            -(item[1][0] + math.log2(said_times[item[0]])),
            -item[1][1],
        ),
    )
    return [text for _, (_, _, text) in ranked[:limit]]


def _statements(text: str) -> Iterator[str]:
    for sentence in _SENTENCE_RE.findall(text):
        if "?" in sentence:
            continue
        for clause in _CLAUSE_SPLIT_RE.split(sentence):
            clause = _trim(clause)
            if clause:
                yield clause


def _trim(clause: str) -> str:
    clause = " ".join(clause.split())
    while True:
        shorter = _FILLER_RE.sub("", clause).strip()
        if shorter == clause:
            return clause
        clause = shorter


def _statement_score(clause: str) -> float | None:
    """How fact-like a clause is, or None when it is no statement about the owner."""
    words = len(clause.split())
    if not _CANDIDATE_WORDS[0] <= words <= _CANDIDATE_WORDS[1]:
        return None
    lowered = clause.casefold()
    if _CLOCK_RE.search(lowered):  # "at 8:40", "в 9:40": an appointment, not a trait
        return None
    if _EN_STABLE_RE.match(lowered):
        if _EN_TRANSIENT_RE.match(lowered) or _EN_TIME_RE.search(lowered):
            return None
        score = 2.0 if _EN_STRONG_RE.match(lowered) else 0.0
    elif _RU_SUBJECT_RE.match(lowered):
        if _RU_TRANSIENT_RE.search(lowered):
            return None
        if lowered.startswith("я") and not _RU_PRESENT_RE.match(lowered):
            return None
        score = 2.0 if _RU_STRONG_RE.match(lowered) else 0.0
    else:
        return None
    # Short statements are the clearest facts: "i can't drive" over a long story.
    return score + 1.0 / words


def _candidate_key(text: str) -> str:
    return " ".join(fold_word(word) for word in _WORD_RE.findall(text))
