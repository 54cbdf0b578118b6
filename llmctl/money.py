"""Amounts of money as people read them: small ones keep their significant digits."""

from __future__ import annotations

import math


def money(usd: float | None, unknown: str = "unknown") -> str:
    """'$1,234.50', '$0.0123', '$0.0000012'; ``unknown`` when the amount is not known."""
    if usd is None:
        return unknown
    if usd == 0:
        return "$0.00"
    if abs(usd) >= 1:
        return f"${usd:,.2f}"
    digits = max(4, 1 - math.floor(math.log10(abs(usd))) + 1)  # at least two significant digits
    return f"${usd:.{digits}f}".rstrip("0").rstrip(".") if digits > 4 else f"${usd:.4f}"
