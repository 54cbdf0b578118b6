"""Pure decisions of the LLM layer: backoff, prices, routing."""

from __future__ import annotations

import random
import re

from llmctl.config import ProviderConfig, RoutingConfig


def backoff(attempt: int, base: float, cap: float, retry_after: float | None,
            rng: random.Random) -> float:
    """Seconds to wait before retry number ``attempt`` (1-based).

    Capped exponential with "equal jitter" (half fixed, half random), so retries of many
    clients spread out; a server's Retry-After is honoured when it asks for longer.
    """
    exp = min(cap, base * 2 ** (attempt - 1))
    delay = exp / 2 + rng.uniform(0, exp / 2)
    return max(delay, retry_after) if retry_after is not None else delay


def cost(provider: ProviderConfig, tokens_in: int | None, tokens_out: int | None) -> float | None:
    """USD for a call, or None when the provider's prices are not configured."""
    if provider.price_input_per_1m is None or provider.price_output_per_1m is None:
        return None
    return ((tokens_in or 0) * provider.price_input_per_1m
            + (tokens_out or 0) * provider.price_output_per_1m) / 1_000_000


def batch_cost(provider: ProviderConfig, tokens_in: int | None, tokens_out: int | None) -> float | None:
    """USD for a Batch API request: the batch prices, else half the regular ones; None if unpriced."""
    pin = provider.batch_price_input_per_1m
    pout = provider.batch_price_output_per_1m
    if pin is None and provider.price_input_per_1m is not None:
        pin = provider.price_input_per_1m / 2
    if pout is None and provider.price_output_per_1m is not None:
        pout = provider.price_output_per_1m / 2
    if pin is None or pout is None:
        return None
    return ((tokens_in or 0) * pin + (tokens_out or 0) * pout) / 1_000_000


def route(question: str, cfg: RoutingConfig) -> tuple[str, str]:
    """('simple' | 'complex', reason): short factual questions go to the cheap model."""
    q = question.lower()
    words = re.findall(r"[\w'-]+", q)
    for marker in cfg.complex_markers:
        if re.search(rf"\b{re.escape(marker)}\b", q):
            return "complex", f"contains '{marker}'"
    if q.count("?") > 1:
        return "complex", "several questions"
    if len(words) > cfg.max_simple_words:
        return "complex", f"{len(words)} words > {cfg.max_simple_words}"
    return "simple", f"{len(words)} words, no complexity marker"
