"""Progress of long loops (training epochs, evaluation steps), with an ETA.

On a terminal: a tqdm bar that redraws in place. Anywhere else (a log file, a pipe, a notebook's
captured stderr, CI): one plain timestamped line every ``interval`` seconds (10 by default), so a
log shows that work goes on without being flooded, e.g.

    [14:03:10] epoch 3/20: 120/352 steps (34%), 9.5 steps/s, elapsed 12s, ETA 24s  loss 212.4

A loop that ends before its first interval prints nothing. ``configure(quiet=True)`` (the CLI's
``--quiet``) silences every progress line; ``MMVAE_PROGRESS_INTERVAL`` sets the interval.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Callable, Iterable, Iterator, TextIO, TypeVar

T = TypeVar("T")

_settings = {"quiet": False, "interval": None}


def configure(quiet: bool | None = None, interval: float | None = None) -> None:
    """Process-wide settings: ``quiet`` silences every progress line; ``interval`` (seconds) sets how
    often a plain line is printed when the output is not a terminal."""
    if quiet is not None:
        _settings["quiet"] = bool(quiet)
    if interval is not None:
        _settings["interval"] = float(interval)


def is_quiet() -> bool:
    return bool(_settings["quiet"])


def default_interval() -> float:
    if _settings["interval"] is not None:
        return float(_settings["interval"])
    try:
        return max(0.0, float(os.environ.get("MMVAE_PROGRESS_INTERVAL", 10.0)))
    except ValueError:
        return 10.0


def duration(seconds: float) -> str:
    """45s, 3m05s, 1h02m."""
    if seconds != seconds or seconds == float("inf"):
        return "?"
    s = int(round(max(0.0, seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def _is_tty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class Progress:
    """``total`` units of work described by ``desc``; call :meth:`update` as units finish.

    ``postfix``: a callable returning ``{name: value}`` shown after the counts; it is called only when
    a line is drawn, so it may be as costly as a division. ``enabled=None`` follows :func:`configure`.
    ``initial`` units are already done (a resumed epoch): the rate and the ETA count only new work.
    """

    def __init__(self, total: int | None, desc: str, unit: str = "it", initial: int = 0,
                 postfix: Callable[[], dict] | None = None, file: TextIO | None = None,
                 interval: float | None = None, enabled: bool | None = None, tty: bool | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.total, self.desc, self.unit, self.postfix = total, desc, unit, postfix
        self.file = file if file is not None else sys.stderr
        self.enabled = (not is_quiet()) if enabled is None else bool(enabled)
        self.interval = default_interval() if interval is None else float(interval)
        self.clock = clock
        self.n = self.initial = int(initial)
        self.start = self.last = clock()
        self.lines = 0
        self.closed = False
        self.bar = None
        if self.enabled and (_is_tty(self.file) if tty is None else tty):
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=desc, unit=f" {unit}", leave=False,
                            file=self.file, dynamic_ncols=True, mininterval=0.5)

    # ------------------------------------------------------------------------------------------
    @property
    def elapsed(self) -> float:
        return self.clock() - self.start

    @property
    def rate(self) -> float:
        """Units per second since the start (new work only)."""
        t = self.elapsed
        return (self.n - self.initial) / t if t > 0 else 0.0

    def eta(self) -> float:
        """Seconds left at the rate so far (inf before the first unit, nan without a total)."""
        if self.total is None:
            return float("nan")
        r = self.rate
        return (self.total - self.n) / r if r > 0 else float("inf")

    def _postfix_text(self) -> str:
        if self.postfix is None:
            return ""
        try:
            items = self.postfix() or {}
        except Exception:  # a progress line must never break the work it reports on
            return ""
        return "".join(f"  {k} {v}" for k, v in items.items())

    def line(self) -> str:
        """The plain progress line (without the timestamp)."""
        if self.total:
            count = f"{self.n}/{self.total} {self.unit} ({100.0 * self.n / self.total:.0f}%)"
        else:
            count = f"{self.n} {self.unit}"
        r = self.rate
        speed = f"{r:.3g} {self.unit}/s" if r >= 1 or r == 0 else f"{1 / r:.3g} s/{self.unit}"
        text = f"{self.desc}: {count}, {speed}, elapsed {duration(self.elapsed)}"
        if self.total:
            text += f", ETA {duration(self.eta())}"
        return text + self._postfix_text()

    def _print(self, text: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        try:
            print(f"[{stamp}] {text}", file=self.file, flush=True)
        except (OSError, ValueError):  # a closed or broken log stream: keep working silently
            self.enabled = False
        self.lines += 1

    # ------------------------------------------------------------------------------------------
    def update(self, n: int = 1) -> None:
        self.n += n
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(n)
            if self.postfix is not None and self.bar.n % 10 == 0:
                self.bar.set_postfix_str(self._postfix_text().strip(), refresh=False)
            return
        now = self.clock()
        if now - self.last >= self.interval:
            self.last = now
            self._print(self.line())

    def close(self) -> None:
        """End the loop; a plain log that showed progress gets a last line with the total time."""
        if self.closed:
            return
        self.closed = True
        if self.bar is not None:
            self.bar.close()
        elif self.enabled and self.lines:
            self._print(f"{self.desc}: done, {self.n - self.initial} {self.unit} in {duration(self.elapsed)}")

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def track(iterable: Iterable[T], desc: str, total: int | None = None, unit: str = "it", **kwargs) -> Iterator[T]:
    """``for x in track(items, "likelihood"):`` — :class:`Progress` around any iterable."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    with Progress(total, desc, unit=unit, **kwargs) as bar:
        for item in iterable:
            yield item
            bar.update(1)
