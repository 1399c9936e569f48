"""PII masking: planted values never survive; ordinary numbers always do."""

from __future__ import annotations

import re

import pytest

from ingest.pii import PLACEHOLDERS, PiiScrubber

SCRUBBER = PiiScrubber(owner_phones=("+998 91 1234567",))

PLANTED = [
    ("8 (916) 123-45-67", "<PHONE>"),
    ("89161234567", "<PHONE>"),
    ("8-916-123-45-67", "<PHONE>"),
    ("+7 916 123-45-67", "<PHONE>"),
    ("+7 916 555-12-34", "<PHONE>"),
    ("+79161234567", "<PHONE>"),
    ("+1 650 253 0000", "<PHONE>"),
    ("(650) 253-0000", "<PHONE>"),
    ("+44 20 7946 0958", "<PHONE>"),
    ("+49 30 901820", "<PHONE>"),
    ("+44 7700 900456", "<PHONE>"),  # a fictional range: caught as international notation
    ("+1 555 111 22 33", "<PHONE>"),  # not VALID anywhere, but "+" and 11 digits
    ("anna.k@example.org", "<EMAIL>"),
    ("ivan_petrov+chats@mail.ru", "<EMAIL>"),
    ("79161234567@mail.ru", "<EMAIL>"),  # not half-eaten as a phone
    ("имя@почта.рф", "<EMAIL>"),
    ("4111 1111 1111 1111", "<CARD>"),
    ("5500-0000-0000-0004", "<CARD>"),
    ("4111111111111111", "<CARD>"),
    ("3782 822463 10005", "<CARD>"),  # Amex, 4-6-5
    ("6011111111111117", "<CARD>"),
    ("DE89 3704 0044 0532 0130 00", "<IBAN>"),
    ("GB82WEST12345698765432", "<IBAN>"),
    ("FR14 2004 1010 0505 0001 3M02 606", "<IBAN>"),
    ("NL91ABNA0417164300", "<IBAN>"),
]

SENTENCES = [
    "call me: {} ok?",
    "вот мой номер {}, звони вечером",
    "{}",
    "({})",
    "Details are {}. Thanks!",
    "скинь на {} 🙏 пожалуйста",
]


def digits_of(text: str) -> str:
    return re.sub(r"\D", "", text)


@pytest.mark.parametrize(("value", "placeholder"), PLANTED)
@pytest.mark.parametrize("sentence", SENTENCES)
def test_planted_values_are_masked(value: str, placeholder: str, sentence: str) -> None:
    scrubbed = SCRUBBER.scrub(sentence.format(value))
    assert value not in scrubbed
    assert placeholder in scrubbed
    # The words around the value are kept: the message stays, only the value goes.
    assert scrubbed == sentence.format(placeholder)
    if digits_of(value):
        assert digits_of(value) not in digits_of(scrubbed)


@pytest.mark.parametrize(
    "text",
    [
        "2-3",
        "10:30",
        "12.05.2024",
        "2024-05-12",
        "1999",
        "$1500",
        "1 500 руб",
        "15%",
        "v2.3.1",
        "room 404",
        "call me at 5",
        "3.14159",
        "100500",
        "192.168.0.1",  # IPs are deliberately kept
        "20241231",
        "1 000 000",
        "+10 000 000 к зарплате",
        "order 4111 1111 1111 1112",  # fails Luhn: not a card
        "0000 0000 0000 0000",
        "1700000000000",  # a millisecond timestamp
        "2019 2020 2021 2022",
        "DE88 3704 0044 0532 0130 00",  # fails mod-97: not an IBAN
        "https://example.com/a?id=123456789",
        "https://t.me/durov/123456 👍",
        "@durov в чате",
        "see you 2-3, 10:30, 12.05.2024, 1999, $1500, room 404",
        "встречаемся в 19:00 у входа, билеты по 2500",
        "score 3:2, ставка 1.85",
        "Привет! Как дела? 😊",
        "",
    ],
)
def test_ordinary_numbers_survive(text: str) -> None:
    assert SCRUBBER.scrub(text) == text


