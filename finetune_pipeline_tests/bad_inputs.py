"""Bad inputs for the whole-pipeline run: files a real data root collects over time, beside good ones.

`add_bad_inputs(root)` writes them into a data root and returns what each should become: a reject with
(stage, reason, a word of its detail), or, for the few that are awkward but valid, records.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

from finetune_pipeline_tests.pdfgen import write_pdf

HUGE_TEXT_MB = 200
PDF_BOMB_PAGES = 1_000_000
GOOD_TICKET = ("Hello, I ordered a desk lamp two weeks ago and the tracking page still says the parcel is "
               "waiting at the depot. Could you tell me when it will be delivered? Thanks, Alex")
# Valid, in UTF-16 with a byte-order mark (as Windows Notepad saves "Unicode"): must come through.
UTF16_TICKET = ("My password reset email never arrives, I checked the spam folder twice. The login page "
                "keeps saying my account is locked after three attempts. Can you unlock it please?")


def _pdf_bomb(path: Path, pages: int) -> None:
    """A tiny PDF whose page tree declares `pages` pages: 1,000 references to one node of 1,000
    references to one page (a parser that visits every page would walk a million)."""
    side = int(round(pages ** 0.5))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        f"<< /Type /Pages /Kids [{' '.join(['3 0 R'] * side)}] /Count {side * side} >>".encode(),
        f"<< /Type /Pages /Parent 2 0 R /Kids [{' '.join(['4 0 R'] * side)}] /Count {side} >>".encode(),
        b"<< /Type /Page /Parent 3 0 R /MediaBox [0 0 612 792] /Contents 5 0 R >>",
        b"<< /Length 0 >>\nstream\n\nendstream",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, obj in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + obj + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    path.write_bytes(bytes(out))


def _encrypted_pdf(path: Path, source: Path) -> None:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter()
    for page in PdfReader(str(source)).pages:
        writer.add_page(page)
    writer.encrypt(user_password="secret", owner_password="owner", algorithm="AES-256")
    buffer = io.BytesIO()
    writer.write(buffer)
    path.write_bytes(buffer.getvalue())


def add_bad_inputs(root: Path) -> dict[str, tuple[str, str, str] | str]:
    """Write the bad inputs into `root`; returns {source_uri: (stage, reason, detail word)}, or
    {source_uri: "kept"} for a valid file in an awkward form."""
    bad = root / "raw" / "incoming"
    bad.mkdir(parents=True)
    good_pdf = bad / ".good.pdf"  # hidden: a source for the damaged copies only
    write_pdf(good_pdf, [["Invoice question", "I was charged twice for my March invoice, please refund one."],
                         ["Second page", "The duplicate payment shows on my card statement as pending."]])
    data = good_pdf.read_bytes()

    (bad / "empty.pdf").write_bytes(b"")
    (bad / "truncated.pdf").write_bytes(data[: len(data) // 2])
    _encrypted_pdf(bad / "encrypted.pdf", good_pdf)
    _pdf_bomb(bad / "million_pages.pdf", PDF_BOMB_PAGES)
    with (bad / "huge.txt").open("wb") as handle:  # 200 MiB, written in 1 MiB blocks
        block = (GOOD_TICKET + "\n").encode() * (2**20 // (len(GOOD_TICKET) + 1) + 1)
        for _ in range(HUGE_TEXT_MB):
            handle.write(block[: 2**20])
    (bad / "latin1.txt").write_bytes(("Caf\xe9 order: the refund of 12\xa3 never reached my card, "
                                      "please check invoice 5521.").encode("latin-1"))
    (bad / "utf16.txt").write_bytes(UTF16_TICKET.encode("utf-16"))  # BOM + UTF-16-LE
    (bad / "binary.txt").write_bytes(bytes(range(256)) * 64)
    (bad / "lines.jsonl").write_text(json.dumps({"text": GOOD_TICKET, "label": "shipping"}) + "\n"
                                     + '{"text": "a line cut in the mid\n'
                                     + json.dumps({"text": "My parcel came with a cracked screen protector and a "
                                                           "missing charger, I would like a refund.",
                                                   "label": "refunds"}) + "\n")
    # two text-like columns, neither clearly the text: not recognised, rejected with the setting to use
    (bad / "no_text_column.csv").write_text("subject,body,label\nInvoice shows a wrong VAT number,"
                                            "My invoice shows the wrong VAT number,billing\n")
    (bad / "not_a_database.sqlite").write_bytes(b"SQLite format 2\x00" + b"\x17" * 4000)
    outside = root.parent / "outside_the_data_root.txt"
    outside.write_text(GOOD_TICKET)
    (bad / "link_out.txt").symlink_to(outside)

    (root / "annotations").mkdir(exist_ok=True)
    (root / "annotations" / "from_another_project.csv").write_text(
        "record_id,annotator,label\nr-does-not-exist-1,ann1,billing\nr-does-not-exist-2,ann2,shipping\n")

    uri = "raw/incoming/"
    return {
        uri + "empty.pdf": ("raw_corpus", "empty_file", "zero bytes"),
        uri + "truncated.pdf": ("raw_corpus", "unreadable_file", "truncated"),
        uri + "encrypted.pdf": ("raw_corpus", "unreadable_file", "encrypted"),
        uri + "million_pages.pdf": ("raw_corpus", "unreadable_file", "max_pdf_pages"),
        uri + "huge.txt": ("raw_corpus", "file_too_large", "max_file_mb"),
        uri + "latin1.txt": ("raw_corpus", "unreadable_file", "UTF-8"),
        uri + "binary.txt": ("raw_corpus", "unreadable_file", "binary"),
        uri + "lines.jsonl": ("raw_corpus", "malformed_row", "line 2"),
        uri + "no_text_column.csv": ("raw_corpus", "missing_column", "text_column"),
        uri + "not_a_database.sqlite": ("raw_corpus", "unreadable_database", "database"),
        uri + "link_out.txt": ("raw_corpus", "symlink_outside_data_root", "copy the file"),
        "label:refunds": ("labeled_corpus", "label_not_in_label_set", "refunds"),
        uri + "utf16.txt": "kept",
    }

