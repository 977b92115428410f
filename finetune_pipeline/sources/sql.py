"""Structured databases through SQLAlchemy, always read-only.

SQLite files found in `raw/` are opened with `mode=ro`; every table holding the configured text column
becomes a source. Other databases come from `sources.sql` in finetune.yaml, with the URL read from an
environment variable so credentials never sit in the YAML file, the logs or the metadata.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import quote

import sqlalchemy as sa

SQLITE_TYPES = {".sqlite": "sqlite", ".db": "sqlite", ".sqlite3": "sqlite"}


class DatabaseUnavailable(Exception):
    """The database could not be opened or queried; the message carries no credentials."""


def sqlite_readonly_engine(path: Path) -> sa.Engine:
    # SQLAlchemy passes `file:` URLs to sqlite3 as URIs when `uri=true` is in the query string.
    return sa.create_engine(f"sqlite:///file:{quote(str(path))}?mode=ro&uri=true")


def read_sqlite_tables(path: Path, text_column: str | list[str]) -> dict[str, list[dict]]:
    """Rows of every table in a SQLite file that has `text_column` (or any of a list of columns), by table name."""
    wanted = {text_column} if isinstance(text_column, str) else set(text_column)
    with path.open("rb") as handle:
        if handle.read(16) != b"SQLite format 3\x00":
            raise DatabaseUnavailable("not a SQLite database (bad header); remove it or export the data")
    engine = sqlite_readonly_engine(path)
    try:
        tables = {}
        with engine.connect() as conn:
            inspector = sa.inspect(conn)
            for table in inspector.get_table_names():
                columns = {c["name"] for c in inspector.get_columns(table)}
                if not wanted & columns:
                    continue
                rows = conn.execute(sa.select(sa.table(table, *[sa.column(c) for c in columns]))).mappings()
                tables[table] = [dict(r) for r in rows]
        return tables
    except sa.exc.SQLAlchemyError as exc:
        raise DatabaseUnavailable(f"cannot read the database ({type(exc).__name__})") from None
    finally:
        engine.dispose()


def read_sql_query(url_env: str, query: str) -> list[dict]:
    """Run one SELECT in a read-only transaction against the URL held in `url_env`."""
    url = os.environ.get(url_env)
    if not url:
        raise DatabaseUnavailable(f"environment variable {url_env} is not set; export the database URL there")
    if not query.lstrip().lower().startswith(("select", "with")):
        raise DatabaseUnavailable("only SELECT queries are allowed for SQL sources")
    try:
        engine = sa.create_engine(url)
    except Exception as exc:  # bad URL syntax: say so without echoing the URL
        raise DatabaseUnavailable(f"{url_env} does not hold a valid SQLAlchemy URL ({type(exc).__name__})") from None
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "postgresql":
                conn.exec_driver_sql("SET TRANSACTION READ ONLY")
            elif engine.dialect.name == "sqlite":
                conn.exec_driver_sql("PRAGMA query_only = ON")
            rows = [dict(r) for r in conn.execute(sa.text(query)).mappings()]
            conn.rollback()
            return rows
    except sa.exc.SQLAlchemyError as exc:
        # The driver's message can contain the host and user; keep only the error class.
        raise DatabaseUnavailable(f"query failed or database unreachable ({type(exc).__name__})") from None
    finally:
        engine.dispose()
