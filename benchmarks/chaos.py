"""Fault injection: a sequence of nights on demo data with the operator's usual accidents injected at
seeded random points, then the invariants checked.

    make chaos                       # 7 nights, seed 7
    python benchmarks/chaos.py --nights 8 --seed 3 --home /tmp/chaos

Each night runs as a real ``recsys run`` process. The faults (one or two per night, each kind at
least once when the nights allow):

* ``kill``: the night is SIGKILLed at a random named fault point (pipelines/infra/faults.py) inside a
  warehouse write (publish, validation record), then rerun as an operator would;
* ``old_event``: a purchase dated 0001, 1900, 1969 or a year before the data lands;
* ``epoch_batch``: a small file with epoch-second timestamps lands;
* ``bad_batch``: a batch of unparseable rows lands: its night fails once, loudly, the operator
  follows the message (``recsys withdraw BATCH``) and reruns;
* ``mixed_iso``: one file with several ISO 8601 forms;
* ``poison``: an infinite price and a fractional quantity;
* ``reader``: an analyst's read-only DuckDB connection held open through the night;
* ``second_run``: a second ``recsys run`` started while the night runs (must be refused);
* ``future_ds``: a run for a ds after today (must be refused);
* ``forget``: a customer with history is forgotten; consent for them is then refused;
* ``damaged``: recsys.duckdb truncated; the night names it, ``recsys rebuild-warehouse``, rerun.

Invariants at the end: every night published (DuckDB has the night's user_recommendations); row
accounting holds for every landed batch (rows in = valid + quarantined, or withdrawn whole); DuckDB
and every Parquet copy agree (rows and run id per table and ds); no staged leftovers; no forgotten
id in any file or table under the data root. Prints the faults tried and the invariants held; exit
code 1 if one failed.
"""
from __future__ import annotations

import argparse
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import duckdb
import pandas as pd

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pipelines.artifacts import layout  # noqa: E402
from pipelines.config import load_config  # noqa: E402
from pipelines.dev.demo_data import import_demo  # noqa: E402
from pipelines.infra.faults import FAULT_POINTS  # noqa: E402
from pipelines.services.privacy import find_user_everywhere  # noqa: E402

KINDS = ("kill", "old_event", "epoch_batch", "bad_batch", "mixed_iso", "poison", "reader", "second_run",
         "future_ds", "forget", "damaged")
# Points inside the writes a night makes (publish, the validation record): a kill there must leave
# both stores agreeing after the next command's recovery.
KILL_POINTS = tuple(p for p in FAULT_POINTS if p.split(".")[0] in ("publish", "validation"))


