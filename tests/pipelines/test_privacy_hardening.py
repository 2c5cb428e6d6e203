"""Privacy under stress: a forgotten id is never written again (consent refused), an unknown id is
reported, forget is all-or-nothing against a damaged warehouse, and ``recsys rebuild-warehouse``
brings every table back from the Parquet copies."""
import hashlib
import os
import subprocess

import duckdb
import pyarrow.parquet as pq
import pytest

from pipelines.artifacts import layout
from pipelines.cli import main
from pipelines.infra import warehouse
from pipelines.infra.consent import is_forgotten
from pipelines.services.privacy import find_user_everywhere, forget
from tests.conftest import BASE_DS, BIN


def a_user(cfg) -> str:
    con = duckdb.connect(str(layout(cfg).duckdb_path), read_only=True)
    try:
        return con.execute("SELECT min(user_id) FROM user_recommendations WHERE ds = ?::DATE", [BASE_DS]).fetchone()[0]
    finally:
        con.close()


def files(cfg, skip=("forgotten.parquet", "salt")) -> dict[str, str]:
    """Every file's hash; the salted hash list (written first, on purpose) and locks aside."""
    return {str(p.relative_to(cfg.home)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(cfg.home.rglob("*")) if p.is_file() and p.name not in skip and p.suffix != ".lock"
            and p.relative_to(cfg.home).parts[0] != "locks"}


def parquet_counts(cfg) -> dict[str, int]:
    """Rows per table, read from the Parquet copies with pyarrow."""
    roots = (layout(cfg).parquet_root, warehouse.log_root(layout(cfg).duckdb_path))
    return {t.name: sum(pq.read_metadata(f).num_rows for f in t.glob("ds=*/part-0.parquet"))
            for root in roots for t in sorted(root.iterdir()) if t.is_dir()}


def duckdb_counts(cfg, tables) -> dict[str, int]:
    con = warehouse.connect_readonly(cfg)
    try:
        return {t: con.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables}
    finally:
        con.close()


def test_forget_leaves_the_id_nowhere_and_consent_afterwards_is_refused(home, capsys):
    user = a_user(home)
    assert len(find_user_everywhere(home, user)) > 5  # in landing, validated, features, warehouse, ...
    assert main(["--home", str(home.home), "-q", "forget", user]) == 0
    assert "not found" not in capsys.readouterr().out
    assert find_user_everywhere(home, user) == []
    before = files(home)
    assert main(["--home", str(home.home), "-q", "consent", user, "--email", "off"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "was forgotten" in err[0] and "nothing was written" in err[0]
    assert files(home) == before
    assert find_user_everywhere(home, user) == []


def test_forget_of_an_unknown_id_says_so_and_still_blocks_it(home, capsys):
    assert main(["--home", str(home.home), "-q", "forget", "nobody-0042"]) == 0
    out = capsys.readouterr().out
    assert "user nobody-0042 was not found anywhere under the data root" in out and "blocked anyway" in out
    assert is_forgotten(home, "nobody-0042")
    assert main(["--home", str(home.home), "-q", "forget", "nobody-0042"]) == 0
    assert "(it was forgotten before)" in capsys.readouterr().out
    assert main(["--home", str(home.home), "-q", "consent", "nobody-0042", "--personalization", "on"]) == 2


@pytest.mark.parametrize("damage", ["truncate", "overwrite"])
def test_forget_with_a_damaged_warehouse_changes_nothing_and_rebuild_gets_everything_back(home, capsys, damage):
    user = a_user(home)
    tables = parquet_counts(home)
    assert {"user_recommendations", "validation_runs", "quarantined_events", "model_runs"} <= set(tables)
    assert duckdb_counts(home, tables) == tables  # the copies hold what DuckDB holds
    db = layout(home).duckdb_path
    data = db.read_bytes()
    db.write_bytes(data[: len(data) // 3] if damage == "truncate" else b"\0" * len(data))
    before = files(home)
    assert main(["--home", str(home.home), "-q", "forget", user]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"recsys: error: warehouse file {db} is damaged (") and \
        err.endswith("rebuild it from the Parquet copies with: recsys rebuild-warehouse"), err
    assert files(home) == before  # nothing rewritten, no staged file left
    assert main(["--home", str(home.home), "-q", "rebuild-warehouse"]) == 0
    assert "rebuilt" in capsys.readouterr().out
    assert duckdb_counts(home, tables) == tables
    kept = list(db.parent.glob("recsys.duckdb.damaged-*"))
    assert len(kept) == 1 and kept[0].read_bytes() == db.with_name(kept[0].name).read_bytes() != data
    con = warehouse.connect_readonly(home)
    assert con.execute("SELECT DISTINCT ds::VARCHAR, run_id FROM latest_user_recommendations").fetchall() == \
        [(BASE_DS, "baseline")]
    con.close()
    assert main(["--home", str(home.home), "-q", "forget", user]) == 0
    assert find_user_everywhere(home, user) == []  # the damaged copy, which forget cannot scrub, is gone too
    con = warehouse.connect_readonly(home)
    assert con.execute("SELECT count(*) FROM privacy_requests").fetchone()[0] == 1
    con.close()
    assert parquet_counts(home)["privacy_requests"] == 1


def test_forget_api_reports_found(home):
    audit = forget(home, a_user(home))
    assert audit["found"] and not audit["already_forgotten"] and audit["warehouse_rows_removed"] > 0


@pytest.mark.parametrize("point,gone", [("forget.files_staged", False), ("forget.mid_replace", True)])
def test_a_killed_forget_is_all_or_nothing(home, point, gone):
    user = a_user(home)
    before = files(home)
    env = {**os.environ, "RECSYS_HOME": str(home.home), "RECSYS_FAULT_POINT": point}
    res = subprocess.run([str(BIN / "recsys"), "-q", "forget", user], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == -9, res.stderr[-2000:]
    warehouse.recover(layout(home).duckdb_path, layout(home).parquet_root)  # what the next writer runs first
    assert not [p for p in home.home.rglob("*") if ".staged-" in p.name]
    if gone:  # committed: rolled forward, the id is nowhere
        assert find_user_everywhere(home, user) == []
    else:  # not committed: every file as it was (the salted hash aside), and a rerun finishes the job
        assert files(home) == before
        assert main(["--home", str(home.home), "-q", "forget", user]) == 0
        assert find_user_everywhere(home, user) == []
