"""The ``recsys`` command line. ``recsys --help`` lists the commands."""
from __future__ import annotations

import argparse
import logging
import os
import sys
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

from pipelines.artifacts import latest_items, layout, mlflow_uri
from pipelines.config import load_config
from pipelines.constants import STEPS

log = logging.getLogger("recsys")
REPO = Path(__file__).resolve().parent.parent


def _yesterday() -> str:
    # The CLI may read the clock to pick a default; steps never do.
    return (datetime.now(timezone.utc).date() - timedelta(days=1)).isoformat()


def airflow_env(cfg) -> dict[str, str]:
    """Environment for any airflow command: AIRFLOW_HOME is the repo (committed airflow.cfg),
    everything Airflow writes goes under $RECSYS_HOME/airflow."""
    env = dict(os.environ)
    env["AIRFLOW_HOME"] = str(REPO)
    env["RECSYS_HOME"] = str(cfg.home)
    env.setdefault("AIRFLOW_CONFIG", str(REPO / "airflow.cfg"))
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    (layout(cfg).airflow_dir / "logs").mkdir(parents=True, exist_ok=True)
    # Every Airflow component (API server, scheduler, dag processor, task runners) must sign and check
    # tokens with the same keys; unset, each process invents its own and tasks die with
    # "Signature verification failed". Kept under the data root, never in the repository.
    for key, value in airflow_secrets(cfg).items():
        env.setdefault(key, value)
    return env


def airflow_secrets(cfg) -> dict[str, str]:
    import base64
    import json
    import secrets

    path = layout(cfg).airflow_dir / "secrets.json"
    if not path.exists():
        values = {"AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
                  "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
                  "AIRFLOW__CORE__FERNET_KEY": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()}
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(values))
        tmp.chmod(0o600)
        os.replace(tmp, path)
    return json.loads(path.read_text())


def cmd_demo_data(args, cfg):
    if args.scale:
        from pipelines.dev.demo_scale import generate_scale

        res = generate_scale(cfg, users=args.users or 1_000_000, items=args.items or 100_000,
                             events=args.events, days=args.days or 30, end_date=args.end_date or _yesterday(),
                             seed=args.seed)
        print(res)
    else:
        from pipelines.services.importers import import_demo

        res = import_demo(cfg, seed=args.seed, users=args.users or 2000, items=args.items or 400,
                          days=args.days or 90, end_date=args.end_date or _yesterday())
        print(res.summary())
    print(f"landing zone: {layout(cfg).landing}")


def cmd_import_events(args, cfg):
    from pipelines.services.importers import import_events

    res = import_events(cfg, args.file, user_col=args.user_col, item_col=args.item_col, time_col=args.time_col,
                        time_format=args.time_format, event_type=args.event_type, event_type_col=args.event_type_col,
                        quantity_col=args.quantity_col, price_col=args.price_col, title_col=args.title_col,
                        order_col=args.order_col, session_col=args.session_col, encoding=args.encoding)
    print(res.summary())


def cmd_import_online_retail(args, cfg):
    from pipelines.services.importers import import_online_retail

    print(import_online_retail(cfg, args.path).summary())


def cmd_import_catalog(args, cfg):
    from pipelines.services.importers import import_catalog

    print(import_catalog(cfg, args.path).summary())
    print("catalog update landed: the next run applies it to every table (or rerun: recsys run --ds D)")


def cmd_import_users(args, cfg):
    from pipelines.services.importers import import_users

    print(import_users(cfg, args.path).summary())


def _print(df) -> None:
    import pandas as pd

    with pd.option_context("display.width", 200, "display.max_columns", None, "display.max_colwidth", 60):
        print(df.to_string(index=False) if len(df) else "(no rows)")


def cmd_cart_recs(args, cfg):
    from pipelines.services.serving import cart_recs

    _print(cart_recs(cfg, args.items, n=args.n))


def cmd_rerank(args, cfg):
    from pipelines.services.serving import rerank

    _print(rerank(cfg, args.user, args.items))