@pytest.mark.parametrize(
    "number",
    [
        "4111 1111 1111 1112",
        "4111-1111-1111-1112",
        "5500000000000005",
        "1234 5678 9012 3456",
        "3782 822463 10006",
    ],
)
def test_luhn_failing_card_like_numbers_survive(number: str) -> None:
    text = f"номер заказа {number}, проверь"
    assert SCRUBBER.scrub(text) == text


@pytest.mark.parametrize(
    "formatted",
    [
        "+998 91 1234567",
        "+998911234567",
        "998911234567",
        "00998 91 123 45 67",
        "998-91-123-45-67",
        "+998 (91) 123-45-67",
        "(91) 123 45 67",
        "91 123-45-67",
        "911234567",
    ],
)
def test_owner_phone_in_any_formatting(formatted: str) -> None:
    scrubbed = SCRUBBER.scrub(f"my number is {formatted} btw")
    assert scrubbed == "my number is <PHONE> btw"


@pytest.mark.parametrize(
    ("owner", "formatted"),
    [
        ("+1 555 111 22 33", "+1 555 111 22 33"),  # a number phonenumbers does not take as VALID
        ("+1 555 111 22 33", "(555) 111-22-33"),
        ("+1 555 111 22 33", "1-555-111-2233"),
        ("+7 910 765 43 21", "8 (910) 765-43-21"),
        ("+7 910 765 43 21", "89107654321"),
        ("+7 910 765 43 21", "+7(910)7654321"),
        ("+7 910 765 43 21", "910 765 43 21"),
    ],
)
def test_owner_phone_formats_by_country(owner: str, formatted: str) -> None:
    scrubber = PiiScrubber(owner_phones=(owner,))
    assert scrubber.scrub(f"пиши на {formatted}, я в сети") == "пиши на <PHONE>, я в сети"


def test_several_values_in_one_message() -> None:
    text = "Anna: +7 916 123-45-67, anna@example.org; pay to DE89 3704 0044 0532 0130 00 today"
    assert SCRUBBER.scrub(text) == "Anna: <PHONE>, <EMAIL>; pay to <IBAN> today"


def test_mixed_russian_message_keeps_its_words() -> None:
    text = (
        "Оля, мой новый номер 8 (916) 123-45-67, почта olga.m@yandex.ru. "
        "Карта 5500-0000-0000-0004 до 12/25, встреча 12.05.2024 в 10:30, кв. 404 😊"
    )
    assert SCRUBBER.scrub(text) == (
        "Оля, мой новый номер <PHONE>, почта <EMAIL>. "
        "Карта <CARD> до 12/25, встреча 12.05.2024 в 10:30, кв. 404 😊"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4111 1111 1111 1111 12/25", "<CARD> 12/25"),  # the expiry is not part of the card
        ("4111111111111112 4111111111111111", "4111111111111112 <CARD>"),
        ("4111 1111 1111 1111 5500-0000-0000-0004", "<CARD> <CARD>"),
        ("(4111 1111 1111 1111)", "(<CARD>)"),
        ("2024-05-12 89161234567", "2024-05-12 <PHONE>"),  # a date is not the head of a card
        ("DE89 3704 0044 0532 0130 00 ASAP", "<IBAN> ASAP"),
        ("8 (916) 123-45-67 89161234567 8-916-123-45-67", "<PHONE> <PHONE> <PHONE>"),
        ("(650) 253-0000 (650) 253-0001", "<PHONE> <PHONE>"),
        ("контакты:\n8 916 123 45 67\n+7 903 111-22-33", "контакты:\n<PHONE>\n<PHONE>"),
        ("с 8:00 до 20:00, тел 8(495)123-45-67", "с 8:00 до 20:00, тел <PHONE>"),
    ],
)
def test_adjacent_values_are_each_masked_whole(text: str, expected: str) -> None:
    assert SCRUBBER.scrub(text) == expected


def test_no_nested_placeholders_and_scrubbing_is_idempotent() -> None:
    text = " ".join(value for value, _ in PLANTED)
    once = SCRUBBER.scrub(text)
    assert SCRUBBER.scrub(once) == once
    assert not re.search(r"<[A-Z]*<|>[A-Z]*>", once)
    assert set(re.findall(r"<[A-Z]+>", once)) == {"<PHONE>", "<EMAIL>", "<CARD>", "<IBAN>"}
    assert not re.search(r"\d{3}", once)


