"""The bank demo's rules, shared by the streaming pipeline and the reference computation.

Everything here is a plain function of its arguments, so the two computations cannot
drift apart. Money is kept in integer *cents* wherever it is summed: ``amount_brl`` is
``amount x rate`` rounded to the cent, and every balance, mean and volume is computed
from exact integer sums, so the results do not depend on the order data arrives in.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Mapping
from typing import Any

__all__ = [
    "CATEGORIES",
    "INCOME_CATEGORY",
    "KEYWORDS",
    "MAX_AMOUNT",
    "MAX_AMOUNT_BRL",
    "RATES",
    "amount_problem",
    "cents",
    "classify",
    "convert",
    "cpf_digits",
    "normalize_address",
    "normalize_client",
    "normalize_text",
    "round2",
    "score_problem",
]

#: The seed's categories, in its order.
CATEGORIES = (
    "Alimentação",
    "Transporte",
    "Educação",
    "Saúde",
    "Lazer",
    "Moradia",
    "Compras",
    "Transferências",
    "Salário",
    "Outros",
)
INCOME_CATEGORY = "Salário"

#: Words a description starts with, per category. The data generator builds descriptions
#: from the same vocabulary, so the classifier must recover every category exactly.
KEYWORDS: dict[str, tuple[str, ...]] = {
    "Alimentação": ("SUPERMERCADO", "RESTAURANTE", "PADARIA", "IFOOD", "LANCHONETE"),
    "Transporte": ("UBER", "POSTO", "METRO", "ONIBUS", "ESTACIONAMENTO"),
    "Educação": ("ESCOLA", "CURSO", "LIVRARIA", "FACULDADE"),
    "Saúde": ("FARMACIA", "HOSPITAL", "CLINICA", "LABORATORIO"),
    "Lazer": ("CINEMA", "TEATRO", "SHOW", "STREAMING"),
    "Moradia": ("ALUGUEL", "CONDOMINIO", "ENERGIA", "SANEAMENTO"),
    "Compras": ("LOJA", "SHOPPING", "MAGAZINE", "ELETRONICOS"),
    "Transferências": ("PIX", "TED", "DOC", "TRANSFERENCIA"),
    "Salário": ("SALARIO", "FOLHA", "PROVENTOS"),
    "Outros": ("TARIFA", "DIVERSOS", "SAQUE"),
}
_CATEGORY_OF = {word: category for category, words in KEYWORDS.items() for word in words}

#: BRL per unit of each currency (configurable with ``--rate USD=5.1``).
RATES: dict[str, float] = {"BRL": 1.0, "USD": 5.0, "EUR": 5.5}

#: The largest amount of money a transaction may have, in its own currency, wherever it
#: comes from (database, inbox, timer, gRPC).
MAX_AMOUNT = 1_000_000_000.0
# A finite but huge amount (3.5e38, 1e308) is a poison:
# the risk model works in float32 (max ~3.4e38) and raises for its whole batch, and the
# integer cents of 1e308 x rate overflow. Such an amount is rejected with its reason
# instead, wherever it came from (database, inbox, timer, gRPC).
#: The largest converted amount: below ~1e13 a float still holds every cent (its spacing
#: there is 0.002), so cent sums stay exact. Only an extreme ``--rate`` gets near it.
MAX_AMOUNT_BRL = 10_000_000_000_000.0

_STREET_TYPES = {"RUA": "R.", "AVENIDA": "AV.", "PRACA": "PCA."}
_NOT_DIGITS = str.maketrans("", "", ".-/ ")


def cpf_digits(raw: str) -> str | None:
    """The 11 digits of a valid CPF (``"123.456.789-09"`` or ``"12345678909"``), else None."""
    digits = raw.translate(_NOT_DIGITS)
    if len(digits) != 11 or not digits.isdigit() or not digits.isascii():
        return None
    if digits == digits[0] * 11:
        return None  # 000.000.000-00 and the like pass the arithmetic but are invalid
    # The check digits, written out (twice as fast as sums over zipped weights): the
    # first weighs the nine digits 10..2, the second weighs the ten digits 11..2, which is
    # the first sum plus the nine digits once more plus twice the first check digit.
    a, b, c, d, e, f, g, h, i, j, k = map(int, digits)
    weighted = 10 * a + 9 * b + 8 * c + 7 * d + 6 * e + 5 * f + 4 * g + 3 * h + 2 * i
    if weighted * 10 % 11 % 10 != j:
        return None
    if (weighted + a + b + c + d + e + f + g + h + i + 2 * j) * 10 % 11 % 10 != k:
        return None
    return digits


def normalize_text(text: str) -> str:
    """Strip accents, upper-case, collapse runs of whitespace (newlines too)."""
    if not text.isascii():  # the common case has no accents to strip
        decomposed = unicodedata.normalize("NFKD", text)
        text = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(text.upper().split())


def normalize_address(text: str) -> str:
    """:func:`normalize_text`, then RUA -> R., AVENIDA -> AV., PRACA -> PCA. (whole words;
    a word followed by a comma counts)."""
    words = normalize_text(text).split(" ")
    out = []
    for word in words:
        bare = word.rstrip(",")
        short = _STREET_TYPES.get(bare)
        out.append(word if short is None else short + word[len(bare) :])
    return " ".join(out)


def normalize_client(record: Mapping[str, Any]) -> dict[str, Any] | str:
    """A client record normalised for storage, or the reason it is invalid."""
    cpf = cpf_digits(str(record["cpf"] or ""))
    if cpf is None:
        return "invalid CPF"
    return {
        "id": int(record["id"]),
        "name": normalize_text(record["name"] or ""),
        "cpf": cpf,
        "birth_date": record["birth_date"],
        "address": normalize_address(record["address"] or ""),
    }


def classify(description: str) -> str:
    """The category of a description: that of the first known keyword, else Outros."""
    for word in normalize_text(description).split(" "):
        category = _CATEGORY_OF.get(word)
        if category is not None:
            return category
    return "Outros"


def cents(amount: float) -> int:
    """An amount in integer cents (amounts carry at most two decimals)."""
    return round(amount * 100)


def round2(x: float) -> float:
    """``round(x, 2)``, exactly, at a fifth of its cost when ``x * 100`` is clearly not
    near a half (``round(x, 2)`` formats ``x`` as a decimal string and parses it back).

    ``r = round(x * 100)`` is the right number of cents unless the exact ``x * 100`` is
    within the product's rounding error of a half; ``r / 100`` is then the float nearest
    to the decimal, as ``round`` answers. Near a half, for zero (whose sign ``round``
    keeps) and for huge values, ``round(x, 2)`` itself."""
    y = x * 100
    if -1e13 < y < 1e13:  # not NaN, infinite or huge
        r = round(y)
        if r and -0.49 < y - r < 0.49:
            return r / 100
    return round(x, 2)


def amount_brl(amount: float, currency: str, rates: Mapping[str, float]) -> float | None:
    """``amount x rate`` rounded to the cent; None for an unknown currency."""
    rate = rates.get(currency)
    if rate is None:
        return None
    return round(amount * rate, 2) if rate != 1.0 else round(amount, 2)


def amount_problem(amount: object, name: str = "amount", limit: float = MAX_AMOUNT) -> str | None:
    """Why ``amount`` is not an amount of money the demo can process, or None: it must be
    a number (not a bool), finite, and within ``0..limit``."""
    if isinstance(amount, bool) or not isinstance(amount, int | float):
        return f"{name} {amount!r} is not a number"
    if isinstance(amount, float) and not math.isfinite(amount):
        return f"{name} {amount!r} is not finite"
    if not 0 <= amount <= limit:  # ints of any size compare fine (no float overflow)
        return f"{name} {amount!r} outside 0..{_short(limit)}"
    return None


def _short(number: float) -> str:
    """1e9 rather than 1e+09 or 1000000000.0."""
    mantissa, e, exponent = f"{number:g}".partition("e")
    return f"{mantissa}e{int(exponent)}" if e else mantissa


def convert(record: Mapping[str, Any], rates: Mapping[str, float]) -> float | str:
    """A transaction's ``amount_brl``, or the reason it cannot be converted (an amount
    out of range, an unknown currency, a converted amount out of range)."""
    amount = record["amount"]
    rate = rates.get(record["currency"])
    if type(amount) is float and rate is not None and 0.0 <= amount <= MAX_AMOUNT:
        # The common case, checked in one go (NaN fails the comparisons).
        converted = round2(amount * rate) if rate != 1.0 else round2(amount)
        if 0.0 <= converted <= MAX_AMOUNT_BRL:
            return converted
    problem = amount_problem(amount)
    if problem is not None:
        return problem
    brl = amount_brl(amount, record["currency"], rates)
    if brl is None:
        return f"unknown currency {record['currency']!r}"
    return amount_problem(brl, "amount_brl", MAX_AMOUNT_BRL) or brl


def score_problem(record: Mapping[str, Any]) -> str | None:
    """Why a score record's money fields cannot be used, or None (empty ones may be)."""
    for name in ("monthly_income", "credit_limit"):
        if record[name] is not None:
            problem = amount_problem(record[name], name)
            if problem is not None:
                return problem
    return None