def cmd_export(args, cfg):
    from pipelines.services.serving import export_email

    n = export_email(cfg, args.ds, Path(args.out))
    print(f"wrote {n} customers to {args.out}")


def cmd_consent(args, cfg):
    from pipelines.infra.consent import consent_flags, record_consent

    to_bool = {"on": True, "off": False, None: None}
    record_consent(cfg, args.user, to_bool[args.personalization], to_bool[args.email])
    flags = consent_flags(cfg)
    row = flags[flags["user_id"] == str(args.user)].iloc[0]
    print(f"user {args.user}: personalization {'on' if row['consent_personalization'] else 'off'}, "
          f"email {'on' if row['consent_email'] else 'off'} (applies from the next run; "
          "`recsys export email` applies it at once)")


def cmd_forget(args, cfg):
    from pipelines.services.privacy import forget

    audit = forget(cfg, args.user)
    print(f"forgot the user: request {audit['request_id']}: {audit['parquet_rows_removed']} rows in "
          f"{audit['parquet_files_rewritten']} Parquet files, {audit['warehouse_rows_removed']} warehouse rows, "
          f"{audit['matrices_rewritten']} matrices, {audit['exports_rewritten']} exports, "
          f"{audit['text_files_scrubbed']} text files; recorded in table privacy_requests")


def cmd_import_outcomes(args, cfg):
    from pipelines.services.ab_report import import_outcomes

    n = import_outcomes(cfg, args.path)
    print(f"landed {n} outcome events" if n else "this file was imported before; nothing written")


def cmd_ab(args, cfg):
    from pipelines.services import ab
    from pipelines.services.ab_report import ab_report, plan_text

    if args.ab_command == "plan":
        if args.baseline_rate is not None:
            plan = ab.plan_proportions(args.baseline_rate, args.mde, args.alpha, args.power, args.arms, args.daily_users)
        elif args.mean is not None and args.sd is not None:
            plan = ab.plan_means(args.mean, args.sd, args.mde, args.alpha, args.power, args.arms, args.daily_users)
        else:
            raise ValueError("ab plan: give --baseline-rate (a conversion rate) or --mean and --sd (revenue per visitor)")
        print(plan_text(plan))
    elif args.ab_command == "report":
        res = ab_report(cfg, args.ds, args.run_id or f"cli__{args.ds}__ab")
        print(f"experiments {res['experiments']}: {res['rows']} rows in ab_results; report {res['report']}"
              + (f"; SAMPLE RATIO MISMATCH in {res['srm_flags']}" if res["srm_flags"] else ""))
    elif args.ab_command == "simulate":
        from pipelines.dev.ab_sim import simulate

        exp = {e.id: e for e in ab.load_experiments(cfg).experiments}.get(args.experiment)
        if exp is None:
            raise ValueError(f"ab simulate: no experiment {args.experiment!r} in the experiments file")
        # The true lift goes to every arm that gets lists; "none" arms (holdouts) keep the control's rates.
        treated = [v.name for v in exp.variants if v.name != exp.control_variant and v.lists != "none"]

        items = latest_items(cfg, ["item_id"])
        catalog = None if items is None else items["item_id"].to_numpy(object)
        _, events = simulate(exp, args.users, args.seed, lift={v: args.lift for v in treated}, days=args.days,
                             items=catalog)
        events.to_csv(args.out, index=False)
        print(f"wrote {len(events)} simulated outcome events for {args.users} users (true lift {args.lift:+.1%}) "
              f"to {args.out}")


def cmd_run(args, cfg):
    from pipelines.run import run_all, run_step

    run_id = args.run_id or f"cli__{args.ds}__{uuid.uuid4().hex[:8]}"
    if args.shard is not None and args.step != "score":
        raise SystemExit("recsys run: --shard goes with --step score")
    if args.step:
        print(run_step(args.step, cfg, args.ds, run_id, shard=args.shard))
        return
    results = run_all(cfg, args.ds, run_id)
    pub = results["publish"]
    print(f"run {run_id} for ds={args.ds}: champion {results['select']['champion']}, "
          f"published {pub['rows']} to {pub['duckdb']}")


