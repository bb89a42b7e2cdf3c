"""One terminal line: jobs finished, failures, throughput and the time left.

The estimate weighs jobs by their megapixels (a 10980² tile counts 120 MP, a 256² patch
0.07), so a few large scenes do not make the ETA jump. Without a terminal (a log file, CI)
it prints one line per finished job instead of redrawing.
"""
from __future__ import annotations

import time


def _clock(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600:d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class ProgressLine:
    def __init__(self, jobs: int, megapixels: float, stream, enabled: bool = True, skipped: int = 0,
                 invalid: int = 0):
        """``jobs`` to run; ``skipped`` (up to date) and ``invalid`` ones are only announced."""
        self.jobs, self.total_mp, self.stream, self.enabled = jobs, megapixels, stream, enabled
        self.tty = enabled and hasattr(stream, "isatty") and stream.isatty()
        self.started = time.time()
        self.finished, self.failed, self.done_mp = 0, 0, 0.0
        if skipped:
            self._say(f"{skipped} job(s) already done (their outputs carry the same provenance key): skipped")
        if invalid:
            self._say(f"{invalid} invalid job(s) not run (see the report)")
        self._draw()

    def part_finished(self, megapixels: float) -> None:
        self.done_mp += megapixels
        self._draw()

    def job_finished(self, result, megapixels: float) -> None:
        self.finished += 1
        self.done_mp += megapixels
        if result["status"] != "done":
            self.failed += 1
            self._say(f"FAILED {result['job']}: {result['error']}")
        elif not self.tty and self.enabled:
            self._say(f"[{self.finished}/{self.jobs}] {result['job']} done in {result['seconds']:.1f} s "
                      f"({result.get('provider') or '-'})")
        self._draw()

    def line(self) -> str:
        elapsed = time.time() - self.started
        rate = self.done_mp / elapsed if elapsed > 0 else 0.0
        left = self.total_mp - self.done_mp
        eta = _clock(left / rate) if rate > 0 and left > 0 else ("0:00:00" if left <= 0 else "--:--:--")
        width = 24
        filled = int(width * self.finished / max(1, self.jobs))
        return (f"[{'#' * filled}{'.' * (width - filled)}] {self.finished}/{self.jobs} jobs, "
                f"{self.failed} failed | {rate:.2f} MP/s | elapsed {_clock(elapsed)} | ETA {eta}")

    def _draw(self) -> None:
        if self.tty:
            self.stream.write("\r" + self.line() + "\033[K")
            self.stream.flush()

    def _say(self, text: str) -> None:
        if not self.enabled:
            return
        if self.tty:
            self.stream.write("\r\033[K")
        self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            if self.tty:
                self.stream.write("\r\033[K")
            self.stream.write(self.line() + "\n")
            self.stream.flush()
