"""Collection from real files of each type, and each kind of bad input becoming a reject."""

import json
import sqlite3
from pathlib import Path

import polars as pl

from finetune_pipeline.settings import Settings
from finetune_pipeline.sources import collect_raw_corpus
from finetune_pipeline_tests.pdfgen import write_pdf

TICKET = "My card was charged twice for order 4411 and I would like one of the payments refunded please."


def _settings(**kw) -> Settings:
    return Settings(labels=["billing", "shipping"], **kw)


def _write_good_files(root: Path) -> None:
    raw = root / "raw"
    (raw / "billing").mkdir(parents=True)
    (raw / "billing" / "a.txt").write_text(TICKET + "\n\nSecond paragraph about the invoice total.")
    (raw / "billing" / "b.md").write_text("# Invoice\n\n" + TICKET)
    (raw / "shipping").mkdir()
    (raw / "shipping" / "c.html").write_text(f"<html><body><p>{TICKET.replace('card', 'parcel')}</p></body></html>")
    write_pdf(raw / "shipping" / "d.pdf", [["The parcel for order 5512 never arrived."], ["Tracking says delivered."]])
    (raw / "exports").mkdir()
    pl.DataFrame({"id": [1, 2], "text": [TICKET, "Where is my parcel, it is late by ten days now?"],
                  "label": ["billing", "shipping"]}).write_csv(raw / "exports" / "t.csv")
    (raw / "exports" / "t.jsonl").write_text(json.dumps({"id": 9, "text": TICKET, "label": "billing"}) + "\n")
    with sqlite3.connect(raw / "exports" / "h.sqlite") as db:
        db.execute("create table tickets (id integer primary key, text text, label text)")
        db.execute("insert into tickets values (1, ?, 'billing')", (TICKET,))
        db.execute("create table agents (id integer, name text)")


def test_every_source_type_is_read(tmp_path):
    _write_good_files(tmp_path)
    result = collect_raw_corpus(tmp_path, _settings())
    kept = result.kept
    assert result.rejected.is_empty(), result.rejected.to_dicts()
    assert set(kept["source_type"]) == {"txt", "md", "html", "pdf", "csv", "jsonl", "sqlite"}
    pdf = kept.filter(pl.col("source_type") == "pdf").row(0, named=True)
    assert "never arrived" in pdf["text"] and pdf["locator"].startswith("pages 1-2")
    assert pdf["label"] == "shipping" and pdf["label_source"] == "folder"
    csv_rows = kept.filter(pl.col("source_type") == "csv")
    assert csv_rows["label_source"].to_list() == ["column", "column"]
    assert csv_rows["locator"].to_list() == ["id=1", "id=2"]
    sql_row = kept.filter(pl.col("source_type") == "sqlite").row(0, named=True)
    assert sql_row["locator"] == "table tickets; id=1"
    assert kept["record_id"].n_unique() == kept.height
    assert all(len(h) == 64 for h in kept["content_sha256"])


def test_record_ids_are_stable_across_runs_and_data_root_copies(tmp_path):
    _write_good_files(tmp_path / "one")
    _write_good_files(tmp_path / "two")
    first = collect_raw_corpus(tmp_path / "one", _settings()).kept.sort("record_id")
    again = collect_raw_corpus(tmp_path / "one", _settings()).kept.sort("record_id")
    other = collect_raw_corpus(tmp_path / "two", _settings()).kept.sort("record_id")
    assert first["record_id"].to_list() == again["record_id"].to_list() == other["record_id"].to_list()