def cmd_show(args, cfg):
    from pipelines.infra import warehouse

    if not layout(cfg).duckdb_path.exists():
        raise SystemExit(f"no warehouse yet at {layout(cfg).duckdb_path}; run the pipeline first")
    con = warehouse.connect_warehouse(layout(cfg).duckdb_path, read_only=True)
    print(f"DuckDB warehouse: {layout(cfg).duckdb_path}")
    print(f"Parquet tables:   {layout(cfg).warehouse / 'parquet'}/<table>/ds=<ds>/part-0.parquet")
    tables = [r[0] for r in con.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE' AND table_name IN "
        "(SELECT table_name FROM information_schema.columns WHERE column_name = 'ds') ORDER BY 1").fetchall()]
    print(con.sql(" UNION ALL ".join(
        f"SELECT '{t}' AS table_name, max(ds) AS latest_ds, count(DISTINCT ds) AS dates, count(*) AS rows FROM \"{t}\""
        for t in tables) + " ORDER BY 1"))
    print("Holdout evaluation of the latest run (the champion is the best NDCG@10):")
    print(con.sql("SELECT model, max(value) FILTER (metric = 'ndcg_at_10') AS ndcg_at_10, "
                  "max(value) FILTER (metric = 'recall_at_10') AS recall_at_10, "
                  "max(value) FILTER (metric = 'precision_at_10') AS precision_at_10, "
                  "max(value) FILTER (metric = 'coverage_at_10') AS coverage_at_10 "
                  "FROM latest_model_runs WHERE protocol = 'holdout' AND segment = 'returning' "
                  "GROUP BY model ORDER BY ndcg_at_10 DESC"))
    print("Sample: 'for you' list of one user")
    print(con.sql("SELECT user_id, surface, rank, item_id, score, model FROM latest_user_recommendations "
                  "WHERE surface = 'for_you' AND user_id = (SELECT min(user_id) FROM latest_user_recommendations) "
                  f"ORDER BY rank LIMIT {int(args.rows)}"))
    print("Sample: similar items of one product")
    print(con.sql("SELECT item_id, rank, similar_item_id, score, model FROM latest_similar_items "
                  "WHERE item_id = (SELECT min(item_id) FROM latest_similar_items) "
                  f"ORDER BY rank LIMIT {int(args.rows)}"))
    con.close()


def cmd_airflow(args, cfg):
    env = airflow_env(cfg)
    exe = str(Path(sys.executable).parent / "airflow")
    os.execvpe(exe, [exe, *args.airflow_args], env)


