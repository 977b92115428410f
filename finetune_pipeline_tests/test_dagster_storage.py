"""The instance configurations shipped in the repo: dagster.yaml (SQLite) and dagster.postgres.yaml, the
latter against the real PostgreSQL that `make test` starts (fails, never skips, without it)."""

import os
import shutil

import dagster as dg
import pytest
import sqlalchemy as sa

from finetune_pipeline_tests.conftest import REPO

DB = "dagster_storage_test"


@pytest.fixture()
def dagster_pg_url(monkeypatch) -> str:
    base = os.environ.get("FINETUNE_TEST_PG_URL")
    if not base:
        pytest.fail("FINETUNE_TEST_PG_URL is not set: run the suite with `make test` (it starts PostgreSQL)")
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
        conn.exec_driver_sql(f"CREATE DATABASE {DB}")
    admin.dispose()
    # dagster-postgres speaks psycopg2: SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3 (installed for
    # SQL sources), whose server-side parameters break Dagster's `NOTIFY run_events, %s`.
    url = sa.engine.make_url(base).set(drivername="postgresql+psycopg2", database=DB) \
        .render_as_string(hide_password=False)
    monkeypatch.setenv("DAGSTER_PG_URL", url)
    return url


@dg.asset
def tiny() -> int:
    return 1


@dg.asset(pool="gpu")
def tiny_gpu(tiny: int) -> int:
    return tiny + 1


def test_postgres_instance_config_stores_runs_and_events_in_postgres(tmp_path, dagster_pg_url):
    shutil.copy(REPO / "dagster.postgres.yaml", tmp_path / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 1
        assert instance.get_concurrency_config().run_queue_config.max_concurrent_runs == 2
        result = dg.materialize([tiny, tiny_gpu], instance=instance)
        assert result.success
        run_id = result.run_id
    engine = sa.create_engine(dagster_pg_url)
    with engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT status FROM runs WHERE run_id = :r"), {"r": run_id}).scalar_one()
        events = conn.execute(sa.text("SELECT count(*) FROM event_logs WHERE run_id = :r"), {"r": run_id}).scalar_one()
    engine.dispose()
    assert stored == "SUCCESS" and events > 5


def test_default_instance_config_limits_runs_and_pools(tmp_path):
    shutil.copy(REPO / "dagster.yaml", tmp_path / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        config = instance.get_concurrency_config()
        assert config.pool_config.default_pool_limit == 1
        assert config.run_queue_config.max_concurrent_runs == 2
        assert instance.telemetry_enabled is False
