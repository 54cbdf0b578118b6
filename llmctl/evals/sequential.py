"""Sequential stopping of paid answer work (``eval --stop-when-decided``); see gate.py."""

from __future__ import annotations

from collections.abc import Sequence

SEQUENTIAL_DELTA = 0.01  # a stopped run's verdict differs from the full run's with probability <= this
RULE = "anytime-valid betting test, sampling without replacement (Waudby-Smith & Ramdas 2020), delta 0.01"


class Sequential:
    """Is the mean of a finite population of N values in [0, 1] (the full run's) at least ``threshold``?

    Values arrive in a uniformly random order (sampling without replacement). Two betting
    martingales (Waudby-Smith & Ramdas, "Confidence sequences for sampling without replacement",
    2020) test "mean <= threshold" and "mean >= threshold"; each bets on the next value against the
    mean the *remaining* values must have under its hypothesis. By Ville's inequality either wealth
    reaches 2/delta with probability at most delta/2 when its hypothesis is true, at any stopping
    time: a decided verdict differs from the full run's with probability at most delta. When the
    values seen make a hypothesis impossible (even if every remaining case passed, or failed), its
    wealth is infinite: the exact, deterministic bound is part of the same rule.

    ``decided`` is None until then, else "pass" (mean >= threshold) or "fail". With ``delta`` 0 only
    the exact bound decides: never a verdict the full run would not reach, whatever the order. The
    betting part's guarantee is over the random order: an adversarial order can fool it."""

    def __init__(self, n: int, threshold: float, delta: float = SEQUENTIAL_DELTA, cap: float = 0.9):
        self.n, self.threshold, self.delta, self.cap = n, threshold, delta, cap
        self.seen = 0
        self.total = 0.0
        self.sq = 0.0
        self.wealth = {"pass": 1.0, "fail": 1.0}  # wealth against "mean < thr" resp. "mean >= thr"
        self.decided: str | None = None

    def _remaining_mean(self) -> float:
        return (self.n * self.threshold - self.total) / (self.n - self.seen)

    def observe(self, x: float) -> str | None:
        if self.decided or self.seen >= self.n:
            return self.decided
        m = self._remaining_mean()
        est = (self.total + 0.5) / (self.seen + 1)  # predictable: values before this one only
        for side, sign in (("pass", 1.0), ("fail", -1.0)):
            if not 0.0 < m < 1.0:
                continue
            kelly = (est - m) / max(m * (1 - m), 1e-9)
            lam = sign * min(max(sign * kelly, 0.0), self.cap / (m if sign > 0 else 1 - m))
            self.wealth[side] *= max(1.0 + lam * (x - m), 0.0)
        self.seen += 1
        self.total += x
        self.sq += x * x
        self._settle()
        return self.decided

    def _settle(self) -> None:
        thr_total = self.n * self.threshold - 1e-9
        left = self.n - self.seen
        if self.total >= thr_total:  # even if every remaining case failed
            self.decided = "pass"
        elif self.total + left < thr_total:  # even if every remaining case passed
            self.decided = "fail"
        elif self.delta and self.wealth["pass"] >= 2 / self.delta:
            self.decided = "pass"
        elif self.delta and self.wealth["fail"] >= 2 / self.delta:
            self.decided = "fail"


class SequentialComparison(Sequential):
    """The answer pass rate against a baseline's: is the full run's mean paired difference d (in
    [-1, 1]) at least -max_regression? The same test on (d + 1) / 2."""

    def __init__(self, n: int, max_regression: float, delta: float = SEQUENTIAL_DELTA):
        super().__init__(n, (1 - max_regression) / 2, delta)

    def observe(self, d: float) -> str | None:  # type: ignore[override]
        return super().observe((d + 1) / 2)


def answer_order(ids: Sequence[str], seed: int) -> list[str]:
    """The seeded random order answers are asked in under --stop-when-decided."""
    import random

    out = list(ids)
    random.Random(f"llmctl-eval-order:{seed}").shuffle(out)
    return out
