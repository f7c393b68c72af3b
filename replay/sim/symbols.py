"""Default symbol sets per venue for the simulators and the demo."""

from __future__ import annotations

DEFAULTS = {
    "alltick": ["AAPL.US", "700.HK", "BTCUSDT"],
    "finazon": ["AAPL", "MSFT", "TSLA"],
    "noren": ["NSE|22", "NSE|2885", "NFO|35003"],
    "hedgetech": ["سکه-طلا-۱۴۰۴", "زعفران-۱۴۰۴", "Gold-Coin-1404"],   # IME contract names
    "futu": ["HK.00700", "US.AAPL"],
}


def default_symbols(venue: str) -> list[str]:
    return list(DEFAULTS.get(venue, ["TEST"]))
