"""Personal data masked out of chat text before it is written into a training dataset.

A model trained on chats memorises what it sees often, and a phone number or card the owner
typed a dozen times is exactly that; so each value is replaced by a typed placeholder
(`<PHONE>`, `<EMAIL>`, `<CARD>`, `<IBAN>`, and for Russian identity numbers `<INN>`, `<SNILS>`,
`<PASSPORT>`) and the words around it are kept, because they are the owner's style, which is
the point of the dataset.

Order matters: e-mails first (a local part may be all digits), then IBANs and cards (long
digit runs a phone matcher would otherwise eat half of), then the owner's own phone (a value
known for sure beats any guess), then ИНН, СНИЛС and passports (the phone matcher takes some of
them for phones), then any other phone. Placeholders hold no digits and no "@", so a later pass
can never match inside an earlier placeholder and nothing nests.

IP addresses are left as they are: they are not personal data in a chat about a home router,
and no phone leniency used here matches them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import phonenumbers
from phonenumbers import Leniency, PhoneNumber, PhoneNumberFormat, PhoneNumberMatcher
from stdnum import luhn
from stdnum.iso7064 import mod_97_10
from stdnum.ru import inn

PHONE = "<PHONE>"
EMAIL = "<EMAIL>"
CARD = "<CARD>"
IBAN = "<IBAN>"
INN = "<INN>"
SNILS = "<SNILS>"
PASSPORT = "<PASSPORT>"
# Every placeholder `PiiScrubber.scrub` can write, for callers that count what was masked.
PLACEHOLDERS = (PHONE, EMAIL, CARD, IBAN, INN, SNILS, PASSPORT)

# \w and a Unicode TLD keep Cyrillic addresses (имя@почта.рф) in; labels are delimited by the
# dot so the domain part cannot backtrack catastrophically on long junk.
_EMAIL_RE = re.compile(r"(?<![\w.%+-])[\w.%+-]+@(?:[\w-]+\.)+[^\W\d_]{2,}(?![\w-])")

# A card candidate is a digit run plus groups split by one and the same separator, so a date
# and a number after it ("2024-05-12 89161234567") are never read as one card. Not after a
# letter, "+" (a phone) or a digit with ".", "," or "-" (the tail of a date, a decimal, a
# range); which part of it is a card is decided by `_is_card`, not here.
_CARD_RE = re.compile(
    r"(?<![\w+])(?<![0-9][.,-])[0-9]{2,19}(?:([ \u00a0-])[0-9]{2,19}(?:\1[0-9]{2,19})*)?"
    r"(?!\w)(?![.,][0-9])"
)
# Upper case only: a lower-case "de89..." in chat is vanishingly rare, while case-insensitive
# matching would test every "ab12cd..." token against mod-97.
_IBAN_RE = re.compile(
    r"(?<!\w)[A-Z]{2}[0-9]{2}[A-Z0-9]*(?:([ \u00a0-])[A-Z0-9]{1,34}(?:\1[A-Z0-9]{1,34})*)?(?!\w)"
)
_IBAN_HEAD_RE = re.compile(r"[A-Z]{2}[0-9]{2}[A-Z0-9]+")
_CHUNK_RE = re.compile(r"[0-9A-Z]+")

# The phonenumbers matcher costs ~0.3 ms per region on a short message and grows with its
# length, far too much to pay on every "see you at 10:30"; so it only ever sees the runs of
# digits that could be a phone (seven or more digits close together: fewer cannot be a phone
# in any region we match locally), each with a little context around it.
_NUMBER_RUN_RE = re.compile(r"[0-9](?:[\s().\-\u00a0]{0,3}[0-9])*")
_MIN_PHONE_DIGITS = 7
# Enough for the matcher's own context checks: a letter or currency sign before the number,
# a ":mm" after it that makes it a timestamp.
_PHONE_CONTEXT = 4
# Amounts grouped by thousands ("1 000 000", "25 000 000 руб") are common in chat and never
# phones: no local format in the regions we match is groups of three after a non-zero lead.
_AMOUNT_RE = re.compile(r"[1-9][0-9]{0,2}(?:[ \u00a0][0-9]{3}){2,}")
# Dates are the most common 8-digit runs in chat; their digits are discounted before a run
# is handed to the matcher.
_DATE_RE = re.compile(
    r"(?<![0-9])(?:[0-3]?[0-9]([.-])[01]?[0-9]\1(?:19|20)[0-9]{2}"
    r"|(?:19|20)[0-9]{2}([.-])[01]?[0-9]\2[0-3]?[0-9])(?![0-9])"
)
# What people put between the digits of a phone: spaces, brackets around the area code,
# dashes, dots, and the non-breaking spaces that phone apps paste.
_PHONE_SEP = r"[\s().\-\u00a0]{0,3}"
_NON_DIGIT_RE = re.compile(r"[^0-9]")
# The national part of the owner's number alone is masked only from this length on: shorter
# runs would hit ordinary numbers, and the owner's numbers are never that short in practice.
_MIN_OWNER_DIGITS = 7
# With an explicit "+" the number is international by construction, so a merely *possible*
# one (a new range, a fictional 555 number) is still masked; the length floor keeps
# "+10 000 000" (a salary raise) out.
_MIN_PLUS_DIGITS = 10
_PHONE_PASSES = 3
# phonenumbers' "unknown region": only numbers written with "+" parse in it.
_PLUS_ONLY = "ZZ"
# Russian identity numbers. ИНН and СНИЛС carry check digits, so the regexes only find where
# one may stand and the checksum decides; a passport has none, so it needs a word naming it.
# Each regex starts at a digit (the lookahead lets the engine skip every other character
# cheaply); a naming word is looked for only before a candidate, with `_has_word`.
#
# Where an identity number may stand: not inside a word, not after "+" (a phone), "/" (a URL
# path, a fraction) or a digit and ".", ",", ":" or "-" (the tail of a date, a decimal, a time,
# a range); and not followed by a word character or a decimal or range tail. A "/" after it is
# fine: "ИНН/КПП 7707083893/770701001" is how organisations write it.
_ID_BEFORE = r"(?=[0-9])(?<![\w+/])(?<![0-9][.,:-])"
_ID_AFTER = r"(?!\w)(?![.,:-][0-9])"
# ИНН: 12 digits (a person) or 10 (an organisation), always bare: the same digits grouped
# ("+7 916 123-45-67", "8 916 123 45 67") are phones.
_INN_RE = re.compile(rf"{_ID_BEFORE}[0-9]{{10}}(?:[0-9]{{2}})?{_ID_AFTER}")
# СНИЛС: "112-233-445 95", "112 233 445 95", "112233445 95" or bare "11223344595".
_SNILS_RE = re.compile(
    rf"{_ID_BEFORE}[0-9]{{3}}([- \u00a0]?)[0-9]{{3}}\1[0-9]{{3}}[- \u00a0]?[0-9]{{2}}{_ID_AFTER}"
)
# Numbers up to 001-001-998 were issued before the checksum existed and nobody checks them;
# they include "000-000-000 00", which would pass it.
_SNILS_FIRST_CHECKED = 1001999
# Passport: series "45 06" or "4506", then the number "123456", maybe after "№" or "номер"
# ("серия 4506 номер 123456", "паспорт 4506123456"). One placeholder takes the series, the
# number and the "номер" between them: one value, one placeholder.
_PASSPORT_RE = re.compile(
    rf"{_ID_BEFORE}[0-9]{{2}}[ \u00a0]?[0-9]{{2}}"
    rf"[ \u00a0,№]*(?:(?i:номер|no\.?|n)[ \u00a0]*)?[0-9]{{6}}{_ID_AFTER}"
)
# A word naming the number, as a whole word ("Инна" and "длинный" are not "инн"), then at
# most `_WORD_GAP` characters without a digit up to the number: "ИНН: ", "инн организации ",
# "паспорт гражданина РФ серия " all fit, and the word belongs to the first number after it
# only. Latin "INN" only in capitals: "Holiday Inn" is not one.
_WORD_GAP = 30
_WORD_END = rf"(?![^\W\d_])[^\d\n]{{0,{_WORD_GAP}}}$"
_INN_WORD_RE = re.compile(rf"(?<![^\W\d_])(?:(?i:инн)|INN){_WORD_END}")
_SNILS_WORD_RE = re.compile(rf"(?<![^\W\d_])(?i:снилс|snils){_WORD_END}")
_PASSPORT_WORD_RE = re.compile(
    rf"(?<![^\W\d_])(?i:паспорт[^\W\d_]{{0,4}}|пасп\.|серия|серии|passport){_WORD_END}"
)
# The longest word ("паспортного") and its gap fit in this many characters before a number.
_WORD_REACH = 12 + _WORD_GAP
# The shortest identity number (a 10-digit ИНН, a passport) and the СНИЛС length: messages
# with fewer digits in all skip these passes.
_MIN_ID_DIGITS = 10
_SNILS_DIGITS = 11
# A card is at most 19 digits in groups of 3 or more, an IBAN at most 34 characters in groups of 4:
# no value spans more groups than this, which bounds the search in `_first_value`.
_MAX_GROUPS = 10


@dataclass(frozen=True)
class PiiScrubber:
    """Masks phones, e-mails, payment cards, IBANs and Russian ИНН, СНИЛС, passports in chat text.

    `regions` are the phonenumbers regions whose local formats ("8 (916) 123-45-67",
    "(650) 253-0000") are recognised; numbers written with "+" are found whatever the regions.
    `owner_phones` are always masked, in any formatting of their digits.
    """

    regions: tuple[str, ...] = ("RU", "US", "GB", "DE")
    owner_phones: tuple[str, ...] = ()
    _owner_re: re.Pattern[str] | None = field(init=False, repr=False, compare=False, default=None)
    # (region, leniency); phonenumbers' leniencies are plain ints.
    _matchers: tuple[tuple[str, int], ...] = field(
        init=False, repr=False, compare=False, default=()
    )

    def __post_init__(self) -> None:
        regions = tuple(dict.fromkeys(r.strip().upper() for r in self.regions))
        unknown = [r for r in regions if r not in phonenumbers.SUPPORTED_REGIONS]
        if unknown:
            raise ValueError(f"unknown phone region(s): {', '.join(unknown)}")
        # VALID, not POSSIBLE, for local formats: POSSIBLE only checks the length, so it takes
        # "1999", "12.05.2024", "100500", "1 500", "192.168.0.1" and "10:30" for phones; VALID
        # checks the number against the region's real numbering plan and keeps them all.
        # The region-less POSSIBLE pass comes last, for "+" numbers no plan knows.
        matchers = [(r, Leniency.VALID) for r in regions] + [(_PLUS_ONLY, Leniency.POSSIBLE)]
        object.__setattr__(self, "_matchers", tuple(matchers))
        object.__setattr__(self, "_owner_re", _owner_pattern(self.owner_phones, regions))

    def scrub(self, text: str) -> str:
        """`text` with every value `PLACEHOLDERS` name replaced by its placeholder."""
        has_at = "@" in text
        digits = sum(map(text.count, "0123456789"))
        if digits == 0 and not has_at:
            return text  # most chat messages: nothing here can hold a value
        if has_at:
            text = _EMAIL_RE.sub(EMAIL, text)
        if digits < 2:
            return text
        text = _mask_values(text, _IBAN_RE, IBAN, _is_iban)
        if digits >= 13:
            text = _mask_values(text, _CARD_RE, CARD, _is_card)
        if self._owner_re is not None and digits >= _MIN_OWNER_DIGITS:
            text = self._owner_re.sub(_phone_placeholder, text)
        if digits >= _MIN_ID_DIGITS:
            text = _mask_ids(text, _INN_RE, INN, _is_inn)
            if digits >= _SNILS_DIGITS:
                text = _mask_ids(text, _SNILS_RE, SNILS, self._is_snils)
            # Last, so its word may reach over an ИНН or СНИЛС masked just before:
            # "ИНН и паспорт: <INN>, 4506 123456".
            text = _mask_ids(text, _PASSPORT_RE, PASSPORT, _is_passport)
        if digits >= _MIN_PHONE_DIGITS:
            text = self._mask_phones(text)
        return text

    def _is_snils(self, match: re.Match[str]) -> bool:
        number = match.group()
        digits = _NON_DIGIT_RE.sub("", number)
        if not _snils_ok(digits):
            return False
        # Eleven bare digits are also how most Russians write a mobile ("89161234567"), and one
        # in a hundred of those passes the checksum. Without the word "СНИЛС" such a number is
        # left to the phone matcher, which masks it anyway: only its type could be wrong.
        if digits == number and not _has_word(match, _SNILS_WORD_RE):
            return not _is_valid_phone(digits, [region for region, _ in self._matchers])
        return True

    def _mask_phones(self, text: str) -> str:
        # One region at a time, each on the windows still left: a message usually holds one
        # number, found by the first region, and the others then have nothing left to look at.
        # The matcher also glues numbers separated by a bare space ("8 (916) 123-45-67
        # 89161234567") into one candidate, rejects it and recovers only the later number;
        # a second pass over what is left picks up the rest.
        for _ in range(_PHONE_PASSES):
            found_any = False
            for region, leniency in self._matchers:
                windows = _phone_windows(text)
                if not windows:
                    return text
                spans: list[tuple[int, int]] = []
                for start, end in windows:
                    for a, b in _match_phones(text[start:end], region, leniency):
                        spans.append((start + a, start + b))
                if spans:
                    text = _replace_spans(text, spans, PHONE)
                    found_any = True
            if not found_any:
                break
        return text


def _match_phones(text: str, region: str, leniency: int) -> Iterator[tuple[int, int]]:
    for match in PhoneNumberMatcher(text, region, leniency=leniency):
        raw = match.raw_string
        if region == _PLUS_ONLY and len(_NON_DIGIT_RE.sub("", raw)) < _MIN_PLUS_DIGITS:
            continue
        yield match.start + len(_open_bracket(raw)), match.end


def _open_bracket(raw: str) -> str:
    # The matcher takes a "(" before a number even when it opens a parenthesis around the whole
    # number ("(+7 916 ...)"); masking it would leave a lone ")" in the sentence.
    return "(" if raw.startswith("(") and raw.count("(") > raw.count(")") else ""


def _phone_windows(text: str) -> list[tuple[int, int]]:
    windows: list[tuple[int, int]] = []
    for run in _NUMBER_RUN_RE.finditer(text):
        digits = sum(map(run.group().count, "0123456789"))
        if digits < _MIN_PHONE_DIGITS:
            continue
        plus = run.start() > 0 and text[run.start() - 1] == "+"
        if not plus and _AMOUNT_RE.fullmatch(run.group()):
            continue
        if "." in run.group() or "-" in run.group():
            for date in _DATE_RE.finditer(run.group()):
                digits -= sum(map(date.group().count, "0123456789"))
            if digits < _MIN_PHONE_DIGITS:
                continue
        start = max(0, run.start() - _PHONE_CONTEXT)
        end = run.end() + _PHONE_CONTEXT
        if windows and start <= windows[-1][1]:
            windows[-1] = (windows[-1][0], end)
        else:
            windows.append((start, end))
    return windows


def _phone_placeholder(match: re.Match[str]) -> str:
    return _open_bracket(match.group()) + PHONE


def _replace_spans(text: str, spans: Iterable[tuple[int, int]], placeholder: str) -> str:
    # Spans from different windows or rules may touch or overlap; merging them first means
    # one placeholder per number, never one inside another.
    out: list[str] = []
    pos = 0
    for start, end in sorted(spans):
        if end <= pos:
            continue
        if start < pos:
            start = pos
        else:
            out.append(text[pos:start])
            out.append(placeholder)
        pos = end
    out.append(text[pos:])
    return "".join(out)


def _mask_values(
    text: str, candidates: re.Pattern[str], placeholder: str, accept: Callable[[list[str]], bool]
) -> str:
    # The candidate regexes are greedy on purpose and cheap; here the longest run of whole
    # groups that is a real value wins, so "4111 1111 1111 1111 12/25" masks the card and keeps
    # the expiry, a Luhn-failing number before a real card does not hide the card, and the
    # search resumes right after a value, not after a candidate that ran into the next one.
    out: list[str] = []
    pos = 0
    while match := candidates.search(text, pos):
        value = _first_value(match, accept)
        if value is None:
            out.append(text[pos : match.end()])
            pos = match.end()
            continue
        out.append(text[pos : value[0]])
        out.append(placeholder)
        pos = value[1]
    if not out:
        return text
    out.append(text[pos:])
    return "".join(out)


def _mask_ids(
    text: str,
    candidates: re.Pattern[str],
    placeholder: str,
    accept: Callable[[re.Match[str]], bool],
) -> str:
    return candidates.sub(lambda m: placeholder if accept(m) else m.group(), text)


def _has_word(match: re.Match[str], word: re.Pattern[str]) -> bool:
    # `endpos` makes the "$" in the word regex stand right before the number.
    return word.search(match.string, max(0, match.start() - _WORD_REACH), match.start()) is not None


def _is_passport(match: re.Match[str]) -> bool:
    # Ten digits and no checksum could be any number at all; only the word makes it one.
    return _has_word(match, _PASSPORT_WORD_RE)


def _first_value(
    match: re.Match[str], accept: Callable[[list[str]], bool]
) -> tuple[int, int] | None:
    chunks = [(m.start(), m.end()) for m in _CHUNK_RE.finditer(match.group())]
    s = match.group()
    for i in range(len(chunks)):
        for j in range(min(len(chunks), i + _MAX_GROUPS), i, -1):
            if accept([s[a:b] for a, b in chunks[i:j]]):
                return match.start() + chunks[i][0], match.start() + chunks[j - 1][1]
    return None


def _is_card(groups: list[str]) -> bool:
    digits = "".join(groups)
    if not 13 <= len(digits) <= 19 or not digits.isdigit():
        return False
    # ISO/IEC 7812: payment cards start with 2-6 (Mir/Mastercard 2-series, Amex/JCB/Diners,
    # Visa, Mastercard, Discover/UnionPay/Maestro); this keeps millisecond timestamps and
    # Telegram ids (starting with 1) from passing Luhn by the 1-in-10 chance.
    if digits[0] not in "23456":
        return False
    # Written cards open with a 4-digit group and go on in groups of 3 to 6 (4-4-4-4, 4-6-5,
    # 4-4-4-4-3); anything else is a run of ordinary numbers ("12 34 56 ...", "2024 05 12").
    if len(groups) > 1 and (len(groups[0]) != 4 or any(not 3 <= len(g) <= 6 for g in groups)):
        return False
    return luhn.is_valid(digits)


def _is_iban(groups: list[str]) -> bool:
    compact = "".join(groups)
    if not 15 <= len(compact) <= 34 or not _IBAN_HEAD_RE.fullmatch(compact):
        return False
    # IBANs are printed in groups of four with a shorter tail; anything else is not one.
    if len(groups) > 1 and any(len(g) != 4 for g in groups[:-1]):
        return False
    # ISO 13616: country and check digits move to the end, then ISO 7064 mod 97-10 (letters
    # count as 10..35). Not stdnum.iban.is_valid: it also wants the country's registered
    # account format, and a value that passes mod 97 is masked whatever its country.
    return mod_97_10.is_valid(compact[4:] + compact[:4])


def _is_inn(match: re.Match[str]) -> bool:
    digits = match.group()
    # Region code 00 does not exist; it also keeps "000000000000" (checksum 0) out.
    if digits.startswith("00"):
        return False
    if len(digits) == 12:
        # Two check digits: one ordinary 12-digit number in a hundred passes both, so a bare
        # run is enough, and it wins over the phone matcher, which takes some of them
        # ("027165015237") for local numbers.
        return inn.is_valid(digits)
    # Ten digits need the word "ИНН" before them. One check digit lets one number in ten
    # through: Unix times ("1715500807"), Telegram ids and order numbers are 10 digits too, and
    # so is a Russian mobile without its prefix ("9161234567" passes the checksum). A bare
    # run is left to the phone matcher, which masks it when it is a phone; an organisation's
    # ИНН is public record (ЕГРЮЛ) anyway, unlike a person's 12-digit one.
    return inn.is_valid(digits) and _has_word(match, _INN_WORD_RE)


def _snils_ok(digits: str) -> bool:
    # python-stdnum has no СНИЛС (stdnum.ru holds ИНН and ОГРН only): written out here.
    if int(digits[:9]) < _SNILS_FIRST_CHECKED:
        return False
    total = sum(int(d) * w for d, w in zip(digits[:9], range(9, 0, -1), strict=True))
    if total > 101:
        total %= 101
    return (0 if total >= 100 else total) == int(digits[9:])


def _is_valid_phone(digits: str, regions: Iterable[str]) -> bool:
    # The phone matcher's own test (VALID in one of the regions), for a single candidate.
    for region in regions:
        try:
            number = phonenumbers.parse(digits, region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(number):
            return True
    return False


def _owner_pattern(phones: Iterable[str], regions: tuple[str, ...]) -> re.Pattern[str] | None:
    # The owner's number is the one value sure to recur in their chats, and it may be written
    # in ways phonenumbers does not take as VALID (a fictional export number, no country code,
    # odd grouping); so its digit strings are matched directly, whatever sits between them.
    variants: set[str] = set()
    for raw in phones:
        digits = _NON_DIGIT_RE.sub("", raw)
        if len(digits) < _MIN_OWNER_DIGITS:
            continue
        variants.add(digits)
        for number in _parse_owner(raw, digits, regions):
            national = phonenumbers.national_significant_number(number)
            variants.add(f"{number.country_code}{national}")
            local = _NON_DIGIT_RE.sub(
                "", phonenumbers.format_number(number, PhoneNumberFormat.NATIONAL)
            )
            # Without the country code the number is ambiguous only when short.
            variants.update(v for v in (national, local) if len(v) >= _MIN_OWNER_DIGITS)
    if not variants:
        return None
    # Longest first, so "+7 916 ..." is taken whole rather than as "+7 " plus the national part.
    body = "|".join(_PHONE_SEP.join(v) for v in sorted(variants, key=len, reverse=True))
    # The leading lookahead lets the engine skip the alternation at every other character.
    return re.compile(rf"(?=[+(0-9])(?<![0-9])(?:(?:\+|00)\s?)?\(?(?:{body})(?![0-9])")


def _parse_owner(raw: str, digits: str, regions: tuple[str, ...]) -> list[PhoneNumber]:
    # With "+" the country is explicit, so even an invalid number parses unambiguously.
    # Without it, only readings that are valid somewhere are trusted.
    if raw.strip().startswith("+"):
        try:
            return [phonenumbers.parse(raw, None)]
        except phonenumbers.NumberParseException:
            return []
    numbers = []
    for candidate, region in [(f"+{digits}", None), *((digits, r) for r in regions)]:
        try:
            number = phonenumbers.parse(candidate, region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(number):
            numbers.append(number)
    return numbers
