"""Money in the API: a decimal string with two places ("50.00"), never a float."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from pydantic import PlainSerializer

CENT = Decimal("0.01")


def _money(amount: Decimal) -> str:
    return str(amount.quantize(CENT))


Money = Annotated[Decimal, PlainSerializer(_money, return_type=str, when_used="always")]
