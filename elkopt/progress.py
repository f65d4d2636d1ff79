"""Progress lines for long work: counted, with an estimate of what is left, and quiet
for work that ends quickly.

    ticker = Ticker(say, "Static: execution spaces", total=62)
    for k in range(62):
        ...
        ticker.update(k + 1, f"best {best_ms:.3f} ms")
    ticker.finish()

`say` is any callable taking a line (the run's logger, via `compile_model(progress=...)`).
A line is emitted at most every `every_s` seconds, the first one only once the work has
run that long, so a phase that ends within `every_s` says nothing more than its caller does.
"""

from __future__ import annotations

import time
from collections.abc import Callable

#: Seconds between progress lines of one phase (and before the first).
EVERY_S = 5.0


class Ticker:
    """Counted progress of one phase: `update(done)` after each unit of work."""

    def __init__(self, say: Callable[[str], None] | None, label: str, total: int,
                 every_s: float = EVERY_S, clock: Callable[[], float] = time.perf_counter) -> None:
        self.say = say or (lambda _line: None)
        self.label = label
        self.total = max(1, int(total))
        self.every_s = every_s
        self.clock = clock
        self.start = self.last = clock()
        self.done = 0
        self.spoke = False

    def update(self, done: int, note: str = "") -> None:
        """`done` of `total` units finished; a line when `every_s` has passed since the last."""
        self.done = done
        now = self.clock()
        if now - self.last < self.every_s:
            return
        self.last, self.spoke = now, True
        elapsed = now - self.start
        left = elapsed / done * (self.total - done) if done else float("nan")
        estimate = f", about {left:.0f} s left" if done else ""
        self.say(f"{self.label}: {done}/{self.total} after {elapsed:.0f} s{estimate}"
                 + (f"; {note}" if note else ""))

    def finish(self, note: str = "") -> None:
        """A closing line, if the phase said anything on the way."""
        if self.spoke:
            self.say(f"{self.label}: {self.done}/{self.total} done in {self.clock() - self.start:.0f} s"
                     + (f"; {note}" if note else ""))
