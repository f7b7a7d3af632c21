"""The bank's gRPC intake rules: every refusal says why, briefly."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import pytest

from asyncpipe.demo._converters import client_record, transaction_converter
from asyncpipe.demo._domain import MAX_AMOUNT
from asyncpipe.demo.v1 import bank_pb2 as pb
from asyncpipe.ingest._routes import Converted, convert_items


def transaction_records(items: Iterable[Any]) -> Converted:
    return convert_items(transaction_converter(), items)


def client_records(items: Iterable[Any]) -> Converted:
    return convert_items(client_record, items)


def transaction(**fields: object) -> pb.Transaction:
    values: dict[str, object] = {
        "id": 1,
        "client_id": 2,
        "date": "2026-03-04",
        "amount": 10.0,
        "currency": "BRL",
    }
    values.update(fields)
    return pb.Transaction(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize("amount", [3.5e38, 1e308, math.inf, MAX_AMOUNT * 1.000001])
def test_an_amount_above_the_limit_is_an_item_rejection(amount: float) -> None:
    converted = transaction_records([transaction(), transaction(id=2, amount=amount)])
    assert [record["id"] for record in converted.records] == [1]
    assert converted.rejections == [
        (1, f"invalid amount {amount!r}: must be a finite number <= 1000000000")
    ]


@pytest.mark.parametrize("amount", [-0.01, -math.inf, math.nan])
def test_a_negative_or_nan_amount_is_an_item_rejection(amount: float) -> None:
    converted = transaction_records([transaction(amount=amount)])
    assert converted.records == []
    assert converted.rejections == [(0, f"invalid amount {amount!r}: must be a finite number >= 0")]


def test_the_limit_itself_and_zero_are_accepted() -> None:
    converted = transaction_records([transaction(amount=MAX_AMOUNT), transaction(amount=0.0)])
    assert [record["amount"] for record in converted.records] == [MAX_AMOUNT, 0.0]
    assert converted.rejections == []


def test_a_long_bad_value_is_quoted_by_a_short_prefix() -> None:
    converted = transaction_records([transaction(currency="Y" * 1630, date="x" * 5000)])
    ((index, reason),) = converted.rejections
    assert index == 0
    assert reason == (
        f"unknown currency {'Y' * 40!r}… (1630 chars): expected one of ['BRL', 'EUR', 'USD']"
    )
    converted = transaction_records([transaction(date="x" * 5000)])
    assert converted.rejections == [
        (0, f"malformed date {'x' * 40!r}… (5000 chars): expected YYYY-MM-DD")
    ]
    converted = client_records([pb.Client(id=1, name="A", cpf="9" * 100, birth_date="x")])
    assert converted.rejections == [(0, f"invalid CPF {'9' * 40!r}… (100 chars)")]


def test_a_short_bad_value_is_quoted_whole() -> None:
    converted = transaction_records([transaction(currency="XYZ")])
    assert converted.rejections == [
        (0, "unknown currency 'XYZ': expected one of ['BRL', 'EUR', 'USD']")
    ]


def test_a_transaction_becomes_a_record_with_its_category_or_none() -> None:
    convert = transaction_converter({"BRL"})
    categories = [convert(transaction(category="Lazer")), convert(transaction(category=""))]
    categories.append(convert(transaction()))
    assert [c["category"] for c in categories if isinstance(c, dict)] == ["Lazer", "", None]
