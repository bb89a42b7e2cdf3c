"""How SkyClear says counts and durations in messages, the same everywhere (dialog, task
bar, log). Plain text, no Qt: the glue and the core both use it."""
from __future__ import annotations


def plural(count: int, noun: str) -> str:
    """"1 tile", "9 tiles": never "1 tile(s)"."""
    return f"{count} {noun}" + ("" if count == 1 else "s")


def article(word: str) -> str:
    """'an' before a vowel: "an optical cloud removal model", "a SAR–optical fusion model"."""
    return "an" if word[:1].lower() in "aeiou" else "a"


def format_seconds(seconds: float) -> str:
    if seconds < 1:
        return "< 1 s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def format_tile_time(seconds: float) -> str:
    return f"{1000 * seconds:.0f} ms" if seconds < 0.1 else f"{seconds:.2f} s"


def sentence(text: str) -> str:
    """A core message ("overlap 64 must be …") as a sentence for the dialog."""
    return text[:1].upper() + text[1:] if text else text
