"""Collection from real files of each type, and each kind of bad input becoming a reject."""

import json
import sqlite3
from pathlib import Path

import polars as pl
import pytest

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


def test_parquet_and_hugging_face_datasets_are_read(tmp_path):
    import datasets

    raw = tmp_path / "raw"
    raw.mkdir()
    pl.DataFrame({"id": ["p1"], "text": [TICKET], "label": ["billing"]}).write_parquet(raw / "t.parquet")
    single = datasets.Dataset.from_dict({"id": [1, 2], "text": [TICKET, "My parcel is ten days late, where is it?"],
                                         "label": ["billing", "shipping"]})
    single.save_to_disk(str(raw / "hub_single"))
    datasets.DatasetDict({"train": single, "test": single.select([1])}).save_to_disk(str(raw / "hub_dict"))

    result = collect_raw_corpus(tmp_path, _settings())
    assert result.rejected.is_empty(), result.rejected.to_dicts()
    kept = result.kept
    assert kept.filter(pl.col("source_type") == "parquet")["locator"].to_list() == ["id=p1"]
    hub = kept.filter(pl.col("source_type") == "hf_dataset").sort("source_uri", "locator")
    assert hub["source_uri"].to_list() == ["raw/hub_dict"] * 3 + ["raw/hub_single"] * 2
    # DatasetDict rows are located by split, then by the id column
    assert sorted(hub.filter(pl.col("source_uri") == "raw/hub_dict")["locator"]) == [
        "split test; id=2", "split train; id=1", "split train; id=2"]
    assert kept["record_id"].n_unique() == kept.height
    assert hub["label_source"].to_list() == ["column"] * 5
    # the Arrow files inside the dataset folders are not read a second time as sources of their own
    assert result.stats.files == 3


def test_dataset_dict_rows_without_ids_are_located_by_split(tmp_path):
    import datasets

    raw = tmp_path / "raw"
    raw.mkdir()
    ds = datasets.Dataset.from_dict({"text": [TICKET, TICKET + " Again."]})
    datasets.DatasetDict({"train": ds, "validation": ds.select([0])}).save_to_disk(str(raw / "hub"))
    locators = collect_raw_corpus(tmp_path, _settings()).kept["locator"].to_list()
    assert sorted(locators) == ["split train; row 1", "split train; row 2", "split validation; row 1"]


