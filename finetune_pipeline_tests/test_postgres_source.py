"""SQL sources against a real PostgreSQL server (started by `make test` via scripts/test_postgres.sh).

These tests fail, never skip, when the server is missing: CI must provide it.
"""

import logging
import os

import pytest
import sqlalchemy as sa

from finetune_pipeline.settings import Settings
from finetune_pipeline.sources import collect_raw_corpus

TICKETS = [
    (101, "I was charged twice for my March invoice, please refund one of the payments.", "billing"),
    (102, "The courier marked my parcel delivered but nothing arrived at my address.", "shipping"),
    (103, "   ", "billing"),
]


@pytest.fixture(scope="module")
def pg_url() -> str:
    url = os.environ.get("FINETUNE_TEST_PG_URL")
    if not url:
        pytest.fail("FINETUNE_TEST_PG_URL is not set: run the suite with `make test`, which starts a local "
                    "PostgreSQL (scripts/test_postgres.sh start) and sets it")
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE IF EXISTS support_tickets")
            conn.exec_driver_sql("CREATE TABLE support_tickets (ticket_id integer primary key, body text, "
                                 "category text)")
            conn.execute(sa.text("INSERT INTO support_tickets VALUES (:i, :b, :c)"),
                         [{"i": i, "b": b, "c": c} for i, b, c in TICKETS])
    except sa.exc.OperationalError as exc:
        pytest.fail(f"PostgreSQL at FINETUNE_TEST_PG_URL does not answer ({exc.__class__.__name__}); "
                    f"start it with scripts/test_postgres.sh start")
    finally:
        engine.dispose()
    return url


def _settings(query: str, **mapping) -> Settings:
    return Settings.model_validate({"labels": ["billing", "shipping"], "sources": {"sql": [
        {"name": "helpdesk", "url_env": "HELPDESK_DB_URL", "query": query, **mapping}]}})


def _count(url: str) -> int:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        count = conn.exec_driver_sql("SELECT count(*) FROM support_tickets").scalar_one()
    engine.dispose()
    return count


def test_postgres_query_becomes_records_with_provenance(tmp_path, monkeypatch, pg_url):
    monkeypatch.setenv("HELPDESK_DB_URL", pg_url)
    settings = _settings("SELECT ticket_id, body, category FROM support_tickets ORDER BY ticket_id",
                         text_column="body", label_column="category", id_column="ticket_id")
    result = collect_raw_corpus(tmp_path, settings)
    rows = result.kept.to_dicts()
    assert [r["locator"] for r in rows] == ["ticket_id=101", "ticket_id=102"]
    assert {r["source_uri"] for r in rows} == {"sql://helpdesk"} and {r["source_type"] for r in rows} == {"sql"}
    assert [r["label"] for r in rows] == ["billing", "shipping"] and rows[0]["label_source"] == "column"
    assert rows[0]["text"] == TICKETS[0][1] and rows[0]["ingested_at"]
    blank = result.rejected.row(0, named=True)  # the blank body is a reject, not a crash
    assert (blank["reason"], blank["locator"]) == ("empty_text", "ticket_id=103")
    assert result.stats.by_source_type["sql"].records == 2


def test_postgres_connection_is_read_only(tmp_path, monkeypatch, pg_url):
    monkeypatch.setenv("HELPDESK_DB_URL", pg_url)
    # A data-modifying CTE passes the SELECT/WITH check; the read-only transaction must stop it.
    sneaky = _settings("WITH gone AS (DELETE FROM support_tickets RETURNING body) SELECT body AS text FROM gone")
    result = collect_raw_corpus(tmp_path, sneaky)
    assert result.kept.is_empty()
    assert result.rejected.row(0, named=True)["reason"] == "database_unreachable"
    assert _count(pg_url) == len(TICKETS)
    refused = collect_raw_corpus(tmp_path, _settings("DROP TABLE support_tickets"))
    assert "only SELECT" in refused.rejected.row(0, named=True)["detail"]
    assert _count(pg_url) == len(TICKETS)


def test_postgres_credentials_never_reach_rejects_or_logs(tmp_path, monkeypatch, pg_url, caplog):
    url = sa.engine.make_url(pg_url)
    wrong = url.set(password="wrong-" + url.password)
    monkeypatch.setenv("HELPDESK_DB_URL", wrong.render_as_string(hide_password=False))
    caplog.set_level(logging.DEBUG)
    result = collect_raw_corpus(tmp_path, _settings("SELECT body AS text FROM support_tickets"))
    reject = result.rejected.row(0, named=True)
    assert reject["reason"] == "database_unreachable" and "unreachable" in reject["detail"]
    everything = " ".join(str(v) for v in reject.values()) + caplog.text
    for secret in (url.password, wrong.password, url.username, f":{url.port}"):
        assert secret not in everything
    # unreachable server: same clean reject
    monkeypatch.setenv("HELPDESK_DB_URL", url.set(port=1).render_as_string(hide_password=False))
    down = collect_raw_corpus(tmp_path, _settings("SELECT body AS text FROM support_tickets"))
    assert down.rejected.row(0, named=True)["reason"] == "database_unreachable"
    assert url.password not in down.rejected.row(0, named=True)["detail"]
