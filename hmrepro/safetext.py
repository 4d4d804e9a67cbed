"""Showing text that came from a file (a record's fields, a log's tail) on a terminal without letting it act.

A string read from a file may hold terminal escape sequences (set the window title, clear the screen, colours),
other control characters, invisible bidirectional overrides, or rich markup (``[link=...]innocent[/link]``).
:func:`safe_text` turns it into plain, visible text: every control or format character is written as its Python
escape (``\\x1b``, ``\\n``, ``\\u202e``); :func:`safe_markup` does the same and also escapes rich markup, for text
put into a string that rich parses (``console.print(f"warning: {safe_markup(line)}")``). Plain-text sinks (CSV,
Markdown, ``rich.text.Text``) take :func:`safe_text`.

This module imports nothing of hmrepro: every layer may use it.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["safe_markup", "safe_text"]

_UNSAFE_CATEGORIES = ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp")  # controls, formats, surrogates, unassigned, separators
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u200b-\u200f\u202a-\u202e\u2060-\u206f\ufeff\ufff9-\ufffb]")


def safe_text(value: object) -> str:
    """``value`` as text with every control, format or otherwise invisible character escaped (``\\x1b[2J`` shows
    as the characters ``\\x1b[2J``, never clears the screen); printable text, non-ASCII letters included, is kept."""
    text = value if isinstance(value, str) else str(value)
    if text.isprintable():
        return text
    return "".join(_escaped(ch) if _unsafe(ch) else ch for ch in text)


def safe_markup(value: object) -> str:
    """:func:`safe_text` with rich markup escaped too: for file text embedded in a string rich interprets."""
    from rich.markup import escape

    return escape(safe_text(value))


def _unsafe(ch: str) -> bool:
    return bool(_UNSAFE.match(ch)) or unicodedata.category(ch) in _UNSAFE_CATEGORIES


_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escaped(ch: str) -> str:
    if ch in _SHORT_ESCAPES:
        return _SHORT_ESCAPES[ch]
    code = ord(ch)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"
