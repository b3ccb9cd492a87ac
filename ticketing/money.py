"""Money is integer cents everywhere inside; major units (20.5) only at the JSON edge."""

from decimal import Decimal


def to_cents(amount: Decimal) -> int:
    return int((amount * 100).to_integral_exact())


def to_major(cents: int) -> float:
    # 2050 -> 20.5; exact for any cent amount a ticket can have.
    return float(Decimal(cents) / 100)
