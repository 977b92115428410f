"""Quality filters: each returns a reject reason for a text, or None to keep it.

Thresholds live in `CleaningSettings` (finetune.yaml `cleaning`).
"""

from __future__ import annotations

from finetune_pipeline.settings import CleaningSettings


def length_filter(text: str, settings: CleaningSettings) -> tuple[str, str] | None:
    """Reject empty, too short (characters or words) and too long texts."""
    if not text.strip():
        return "empty", "no text left after cleaning"
    if len(text) < settings.min_chars:
        return "too_short", f"{len(text)} characters < cleaning.min_chars={settings.min_chars}"
    words = len(text.split())
    if words < settings.min_words:
        return "too_short", f"{words} words < cleaning.min_words={settings.min_words}"
    if len(text) > settings.max_chars:
        return "too_long", f"{len(text)} characters > cleaning.max_chars={settings.max_chars}"
    return None