def cmd_airflow_test(args, cfg):
    """`airflow dags test` for one ds, with its log under the data root, short progress lines on the
    terminal, and an exit status that reflects the DAG run's final state."""
    import re
    import subprocess

    env = airflow_env(cfg)
    env["RECSYS_TASK_RETRIES"] = "0"
    exe = str(Path(sys.executable).parent / "airflow")
    log_path = layout(cfg).airflow_dir / f"dags-test-{args.ds}.log"
    print(f"airflow dags test recsys_nightly {args.ds} (full log: {log_path})", flush=True)
    state = None
    with open(log_path, "w", encoding="utf-8") as logf:
        proc = subprocess.Popen([exe, "dags", "test", "recsys_nightly", args.ds], env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for line in proc.stdout:
            logf.write(line)
            if m := re.search(r"\[DAG TEST\] running task <TaskInstance: recsys_nightly\.(\w+)", line):
                print(f"  task {m.group(1)} ...", flush=True)
            if m := re.search(r"DagRun Finished: .*?state=(\w+)", line):
                state = m.group(1)
        rc = proc.wait()
    print(f"DAG run state: {state} (airflow exit code {rc})")
    if rc != 0 or state != "success":
        errors = [l.strip() for l in log_path.read_text(encoding="utf-8").splitlines()
                  if re.search(r"\b\w*(Error|Exception)\b: ", l)]
        for line in dict.fromkeys(errors[-5:]):
            print(f"  {line[:400]}", file=sys.stderr)
        raise RuntimeError(f"recsys_nightly for ds={args.ds} did not succeed (state {state}); see {log_path}")


def cmd_mlflow_ui(args, cfg):
    layout(cfg).mlflow_dir.mkdir(parents=True, exist_ok=True)
    exe = str(Path(sys.executable).parent / "mlflow")
    os.execvp(exe, [exe, "ui", "--backend-store-uri", mlflow_uri(cfg), "--default-artifact-root",
                    (layout(cfg).mlflow_dir / "artifacts").as_uri(), "--host", "127.0.0.1", "--port", str(args.port)])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="recsys", description="Nightly batch recommendations for retailers. "
                                "Data root: $RECSYS_HOME (default ./var).")
    p.add_argument("--home", help="data root (overrides RECSYS_HOME)")
    p.add_argument("-q", "--quiet", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo-data", help="generate deterministic demo data into the landing zone")
    d.add_argument("--seed", type=int, default=42)
    d.add_argument("--users", type=int, help="default 2000 (1,000,000 with --scale)")
    d.add_argument("--items", type=int, help="default 400 (100,000 with --scale)")
    d.add_argument("--days", type=int, help="default 90 (30 with --scale)")
    d.add_argument("--scale", action="store_true",
                   help="the scale data set: power-law users and items, generated day by day (pipelines/demo_scale.py)")
    d.add_argument("--events", type=int, default=10_000_000, help="with --scale: events in all (default 10,000,000)")
    d.add_argument("--end-date", help="last day of data, YYYY-MM-DD (default: yesterday, UTC)")
    d.set_defaults(func=cmd_demo_data)

    e = sub.add_parser("import-events", help="land a CSV or Parquet file of events")
    e.add_argument("file")
    e.add_argument("--user-col", required=True)
    e.add_argument("--item-col", required=True)
    e.add_argument("--time-col", required=True)
    e.add_argument("--time-format", help="strftime format of the time column (default: inferred)")
    g = e.add_mutually_exclusive_group(required=True)
    g.add_argument("--event-type", help="one event type for every row: view, add_to_cart, purchase, return")
    g.add_argument("--event-type-col")
    for c in ("quantity", "price", "title", "order", "session"):
        e.add_argument(f"--{c}-col")
    e.add_argument("--encoding", default="utf-8", help="text encoding of a CSV file (default utf-8)")
    e.set_defaults(func=cmd_import_events)

    o = sub.add_parser("import-online-retail", help="land the UCI Online Retail file (xlsx, csv or parquet)")
    o.add_argument("path")
    o.set_defaults(func=cmd_import_online_retail)

    c = sub.add_parser("import-catalog", help="land a catalog update: item_id plus in_stock, active, margin, "
                       "promotion, repeatable, price, title, ... (CSV or Parquet)")
    c.add_argument("path")
    c.set_defaults(func=cmd_import_catalog)

    u = sub.add_parser("import-users", help="land a users file: user_id plus country, consent_personalization, "
                       "consent_email, interests, signup_date (CSV or Parquet)")
    u.add_argument("path")
    u.set_defaults(func=cmd_import_users)

    cr = sub.add_parser("cart-recs", help="the best additions to a cart, from the published pair table")
    cr.add_argument("items", nargs="+", metavar="ITEM")
    cr.add_argument("-n", type=int, default=10)
    cr.set_defaults(func=cmd_cart_recs)

    rr = sub.add_parser("rerank", help="order search results (item ids) for a user")
    rr.add_argument("user", metavar="USER")
    rr.add_argument("items", nargs="+", metavar="ITEM")
    rr.set_defaults(func=cmd_rerank)

    ex = sub.add_parser("export", help="write a list marketing pulls: `export email --ds D --out FILE.csv`")
    ex.add_argument("what", choices=["email"])
    ex.add_argument("--ds", required=True)
    ex.add_argument("--out", required=True)
    ex.set_defaults(func=cmd_export)

    co = sub.add_parser("consent", help="record a user's consent: --personalization on|off --email on|off")
    co.add_argument("user", metavar="USER")
    co.add_argument("--personalization", choices=["on", "off"])
    co.add_argument("--email", choices=["on", "off"])
    co.set_defaults(func=cmd_consent)

    fg = sub.add_parser("forget", help="remove a user from every zone, table, Parquet file and export")
    fg.add_argument("user", metavar="USER")
    fg.set_defaults(func=cmd_forget)

    io_ = sub.add_parser("import-outcomes", help="land outcome events (impression, click, add_to_cart, purchase)")
    io_.add_argument("path")
    io_.set_defaults(func=cmd_import_outcomes)

    ab = sub.add_parser("ab", help="A/B testing: plan (power analysis), report, simulate (docs/ab-testing.md)")
    abs_ = ab.add_subparsers(dest="ab_command", required=True)
    pl = abs_.add_parser("plan", help="users per arm and days for the smallest lift worth detecting")
    pl.add_argument("--baseline-rate", type=float, help="conversion rate of control, e.g. 0.02")
    pl.add_argument("--mean", type=float, help="mean of a continuous metric (revenue per visitor)")
    pl.add_argument("--sd", type=float, help="its standard deviation per visitor")
    pl.add_argument("--mde", type=float, required=True, help="smallest relative lift worth detecting, e.g. 0.05")
    pl.add_argument("--alpha", type=float, default=0.05)
    pl.add_argument("--power", type=float, default=0.8)
    pl.add_argument("--arms", type=int, default=2)
    pl.add_argument("--daily-users", type=int)
    rp = abs_.add_parser("report", help="compute ab_results and the report for one ds (what recsys_ab_report runs)")
    rp.add_argument("--ds", required=True)
    rp.add_argument("--run-id")
    sm = abs_.add_parser("simulate", help="write simulated outcome events with a known true lift (CSV)")
    sm.add_argument("--experiment", required=True)
    sm.add_argument("--users", type=int, default=20000)
    sm.add_argument("--lift", type=float, default=0.05)
    sm.add_argument("--days", type=int, default=14)
    sm.add_argument("--seed", type=int, default=0)
    sm.add_argument("--out", required=True)
    ab.set_defaults(func=cmd_ab)

    r = sub.add_parser("run", help="run the nightly steps in-process for one ds")
    r.add_argument("--ds", required=True, help="logical date YYYY-MM-DD: uses events up to the end of that day (UTC)")
    r.add_argument("--run-id")
    r.add_argument("--step", choices=STEPS,
                   help="run one step only")
    r.add_argument("--shard", type=int,
                   help="with --step score: that user shard only (0 .. RECSYS_PUBLISH_SHARDS - 1), as one mapped "
                        "Airflow task runs it")
    r.set_defaults(func=cmd_run)

    s = sub.add_parser("show", help="print where the tables are and sample rows")
    s.add_argument("--rows", type=int, default=5)
    s.set_defaults(func=cmd_show)

    a = sub.add_parser("airflow", help="run an airflow command with this project's configuration")
    a.add_argument("airflow_args", nargs=argparse.REMAINDER)
    a.set_defaults(func=cmd_airflow)

    t = sub.add_parser("airflow-test", help="run recsys_nightly once through Airflow (airflow dags test)")
    t.add_argument("--ds", required=True)
    t.set_defaults(func=cmd_airflow_test)

    m = sub.add_parser("mlflow-ui", help="the MLflow UI on the pipeline's tracking store")
    m.add_argument("--port", type=int, default=5000)
    m.set_defaults(func=cmd_mlflow_ui)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    cfg = load_config(home=args.home or os.environ.get("RECSYS_HOME") or "var")
    try:
        args.func(args, cfg)
    except (ValueError, FileNotFoundError, FileExistsError, RuntimeError) as exc:
        print(f"recsys: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