def test_text_without_phone_like_runs_never_reaches_the_phone_matcher(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The matcher is the slow part; millions of messages must not pay for it.
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("PhoneNumberMatcher called")

    monkeypatch.setattr("ingest.pii.PhoneNumberMatcher", refuse)
    for text in [
        "встреча 12.05.2024 в 19:00, билеты по 2500 руб",
        "see you 2-3, 10:30, 2024-05-12, 1999, $1500, room 404",
        "зарплата 1 000 000 руб, +15%",
        "anna@example.org, 4111 1111 1111 1111",
    ]:
        SCRUBBER.scrub(text)


def test_unknown_region_is_refused() -> None:
    with pytest.raises(ValueError, match="XX"):
        PiiScrubber(regions=("RU", "XX"))


# Russian identity numbers. None of these belongs to anyone: the check digits are computed here
# from made-up leading digits, with the official weights.


def inn10(first9: str) -> str:
    weights = (2, 4, 10, 3, 5, 9, 4, 6, 8)
    return first9 + str(sum(int(d) * w for d, w in zip(first9, weights, strict=True)) % 11 % 10)


def inn12(first10: str) -> str:
    # Digit 11 from the first ten, then digit 12 from the first eleven.
    number = first10
    for weights in [(7, 2, 4, 10, 3, 5, 9, 4, 6, 8), (3, 7, 2, 4, 10, 3, 5, 9, 4, 6, 8)]:
        total = sum(int(d) * w for d, w in zip(number, weights, strict=True))
        number += str(total % 11 % 10)
    return number


def snils(first9: str) -> str:
    total = sum(int(d) * w for d, w in zip(first9, range(9, 0, -1), strict=True))
    if total > 101:
        total %= 101
    return first9 + f"{0 if total >= 100 else total:02d}"


INN12 = inn12("5001007322")
# A 12-digit ИНН the phone matcher takes for a local number.
INN12_PHONE_LIKE = inn12("0271650152")
INN10 = inn10("770708389")
# A Russian mobile without its prefix that passes the 10-digit ИНН checksum.
INN10_MOBILE = inn10("916123456")
# A Unix time (May 2024) that passes it too, and is no phone anywhere.
INN10_UNIX_TIME = inn10("171550080")
SNILS = snils("112233445")
# "8 916 123-45-20": a Russian mobile written bare that passes the СНИЛС checksum.
SNILS_MOBILE = snils("891612345")


def test_check_digit_helpers_match_numbers_checked_by_hand() -> None:
    assert INN12 == "500100732259"
    assert INN12_PHONE_LIKE == "027165015237"
    assert INN10 == "7707083893"
    assert INN10_MOBILE == "9161234567"
    assert INN10_UNIX_TIME == "1715500807"
    assert SNILS == "11223344595"  # 1*9 + 1*8 + 2*7 + 2*6 + 3*5 + 3*4 + 4*3 + 4*2 + 5*1 = 95
    assert SNILS_MOBILE == "89161234520"


@pytest.mark.parametrize(
    "number",
    [
        "131-027-353 00",  # weighted sum 100: check number 00
        "123-512-222 00",  # sum 101: 00 too
        "125-792-894 00",  # sum 201: mod 101 is 100, so 00 again
        "124-850-533 49",  # sum 150: mod 101 is 49
    ],
)
def test_snils_check_number_edge_cases(number: str) -> None:
    assert snils(digits_of(number)[:9]) == digits_of(number)
    assert SCRUBBER.scrub(f"снилс {number}") == "снилс <SNILS>"
    # One off is no СНИЛС (though the phone matcher may still take some for a phone).
    broken = number[:-1] + str((int(number[-1]) + 1) % 10)
    assert "<SNILS>" not in SCRUBBER.scrub(f"снилс {broken}")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # A person's ИНН as people send it; the word before it stays.
        (f"мой инн {INN12}, скинь в бухгалтерию", "мой инн <INN>, скинь в бухгалтерию"),
        # Twelve bare digits need no word: two check digits are enough.
        (f"вот {INN12}", "вот <INN>"),
        # Was <PHONE> before the ИНН pass ran ahead of the phone matcher.
        (f"{INN12_PHONE_LIKE} это мой инн", "<INN> это мой инн"),
        # No space after the colon.
        (f"ИНН:{INN12}", "ИНН:<INN>"),
        # An organisation's ИНН with the word; the КПП after it is not personal and stays.
        (f"ИНН/КПП {INN10}/770701001", "ИНН/КПП <INN>/770701001"),
        # The word may stand a few words before the number.
        (f"инн организации {INN10}", "инн организации <INN>"),
        # СНИЛС as printed on the card, with spaces, and bare after the word.
        ("снилс 112-233-445 95", "снилс <SNILS>"),
        ("СНИЛС: 112 233 445 95", "СНИЛС: <SNILS>"),
        (f"вот снилс {SNILS} держи", "вот снилс <SNILS> держи"),
        # Grouped 3-3-3 2, a number that reads as a mobile when bare is a СНИЛС.
        ("891-612-345 20 мой снилс", "<SNILS> мой снилс"),
        # Bare and not a phone anywhere: the checksum alone decides.
        (SNILS, "<SNILS>"),
        # Passports in the ways people type them; series and number become one placeholder.
        ("паспорт 45 06 123456 выдан ОВД района", "паспорт <PASSPORT> выдан ОВД района"),
        ("серия 4506 номер 123456", "серия <PASSPORT>"),
        ("паспорт 4506123456", "паспорт <PASSPORT>"),
        # The date of issue after it is kept.
        (
            "Паспорт: серия 45 06 № 123456, выдан 12.05.2010",
            "Паспорт: серия <PASSPORT>, выдан 12.05.2010",
        ),
        ("пасп. 4506 123456", "пасп. <PASSPORT>"),
        ("паспортные данные: 4506 123456", "паспортные данные: <PASSPORT>"),
        ("Passport No. 4506 123456", "Passport No. <PASSPORT>"),
        # The passport word reaches over an ИНН masked just before.
        (f"ИНН и паспорт: {INN12}, 4506 123456", "ИНН и паспорт: <INN>, <PASSPORT>"),
        # Everything at once, a line each, with a phone whose digits pass the ИНН checksum.
        (
            f"ИНН {INN12}\nСНИЛС 112-233-445 95\nпаспорт 4506 123456\nтел +7 916 123-45-67",
            "ИНН <INN>\nСНИЛС <SNILS>\nпаспорт <PASSPORT>\nтел <PHONE>",
        ),
    ],
)
def test_russian_identity_numbers_are_masked(text: str, expected: str) -> None:
    assert SCRUBBER.scrub(text) == expected
    assert SCRUBBER.scrub(expected) == expected