def test_bad_inputs_become_rejects_and_the_rest_goes_on(tmp_path):
    _write_good_files(tmp_path)
    raw = tmp_path / "raw"
    (raw / "empty.txt").write_bytes(b"")
    (raw / "binary.txt").write_bytes(bytes(range(256)) * 10)
    (raw / "latin1.txt").write_bytes("caf\xe9 order problem, the refund never came back to me".encode("latin-1"))
    (raw / "corrupt.pdf").write_bytes(b"%PDF-1.4\nthis is not really a pdf at all")
    write_pdf(raw / "scanned.pdf", [[]])  # a page with no text layer
    (raw / "bad.jsonl").write_text(json.dumps({"text": TICKET, "label": "billing"}) + "\n{not json\n")
    pl.DataFrame({"body": ["x"], "label": ["billing"]}).write_csv(raw / "nocol.csv")
    (raw / "fake.sqlite").write_bytes(b"definitely not a database" * 10)
    (raw / "notes.xyz").write_text("what is this")
    outside = tmp_path.parent / f"{tmp_path.name}_outside.txt"
    outside.write_text(TICKET)
    (raw / "link.txt").symlink_to(outside)

    result = collect_raw_corpus(tmp_path, _settings())
    reasons = {(r["source_uri"], r["reason"]) for r in result.rejected.to_dicts()}
    assert ("raw/empty.txt", "empty_file") in reasons
    assert ("raw/binary.txt", "unreadable_file") in reasons
    assert ("raw/latin1.txt", "unreadable_file") in reasons
    assert ("raw/corrupt.pdf", "unreadable_file") in reasons
    assert ("raw/scanned.pdf", "unreadable_file") in reasons
    assert ("raw/bad.jsonl", "malformed_row") in reasons
    assert ("raw/nocol.csv", "missing_column") in reasons
    assert ("raw/fake.sqlite", "unreadable_database") in reasons
    assert ("raw/notes.xyz", "unsupported_file_type") in reasons
    assert ("raw/link.txt", "symlink_outside_data_root") in reasons
    details = dict(((r["source_uri"], r["reason"]), r["detail"]) for r in result.rejected.to_dicts())
    assert "UTF-8" in details[("raw/latin1.txt", "unreadable_file")]
    assert "text layer" in details[("raw/scanned.pdf", "unreadable_file")]
    assert "text_column" in details[("raw/nocol.csv", "missing_column")]
    # the good line of bad.jsonl and all good files still came through
    assert result.kept.filter(pl.col("source_uri") == "raw/bad.jsonl").height == 1
    assert result.kept.height == 9


def test_sql_source_missing_env_is_rejected_without_crash(tmp_path, monkeypatch):
    monkeypatch.delenv("TICKETS_DB_URL", raising=False)
    settings = Settings.model_validate({"sources": {"sql": [
        {"name": "tickets", "url_env": "TICKETS_DB_URL", "query": "select text from tickets"}]}})
    result = collect_raw_corpus(tmp_path, settings)
    row = result.rejected.row(0, named=True)
    assert row["source_uri"] == "sql://tickets" and row["reason"] == "database_unreachable"
    assert "TICKETS_DB_URL" in row["detail"]


def test_sql_source_reads_sqlite_url_read_only(tmp_path, monkeypatch):
    db_path = tmp_path / "ext.db"
    with sqlite3.connect(db_path) as db:
        db.execute("create table t (id integer, body text, cat text)")
        db.execute("insert into t values (7, ?, 'billing')", (TICKET,))
    monkeypatch.setenv("EXT_DB_URL", f"sqlite:///{db_path}")
    settings = Settings.model_validate({"sources": {"sql": [
        {"name": "ext", "url_env": "EXT_DB_URL", "query": "select id, body, cat from t",
         "text_column": "body", "label_column": "cat", "id_column": "id"}]}})
    result = collect_raw_corpus(tmp_path, settings)
    assert result.kept.row(0, named=True)["locator"] == "id=7"
    bad = Settings.model_validate({"sources": {"sql": [
        {"name": "ext", "url_env": "EXT_DB_URL", "query": "delete from t"}]}})
    assert collect_raw_corpus(tmp_path, bad).rejected.row(0, named=True)["reason"] == "database_unreachable"
    with sqlite3.connect(db_path) as db:
        assert db.execute("select count(*) from t").fetchone()[0] == 1


def test_word_and_email_documents_are_read(tmp_path):
    import docx
    from email.message import EmailMessage

    folder = tmp_path / "raw" / "billing"
    folder.mkdir(parents=True)
    document = docx.Document()
    document.add_heading("Refund request", 1)
    document.add_paragraph("I was charged twice for order 5512 and want one payment refunded to my card.")
    document.save(folder / "letter.docx")
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "a@example.com", "help@example.org", "Double charge"
    message.set_content("The invoice for order 7781 shows the shipping fee twice, please correct the total.")
    (folder / "mail.eml").write_bytes(bytes(message))

    result = collect_raw_corpus(tmp_path, _settings())
    assert result.rejected.is_empty(), result.rejected.to_dicts()
    by_type = {r["source_type"]: r for r in result.kept.to_dicts()}
    assert "charged twice" in by_type["docx"]["text"] and "Refund request" in by_type["docx"]["text"]
    assert "shipping fee twice" in by_type["eml"]["text"]
    assert by_type["eml"]["label"] == "billing"


def test_sqlite_files_are_opened_read_only(tmp_path):
    import pytest
    import sqlalchemy as sa

    from finetune_pipeline.sources.sql import sqlite_readonly_engine

    path = tmp_path / "with space.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("create table tickets (id integer, text text)")
    engine = sqlite_readonly_engine(path)
    with pytest.raises(sa.exc.OperationalError, match="readonly"):
        with engine.begin() as conn:
            conn.exec_driver_sql("insert into tickets values (1, 'x')")
    engine.dispose()