class Night:
    def __init__(self, home: Path, seed: int, nights: int, end: date):
        self.home, self.rng = home, random.Random(seed)
        self.cfg = load_config(environ={}, home=home)
        self.days = [(end - timedelta(days=nights - 1 - k)).isoformat() for k in range(nights)]
        self.log: list[str] = []
        self.forgotten: list[str] = []
        self.failures: list[str] = []

    # ------------------------------------------------------------ processes
    def recsys(self, *args, env: dict | None = None, wait: bool = True, timeout: int = 900):
        full = {**os.environ, "RECSYS_HOME": str(self.home), "RECSYS_SEARCH_BUDGET_SECONDS": "0", **(env or {})}
        cmd = [sys.executable, "-m", "pipelines.cli", "-q", *args]
        if not wait:
            return subprocess.Popen(cmd, env=full, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        return subprocess.run(cmd, env=full, cwd=REPO, capture_output=True, text=True, timeout=timeout)

    def say(self, text: str) -> None:
        print(f"  {text}", flush=True)
        self.log.append(text)

    def expect(self, ok: bool, what: str) -> None:
        if not ok:
            self.failures.append(what)
            self.say(f"FAILED: {what}")

    def land_csv(self, name: str, text: str, *extra) -> subprocess.CompletedProcess:
        path = self.home.parent / f"{name}.csv"
        path.write_text(text, encoding="utf-8")
        return self.recsys("import-events", str(path), "--user-col", "u", "--item-col", "i", "--time-col", "t",
                           "--event-type", "purchase", "--quantity-col", "q", "--price-col", "p", *extra)

    # ------------------------------------------------------------ the faults landed before a night
    def before(self, kind: str, ds: str):
        item, user = "i000003", f"chaos{self.rng.randrange(10**6):06d}"
        if kind == "old_event":
            when = self.rng.choice(["0001-01-01T00:00:00Z", "1900-03-01T00:00:00Z", "1969-12-31T23:00:00Z",
                                    f"{int(ds[:4]) - 1}-06-01T10:00:00Z"])
            res = self.land_csv(f"old-{ds}", f"u,i,t,q,p\n{user},{item},{when},1,2.5\n")
            self.say(f"old_event {when}: import rc {res.returncode}")
        elif kind == "epoch_batch":
            t0 = int(pd.Timestamp(ds, tz="UTC").timestamp()) + 3600
            rows = "".join(f"{user},i00000{k},{t0 + 60 * k},1,3.0\n" for k in range(6))
            res = self.land_csv(f"epoch-{ds}", "u,i,t,q,p\n" + rows)
            self.expect(res.returncode == 0, f"epoch batch imports ({res.stderr.strip()[-200:]})")
            self.say("epoch_batch: 6 rows with epoch seconds")
        elif kind == "bad_batch":
            rows = "".join(f"{user},i00000{k},not a time {k},1,3.0\n" for k in range(6))
            res = self.land_csv(f"bad-{ds}", "u,i,t,q,p\n" + rows)
            self.say(f"bad_batch: 6 unparseable rows, import rc {res.returncode}")
        elif kind == "mixed_iso":
            forms = [f"{ds}T10:00:00Z", f"{ds}T17:30:00+05:30", f"{ds} 11:00", f"{ds}T12:00:00.250Z"]
            res = self.land_csv(f"iso-{ds}", "u,i,t,q,p\n" + "".join(f"{user},{item},{t},1,2.0\n" for t in forms))
            self.expect(res.returncode == 0, f"mixed ISO file imports ({res.stderr.strip()[-200:]})")
            self.say("mixed_iso: 4 ISO forms in one file")
        elif kind == "poison":
            # Three poisoned rows among 40 good ones: under the batch's quarantine share, so the night
            # publishes and the poison must not reach a table (the finite-values invariant).
            good = "".join(f"{user}{k},i00000{k % 9},{ds}T08:{k:02d}:00Z,1,4.0\n" for k in range(40))
            res = self.land_csv(f"poison-{ds}", f"u,i,t,q,p\n{good}{user},{item},{ds}T09:00:00Z,1,inf\n"
                                f"{user},{item},{ds}T09:05:00Z,1.5,2.0\n{user},{item},{ds}T09:10:00Z,1,1e400\n")
            self.say(f"poison: price inf and 1e400, quantity 1.5 among 40 good rows (import rc {res.returncode})")
        elif kind == "future_ds":
            res = self.recsys("run", "--ds", (date.today() + timedelta(days=30)).isoformat())
            self.expect(res.returncode == 2 and "--allow-future" in res.stderr, "a future ds is refused")
            self.say("future_ds: refused")
        elif kind == "forget":
            self.forget_someone()
        elif kind == "damaged":
            db = layout(self.cfg).duckdb_path
            if db.exists():
                with open(db, "r+b") as fh:
                    fh.truncate(db.stat().st_size // 3)
                self.say("damaged: recsys.duckdb truncated to a third")

    def forget_someone(self) -> None:
        con = duckdb.connect(str(layout(self.cfg).duckdb_path), read_only=True)
        users = [r[0] for r in con.execute("SELECT DISTINCT user_id FROM user_recommendations ORDER BY 1").fetchall()]
        con.close()
        user = self.rng.choice([u for u in users if u not in self.forgotten])
        res = self.recsys("forget", user)
        self.expect(res.returncode == 0, f"forget {user} ({res.stderr.strip()[-200:]})")
        again = self.recsys("consent", user, "--email", "on")
        self.expect(again.returncode != 0, f"consent after forget is refused for {user}")
        self.forgotten.append(user)
        self.say(f"forget: {user}; consent afterwards refused (rc {again.returncode})")

    # ------------------------------------------------------------ one night
    def night(self, ds: str, kinds: list[str]) -> None:
        for kind in kinds:
            if kind not in ("kill", "reader", "second_run"):
                self.before(kind, ds)
        env = {}
        if "kill" in kinds:
            point = self.rng.choice(KILL_POINTS)
            env["RECSYS_FAULT_POINT"] = point
        reader = None
        if "reader" in kinds and layout(self.cfg).duckdb_path.exists():
            reader = subprocess.Popen([sys.executable, "-c", READER, str(layout(self.cfg).duckdb_path)],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        run = self.recsys("run", "--ds", ds, "--run-id", f"night-{ds}", env=env, wait=False)
        if "second_run" in kinds:
            time.sleep(3)
            second = self.recsys("run", "--ds", ds, "--run-id", f"second-{ds}")
            self.expect(second.returncode == 2 and "is busy" in second.stderr, "a second run is refused")
            self.say(f"second_run: refused ({second.stderr.strip()[:120]})")
        out, err = run.communicate(timeout=1800)
        if reader is not None:
            reader.send_signal(signal.SIGINT)
            r_out, r_err = reader.communicate(timeout=60)
            self.expect("ERROR" not in r_out + r_err, f"the reader never failed ({r_err.strip()[-200:]})")
            self.say(f"reader: held a read-only connection through the night ({r_out.strip().splitlines()[-1:]})")
        rc = run.returncode
        if "kill" in kinds:
            self.say(f"kill at {env['RECSYS_FAULT_POINT']}: rc {rc}")
        self.settle(ds, rc, err)

    def settle(self, ds: str, rc: int, err: str, tries: int = 3) -> None:
        """What an operator does after a failed night (docs/operations.md), then a rerun."""
        for _ in range(tries):
            if rc == 0:
                self.say(f"night {ds}: published")
                return
            line = err.strip().splitlines()[-1] if err.strip() else f"rc {rc}"
            if m := re.search(r"recsys withdraw (\S+?)[`'\" ,;)]", line + " "):
                w = self.recsys("withdraw", m.group(1), "--reason", "chaos: bad batch")
                self.say(f"night {ds} failed on a bad batch; withdraw {m.group(1)}: rc {w.returncode}")
            elif "rebuild-warehouse" in line:
                b = self.recsys("rebuild-warehouse")
                self.say(f"night {ds} named the damaged warehouse; rebuild-warehouse: rc {b.returncode}")
            else:
                self.say(f"night {ds} failed (rc {rc}): {line[:200]}; rerun")
            res = self.recsys("run", "--ds", ds, "--run-id", f"rerun-{ds}")
            rc, err = res.returncode, res.stderr
        self.expect(False, f"night {ds} published after its faults (last: {err.strip()[-300:]})")


READER = """
import sys, time, duckdb
db = sys.argv[1]
held = duckdb.connect(db, read_only=True)
n0 = held.execute("SELECT count(*) FROM user_recommendations").fetchall()[0][0]
k = 0
try:
    while True:
        assert held.execute("SELECT count(*) FROM user_recommendations").fetchall()[0][0] == n0
        c = duckdb.connect(db, read_only=True)
        c.execute("SELECT count(*) FROM latest_user_recommendations").fetchall()
        c.close()
        k += 1
        time.sleep(0.2)
except KeyboardInterrupt:
    pass
except Exception as exc:
    print("ERROR", type(exc).__name__, exc, flush=True)
print(f"{k} reads", flush=True)
"""


# ---------------------------------------------------------------- invariants
def stores_agree(cfg) -> list[str]:
    """DuckDB and the Parquet copies: the same rows and run id for every published table and ds."""
    problems = []
    con = duckdb.connect(str(layout(cfg).duckdb_path), read_only=True)
    root = layout(cfg).parquet_root
    try:
        for (table,) in con.execute("SELECT table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE' "
                                    "AND table_name IN (SELECT table_name FROM information_schema.columns "
                                    "WHERE column_name = 'ds') ORDER BY 1").fetchall():
            if not (root / table).exists():
                continue
            db = dict(((str(d), (n, r)) for d, n, r in con.execute(
                f'SELECT ds, count(*), string_agg(DISTINCT run_id, \',\' ORDER BY run_id) FROM "{table}" GROUP BY ds'
            ).fetchall()))
            pq_side = {}
            for f in sorted(root.glob(f"{table}/ds=*/part-0.parquet")):
                n, r = con.execute("SELECT count(*), string_agg(DISTINCT run_id, ',' ORDER BY run_id) "
                                   "FROM read_parquet(?)", [str(f)]).fetchall()[0]
                pq_side[f.parent.name[3:]] = (n, r)
            pq_side = {k: v for k, v in pq_side.items() if v[0]}  # an empty copy is no rows
            if db != pq_side:
                diff = sorted(k for k in set(db) | set(pq_side) if db.get(k) != pq_side.get(k))
                problems.append(f"{table}: DuckDB and Parquet differ on ds {diff[:3]}: "
                                f"{[(db.get(k), pq_side.get(k)) for k in diff[:3]]}")
    finally:
        con.close()
    return problems


def batch_accounting(cfg) -> list[str]:
    """Every landed event batch: the rows in its landing files (counted here, from the files) equal
    the valid plus quarantined rows of its last validation, unless it is withdrawn."""
    import pyarrow.parquet as pq

    from pipelines.validation.batches import batch_of, list_batches

    rows_in: dict[str, int] = {}
    for f in layout(cfg).landing_events.rglob("batch-*.parquet"):
        rows_in[batch_of(f)] = rows_in.get(batch_of(f), 0) + pq.ParquetFile(f).metadata.num_rows
    problems = []
    for b in list_batches(cfg).to_dict("records"):
        if b["status"] == "withdrawn" or b["batch"] not in rows_in:
            continue
        if rows_in[b["batch"]] != b["valid"] + b["quarantined"]:
            problems.append(f"batch {b['batch']} ({b['status']}): {rows_in[b['batch']]} rows landed != "
                            f"{b['valid']} valid + {b['quarantined']} quarantined")
    return problems


def finite_values(cfg) -> list[str]:
    """No published number is infinite or NaN (a poisoned price must not reach revenue). The
    quarantine keeps rows as they came, so quarantined_events is the one table left out."""
    con = duckdb.connect(str(layout(cfg).duckdb_path), read_only=True)
    problems = []
    try:
        cols = con.execute("SELECT table_name, column_name FROM information_schema.columns WHERE data_type IN "
                           "('DOUBLE', 'FLOAT') AND table_name IN (SELECT table_name FROM information_schema.tables "
                           "WHERE table_type = 'BASE TABLE') AND table_name <> 'quarantined_events'").fetchall()
        for table, col in cols:
            n = con.execute(f'SELECT count(*) FROM "{table}" WHERE NOT isfinite("{col}")').fetchall()[0][0]
            if n:
                problems.append(f"{table}.{col}: {n} non-finite values")
    finally:
        con.close()
    return problems


def invariants(ch: Night) -> list[tuple[str, list[str]]]:
    cfg = ch.cfg
    con = duckdb.connect(str(layout(cfg).duckdb_path), read_only=True)
    published = {str(r[0]) for r in con.execute("SELECT DISTINCT ds FROM user_recommendations").fetchall()}
    con.close()
    leftovers = [str(p.relative_to(cfg.home)) for p in cfg.home.rglob("*") if ".staged-" in p.name]
    return [
        ("every night published", [d for d in ch.days if d not in published]),
        ("row accounting holds for every batch", batch_accounting(cfg)),
        ("DuckDB and Parquet agree", stores_agree(cfg)),
        ("every published number finite", finite_values(cfg)),
        ("no staged leftovers", leftovers[:5]),
        ("no forgotten id anywhere", [f"{u}: {w}" for u in ch.forgotten for w in find_user_everywhere(cfg, u)][:5]),
    ]


def plan(rng: random.Random, nights: int) -> list[list[str]]:
    """One or two faults a night; every kind once before any repeats; the first night runs clean
    (a warehouse to damage, a customer to forget); no reader beside a damaged file."""
    kinds = list(KINDS)
    rng.shuffle(kinds)
    out = [[]]
    for k in range(1, nights):
        n = 2 if len(kinds) > nights - k else 1
        take = [kinds.pop() for _ in range(min(n, len(kinds)))] or [rng.choice(KINDS)]
        if "damaged" in take and "reader" in take:
            take.remove("reader")
        out.append(take)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nights", type=int, default=7)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--home", help="data root (default: a new temporary folder)")
    args = ap.parse_args(argv)
    home = Path(args.home or tempfile.mkdtemp(prefix="recsys-chaos-")) / "var"
    end = date(2024, 6, 30)
    ch = Night(home, args.seed, args.nights, end)
    import_demo(ch.cfg, seed=args.seed, users=200, items=80, days=30, end_date=end.isoformat())
    schedule = plan(ch.rng, args.nights)
    t0 = time.perf_counter()
    print(f"chaos: {args.nights} nights, seed {args.seed}, data root {home}")
    for ds, kinds in zip(ch.days, schedule):
        print(f"night {ds}: faults {kinds or ['none']}", flush=True)
        ch.night(ds, kinds)
    print(f"\nfaults tried ({sum(map(len, schedule))}): " + ", ".join(k for ks in schedule for k in ks))
    print(f"nights: {len(ch.days)} in {time.perf_counter() - t0:.0f}s\ninvariants:")
    bad = bool(ch.failures)
    for name, problems in invariants(ch):
        print(f"  {'held ' if not problems else 'BROKEN'}  {name}" + ("" if not problems else f": {problems}"))
        bad |= bool(problems)
    for f in ch.failures:
        print(f"  BROKEN  {f}")
    print("chaos: " + ("FAILED" if bad else "every invariant held"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