@pytest.mark.parametrize(
    "text",
    [
        "за квартиру 25 000 руб",
        "1 500 000 ₽ за машину",
        "цена 4500",
        "встречаемся 12.05.2024 в 10:30",
        "кв. 45",
        "дом 12, кв 304",
        "родился в 1987 году, 3 кошки",
        # One digit off a valid ИНН: an order number, not an ИНН (and no phone).
        f"номер заказа {INN12[:-1]}8",
        # A СНИЛС with a wrong check number.
        "112-233-445 96",
        # Zeros pass both checksums, but no ИНН region is 00 and no СНИЛС is that low.
        "000000000000",
        "инн 0000000000",
        "000-000-000 00",
        # "Инна" is a name, not the word "ИНН"; "Inn" is a hotel.
        f"Инна {INN10_UNIX_TIME}",
        f"Holiday Inn {INN10_UNIX_TIME}",
        # A URL path is not an ИНН even when the digits pass.
        f"https://example.com/orders/{INN12}",
        # Passport-shaped digits without a word naming them (and no phone).
        "трек 1506 123456",
        # "серия" of a show with too few digits.
        "смотрю 3 сезон, серия 12",
    ],
)
def test_identity_number_lookalikes_survive(text: str) -> None:
    assert SCRUBBER.scrub(text) == text


