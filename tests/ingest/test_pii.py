"""PII masking: planted values never survive; ordinary numbers always do."""

from __future__ import annotations

import re

import pytest

from ingest.pii import PiiScrubber, scrub_pii

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


def test_scrub_pii_is_the_scrubber() -> None:
    text = "звони +7 916 123-45-67"
    assert scrub_pii(text, SCRUBBER) == SCRUBBER.scrub(text) == "звони <PHONE>"


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