def test_an_id_used_twice_in_one_file_keeps_record_ids_unique(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    pl.DataFrame({"id": [7, 7, 8], "text": [TICKET, TICKET + " Two.", TICKET + " Three."]}).write_csv(raw / "t.csv")
    kept = collect_raw_corpus(tmp_path, _settings()).kept
    assert kept["locator"].to_list() == ["id=7; row 1", "id=7; row 2", "id=8"]
    assert kept["record_id"].n_unique() == 3


def test_prompt_and_response_columns(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "pairs.jsonl").write_text(
        json.dumps({"q": "How do I reset my password?", "a": "Use the 'Forgot password' link on the sign-in page."})
        + "\n" + json.dumps({"q": "Where is my order?", "a": ""}) + "\n")
    settings = Settings.model_validate({"sources": {"tabular": {"prompt_column": "q", "response_column": "a",
                                                                "label_column": None}}})
    result = collect_raw_corpus(tmp_path, settings)
    row = result.kept.row(0, named=True)
    assert row["prompt"] == "How do I reset my password?" and row["response"].startswith("Use the")
    assert row["text"] == row["prompt"] + "\n\n" + row["response"]
    bad = result.rejected.row(0, named=True)
    assert bad["reason"] == "empty_text" and bad["locator"] == "line 2" and "'a'" in bad["detail"]
    missing = Settings.model_validate({"sources": {"tabular": {"prompt_column": "question",
                                                               "response_column": "a"}}})
    reject = collect_raw_corpus(tmp_path, missing).rejected.row(0, named=True)
    assert reject["reason"] == "missing_column" and "prompt_column" in reject["detail"]


def _section(title: str, words: int, seed: int) -> str:
    body = " ".join(f"word{(seed * 7 + i) % 97}" for i in range(words))
    return f"{title.upper()}\n\n{body}.\n\n"


def test_long_documents_are_chunked_by_title_with_element_ranges(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    # three sections of ~700 characters each, plus one paragraph far longer than the chunk size
    text = "".join(_section(f"Section {n}", 100, n) for n in range(3))
    text += "APPENDIX\n\n" + " ".join(f"token{i}" for i in range(1200)) + ".\n"
    (raw / "manual.txt").write_text(text)
    settings = Settings.model_validate({"sources": {"chunk_max_chars": 2000, "chunk_combine_under_chars": 300}})
    chunks = collect_raw_corpus(tmp_path, settings).kept.sort("locator")
    by_locator = dict(zip(chunks["locator"], chunks["text"]))
    assert by_locator["elements 0-1"].startswith("SECTION 0")  # title + its paragraph, one record
    assert by_locator["elements 2-3"].startswith("SECTION 1")
    assert by_locator["elements 4-5"].startswith("SECTION 2")
    parts = sorted((loc for loc in by_locator if "(part" in loc), key=lambda l: int(l.split("part ")[1].split("/")[0]))
    assert len(parts) >= 5 and all(loc.startswith("element 7 (part") for loc in parts[1:])
    assert parts[0] == "elements 6-7 (part 1/6)" and by_locator[parts[0]].startswith("APPENDIX\n\ntoken0 ")
    assert max(len(t) for t in chunks["text"]) <= 2000
    # no words lost or cut in half by the split
    appendix = " ".join(by_locator[loc] for loc in parts)
    assert appendix.split() == ("APPENDIX " + " ".join(f"token{i}" for i in range(1200)) + ".").split()
    types = dict(zip(chunks["locator"], chunks["element_types"]))
    assert "Title" in types["elements 0-1"].split(",") and len(types["elements 0-1"].split(",")) == 2

    by_chars = Settings.model_validate({"sources": {"chunk_by": "characters", "chunk_max_chars": 2000}})
    locators = collect_raw_corpus(tmp_path, by_chars).kept["locator"].to_list()
    assert locators[0] == "elements 0-4"  # titles ignored: elements merged up to the size limit


def test_pdf_chunks_name_their_pages(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    page = [f"Line {i} of the shipping policy explains returns and refunds in detail." for i in range(12)]
    write_pdf(raw / "policy.pdf", [page, page, page])
    settings = Settings.model_validate({"sources": {"chunk_by": "characters", "chunk_max_chars": 1000}})
    locators = collect_raw_corpus(tmp_path, settings).kept["locator"].to_list()
    assert len(locators) >= 3
    assert locators[0].startswith("page 1; element") or locators[0].startswith("pages 1-")
    assert any(loc.startswith(("page 3;", "pages 2-3;")) for loc in locators)


def test_symlinks_hidden_files_and_nested_folders(tmp_path):
    raw = tmp_path / "raw"
    (raw / "a" / "b" / "c").mkdir(parents=True)
    (raw / "a" / "b" / "c" / "deep.txt").write_text(TICKET)
    (raw / ".DS_Store").write_bytes(b"\x00\x01")
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "inside.txt").write_text(TICKET + " Inside the data root.")
    (raw / "linked").symlink_to(tmp_path / "shared")  # a folder link that stays inside the data root
    outside = tmp_path.parent / f"{tmp_path.name}_outside_dir"
    outside.mkdir()
    (outside / "secret.txt").write_text(TICKET)
    (raw / "escape").symlink_to(outside)
    (raw / "loop").symlink_to(raw)  # a link back up: must not recurse forever

    result = collect_raw_corpus(tmp_path, _settings())
    assert sorted(result.kept["source_uri"]) == ["raw/a/b/c/deep.txt", "raw/linked/inside.txt"]
    rejects = result.rejected.to_dicts()
    assert [(r["source_uri"], r["reason"]) for r in rejects] == [("raw/escape", "symlink_outside_data_root")]


def _count_parses(monkeypatch) -> list[str]:
    from finetune_pipeline.sources import files

    parsed: list[str] = []
    real = files.parse_with_time_limit

    def counting(path, settings_json, timeout_s):
        parsed.append(Path(path).name)
        return real(path, settings_json, timeout_s)

    monkeypatch.setattr(files, "parse_with_time_limit", counting)
    return parsed


def test_incremental_collection_parses_only_new_or_changed_sources(tmp_path, monkeypatch):
    _write_good_files(tmp_path)
    cache = tmp_path / ".pipeline" / "parse_cache"
    parsed = _count_parses(monkeypatch)

    first = collect_raw_corpus(tmp_path, _settings(), cache_dir=cache)
    assert sorted(parsed) == ["a.txt", "b.md", "c.html", "d.pdf"] and first.stats.cached == 0

    parsed.clear()
    second = collect_raw_corpus(tmp_path, _settings(), cache_dir=cache)
    assert parsed == [] and second.stats.parsed == 0 and second.stats.cached == 7
    assert second.kept.sort("record_id").equals(first.kept.sort("record_id"))  # ids, texts, ingest times

    raw = tmp_path / "raw"
    (raw / "billing" / "a.txt").write_text(TICKET + "\n\nA changed second paragraph.")
    (raw / "shipping" / "c.html").rename(raw / "shipping" / "c_renamed.html")
    (raw / "billing" / "b.md").unlink()
    parsed.clear()
    third = collect_raw_corpus(tmp_path, _settings(), cache_dir=cache)
    assert parsed == ["a.txt"] and third.stats.parsed == 1
    uris = third.kept["source_uri"].to_list()
    assert "raw/billing/b.md" not in uris  # deleted source: its records are gone
    assert "raw/shipping/c.html" not in uris and uris.count("raw/shipping/c_renamed.html") == 1
    renamed = third.kept.filter(pl.col("source_uri") == "raw/shipping/c_renamed.html").row(0, named=True)
    original = first.kept.filter(pl.col("source_uri") == "raw/shipping/c.html").row(0, named=True)
    assert renamed["ingested_at"] == original["ingested_at"] and renamed["text"] == original["text"]
    assert "changed second paragraph" in third.kept.filter(pl.col("source_uri") == "raw/billing/a.txt")["text"][0]
    # the cache keeps entries only for sources that still exist
    assert len(list(cache.glob("*.json"))) == 7 - 1  # b.md gone; a.txt's old entry replaced by its new one

    # settings that change parsing invalidate the cache
    parsed.clear()
    collect_raw_corpus(tmp_path, Settings.model_validate({"labels": ["billing", "shipping"],
                                                          "sources": {"chunk_max_chars": 300}}), cache_dir=cache)
    assert sorted(parsed) == ["a.txt", "c_renamed.html", "d.pdf"]


def test_a_damaged_cache_entry_is_parsed_again(tmp_path, monkeypatch):
    _write_good_files(tmp_path)
    cache = tmp_path / ".pipeline" / "parse_cache"
    first = collect_raw_corpus(tmp_path, _settings(), cache_dir=cache)
    for entry in cache.glob("*.parquet"):
        entry.write_bytes(b"garbage")
    parsed = _count_parses(monkeypatch)
    again = collect_raw_corpus(tmp_path, _settings(), cache_dir=cache)
    assert len(parsed) == 4 and again.kept.height == first.kept.height


def test_progress_is_reported_per_source(tmp_path):
    _write_good_files(tmp_path)
    seen = []
    collect_raw_corpus(tmp_path, _settings(), progress=lambda *args: seen.append(args))
    assert [s[0] for s in seen] == list(range(1, 8)) and all(s[1] == 7 for s in seen)
    assert {s[3] for s in seen} == {"parsed"}


def test_a_parser_past_its_time_limit_and_a_zip_bomb_are_rejected_and_the_rest_goes_on(tmp_path):
    import zipfile

    raw = tmp_path / "raw"
    (raw / "billing").mkdir(parents=True)
    write_pdf(raw / "billing" / "slow.pdf", [[TICKET]])
    with zipfile.ZipFile(raw / "billing" / "bomb.docx", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("word/document.xml", b"\0" * (40 * 2**20))  # 40 MiB of zeros in about 40 KiB
    (raw / "rows.csv").write_text("text,label\n" + "".join(f'"{TICKET} ({i})",billing\n' for i in range(3)))
    settings = Settings.model_validate({"labels": ["billing"], "sources": {"parse_timeout_s": 0.001}})
    result = collect_raw_corpus(tmp_path, settings)
    reasons = dict(zip(result.rejected["source_uri"], result.rejected["reason"]))
    assert reasons == {"raw/billing/slow.pdf": "parse_timeout", "raw/billing/bomb.docx": "archive_too_large"}
    details = " ".join(result.rejected["detail"])
    assert "sources.parse_timeout_s" in details and "zip bomb" in details
    assert result.kept.height == 3  # the CSV rows


def test_the_parse_worker_is_replaced_after_a_timeout_and_reports_unreadable_files(tmp_path):
    from finetune_pipeline.sources import files

    write_pdf(tmp_path / "a.pdf", [[TICKET]])
    (tmp_path / "b.pdf").write_bytes((tmp_path / "a.pdf").read_bytes()[:200])  # truncated
    settings = _settings().model_dump_json()
    with pytest.raises(files.ParseTimeout, match="parse_timeout_s"):
        files.parse_with_time_limit(tmp_path / "a.pdf", settings, 0.001)
    assert files._WORKER.process is None  # killed
    records = files.parse_with_time_limit(tmp_path / "a.pdf", settings, 120)  # a new worker
    assert TICKET[:30] in records[0]["text"]
    with pytest.raises(files.UnreadableDocument, match="truncated"):
        files.parse_with_time_limit(tmp_path / "b.pdf", settings, 120)
    pid = files._WORKER.process.pid
    files.release_worker()
    assert files._WORKER.process is None and not Path(f"/proc/{pid}").exists()


QUOTES = [("The only thing we have to fear is fear itself, and nameless terror.", "courage"),
          ("Imagination is more important than knowledge, for knowledge is limited.", "science"),
          ("Be yourself; everyone else is already taken, as the saying goes.", "life"),
          ("Courage is grace under pressure, and the rest is a matter of habit.", "courage")]


def _quotes_root(root: Path, header: str, row, settings: dict) -> Path:
    (root / "raw").mkdir(parents=True)
    (root / "raw" / "quotes.csv").write_text(header + "\n" + "".join(row(q, c) + "\n" for q, c in QUOTES))
    (root / "finetune.yaml").write_text(json.dumps(settings))
    return root


def test_a_table_without_text_and_label_columns_has_them_recognised_and_says_so(tmp_path):
    from finetune_pipeline.settings import load_settings

    root = _quotes_root(tmp_path, "quote,category", lambda q, c: f'"{q}",{c}',
                        {"labels": ["courage", "science", "life"]})
    result = collect_raw_corpus(root, load_settings(root))
    assert result.rejected.is_empty()
    assert result.kept.select("text", "label", "label_source").rows() == [(q, c, "column") for q, c in QUOTES]
    assert result.stats.recognised_columns == [
        "raw/quotes.csv: text column 'quote', label column 'category' (recognised; set "
        "sources.tabular.text_column / label_column to choose)"]
    # from the parse cache the same records and the same note
    cached = collect_raw_corpus(root, load_settings(root), cache_dir=tmp_path / "cache")
    again = collect_raw_corpus(root, load_settings(root), cache_dir=tmp_path / "cache")
    assert again.stats.cached == 1 and again.stats.recognised_columns == cached.stats.recognised_columns \
        == result.stats.recognised_columns
    assert again.kept.select("text", "label").rows() == result.kept.select("text", "label").rows()


def test_an_explicit_column_mapping_wins_over_recognition(tmp_path):
    from finetune_pipeline.settings import load_settings

    # label_column: null set explicitly: no label column, even though `category` holds labels of the set
    root = _quotes_root(tmp_path, "quote,category", lambda q, c: f'"{q}",{c}',
                        {"labels": ["courage", "science", "life"], "sources": {"tabular": {"label_column": None}}})
    result = collect_raw_corpus(root, load_settings(root))
    assert result.kept["label"].null_count() == len(QUOTES) and result.kept["text"].to_list() == [q for q, _ in QUOTES]
    assert result.stats.recognised_columns == ["raw/quotes.csv: text column 'quote' (recognised; set "
                                               "sources.tabular.text_column / label_column to choose)"]
    # text_column set explicitly to a column that is not there: the reject, never a guess
    (root / "finetune.yaml").write_text(json.dumps({"labels": ["courage", "science", "life"],
                                                    "sources": {"tabular": {"text_column": "text"}}}))
    result = collect_raw_corpus(root, load_settings(root))
    assert result.kept.is_empty() and result.rejected["reason"].to_list() == ["missing_column"]
    assert result.stats.recognised_columns == []


def test_a_table_whose_text_column_is_not_clear_is_rejected_with_the_fix(tmp_path):
    from finetune_pipeline.settings import load_settings

    # two text columns of similar length: no guess
    root = _quotes_root(tmp_path, "quote,context,category", lambda q, c: f'"{q}","{q[::-1]}",{c}',
                        {"labels": ["courage", "science", "life"]})
    result = collect_raw_corpus(root, load_settings(root))
    assert result.kept.is_empty()
    [reject] = result.rejected.to_dicts()
    assert reject["reason"] == "missing_column"
    assert reject["detail"].startswith("raw/quotes.csv: no column 'text' and no column clearly the text (string "
                                       "columns: ")
    assert "quote (" in reject["detail"] and "context (" in reject["detail"]
    assert reject["detail"].endswith("set sources.tabular.text_column in finetune.yaml")
    # two columns whose values all fall in the label set: the text is recognised, the label is not guessed
    root = _quotes_root(tmp_path / "two", "quote,category,also", lambda q, c: f'"{q}",{c},{c}',
                        {"labels": ["courage", "science", "life"]})
    result = collect_raw_corpus(root, load_settings(root))
    assert result.kept["label"].null_count() == len(QUOTES)
    assert "no label column: 'also', 'category' all hold labels of the set; set sources.tabular.label_column" \
        in result.stats.recognised_columns[0]
