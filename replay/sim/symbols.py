"""Default symbol sets per venue for the simulators and the demo."""

from __future__ import annotations

DEFAULTS = {
    "alltick": ["AAPL.US", "700.HK", "BTCUSDT"],
    "finazon": ["AAPL", "MSFT", "TSLA"],
    "noren": ["NSE|22", "NSE|2885", "NFO|35003"],
    "hedgetech": ["Gold-Coin-1404", "Saffron-1404"],
    "futu": ["HK.00700", "US.AAPL"],
}


def default_symbols(venue: str) -> list[str]:
    return list(DEFAULTS.get(venue, ["TEST"]))