@pytest.mark.parametrize(
    "phone",
    [
        "8 916 123 45 67",
        "+7 916 123-45-67",
        "+79161234567",
        "+7 9161234567",
        "8 (916) 123-45-67",
        "8-916-123-45-67",
    ],
)
def test_phones_whose_digits_pass_the_inn_checksum_stay_phones(phone: str) -> None:
    # "9161234567" passes the 10-digit ИНН checksum, but an ИНН is a bare run: grouped, after
    # "+" or after a trunk prefix the digits are a phone, even right after the word ИНН.
    assert SCRUBBER.scrub(f"звони {phone}") == "звони <PHONE>"
    assert SCRUBBER.scrub(f"инн не помню, звони {phone}") == "инн не помню, звони <PHONE>"


def test_ten_digit_inn_needs_the_word() -> None:
    # Bare, the same digits are a Russian mobile without its prefix, and one number in ten
    # passes a single check digit: without the word they are left to the phone matcher.
    assert SCRUBBER.scrub(f"звони {INN10_MOBILE}") == "звони <PHONE>"
    assert SCRUBBER.scrub(f"created_at: {INN10_UNIX_TIME}") == f"created_at: {INN10_UNIX_TIME}"
    # With the word up to a few words before them, they are an ИНН: the word decides.
    assert SCRUBBER.scrub(f"инн {INN10_MOBILE}") == "инн <INN>"
    assert SCRUBBER.scrub(f"инн не помню, вот {INN10_MOBILE}") == "инн не помню, вот <INN>"
    assert SCRUBBER.scrub(f"ИНН {INN10_UNIX_TIME}") == "ИНН <INN>"
    assert SCRUBBER.scrub(f"INN {INN10_UNIX_TIME}") == "INN <INN>"
    # Too far from the word, or with digits in between, it is not.
    far = f"ИНН спроси у бухгалтера, она знает точно. {INN10_UNIX_TIME}"
    assert SCRUBBER.scrub(far) == far
    assert SCRUBBER.scrub(f"ИНН 12 штук, {INN10_UNIX_TIME}") == f"ИНН 12 штук, {INN10_UNIX_TIME}"
    # Checksum-failing digits stay what they were, with or without the word.
    assert SCRUBBER.scrub("инн 1715500808") == "инн 1715500808"


def test_bare_snils_that_is_also_a_mobile_stays_a_phone() -> None:
    # Masked either way; the word decides only the type.
    assert SCRUBBER.scrub(f"звони {SNILS_MOBILE}") == "звони <PHONE>"
    assert SCRUBBER.scrub(f"снилс {SNILS_MOBILE}") == "снилс <SNILS>"


def test_owner_phone_wins_over_a_twelve_digit_inn() -> None:
    # The owner's number is certain; an ИНН checksum on the same digits is chance.
    number = inn12("9989112345")
    assert SCRUBBER.scrub(number) == "<INN>"
    owner = PiiScrubber(owner_phones=(f"+{number}",))
    assert owner.scrub(f"мой номер {number}") == "мой номер <PHONE>"


def test_placeholders_name_every_value_the_scrubber_writes() -> None:
    text = (
        f"тел +7 916 123-45-67, почта a@example.org, карта 4111 1111 1111 1111, "
        f"IBAN DE89 3704 0044 0532 0130 00, ИНН {INN12}, СНИЛС 112-233-445 95, "
        f"паспорт 4506 123456"
    )
    written = re.findall(r"<[A-Z]+>", SCRUBBER.scrub(text))
    assert sorted(written) == sorted(PLACEHOLDERS)
    # What lets a later pass never match inside an earlier placeholder.
    assert not any(re.search(r"[0-9@]", p) for p in PLACEHOLDERS)


def test_identity_numbers_never_reach_the_phone_matcher(monkeypatch: pytest.MonkeyPatch) -> None:
    # Masked before the phone pass, they leave it no digits to look at.
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("PhoneNumberMatcher called")

    monkeypatch.setattr("ingest.pii.PhoneNumberMatcher", refuse)
    for text in [
        f"мой инн {INN12}, скинь в бухгалтерию",
        "снилс 112-233-445 95",
        "паспорт 45 06 123456 выдан ОВД района",
    ]:
        SCRUBBER.scrub(text)
