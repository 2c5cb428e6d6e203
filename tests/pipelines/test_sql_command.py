"""`recsys sql`: the analyst's one command, read-only, on the published warehouse."""
from __future__ import annotations

import csv
import io
import subprocess

import duckdb

from tests.conftest import BIN


def _sql(home, *args) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "recsys"), "--home", str(home), "sql", *args], capture_output=True, text=True,
                          timeout=120)


def test_sql_prints_the_query_result_and_refuses_writes(baseline):
    db = baseline.home / "warehouse" / "recsys.duckdb"
    with duckdb.connect(str(db), read_only=True) as con:
        user = con.execute("SELECT min(user_id) FROM latest_user_recommendations WHERE surface = 'for_you'").fetchone()[0]
        expected = con.execute(
            "SELECT r.rank, r.item_id, i.title FROM latest_user_recommendations r JOIN latest_items i USING (item_id) "
            "WHERE r.user_id = ? AND r.surface = 'for_you' ORDER BY r.rank", [user]).fetchall()
    assert expected, "the baseline has a for_you list"
    # The v_ view answers the common question (a user's list with titles) in one SELECT.
    p = _sql(baseline.home, f"SELECT rank, item_id, title FROM v_user_recommendations WHERE user_id = '{user}' "
                            "AND surface = 'for_you' ORDER BY rank", "--csv")
    assert p.returncode == 0, p.stderr
    rows = list(csv.reader(io.StringIO(p.stdout)))
    assert rows[0] == ["rank", "item_id", "title"]
    assert [(int(r), i, t) for r, i, t in rows[1:]] == [(int(r), str(i), t) for r, i, t in expected]

    p = _sql(baseline.home, "SELECT count(*) AS n FROM latest_items")
    assert p.returncode == 0 and "n" in p.stdout

    before = db.stat().st_mtime_ns
    p = _sql(baseline.home, "DELETE FROM items")
    assert p.returncode != 0 and "read-only" in (p.stderr + p.stdout).lower()
    p = _sql(baseline.home, "SELECT * FROM no_such_table")
    assert p.returncode != 0 and p.stderr.strip().startswith("SQL error") and "no_such_table" in p.stderr
    assert db.stat().st_mtime_ns == before
