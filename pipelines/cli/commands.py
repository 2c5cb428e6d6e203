"""What each ``recsys`` command does (the Airflow and MLflow ones are in tools.py). Each command
imports the modules it needs when it runs, so the command line starts quickly."""
from __future__ import annotations

import sys
import textwrap
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

from pipelines.artifacts import latest_items, layout


def _yesterday() -> str:
    # The CLI may read the clock to pick a default; steps never do.
    return (datetime.now(timezone.utc).date() - timedelta(days=1)).isoformat()


def _print(df) -> None:
    import pandas as pd

    with pd.option_context("display.width", 200, "display.max_columns", None, "display.max_colwidth", 60):
        print(df.to_string(index=False) if len(df) else "(no rows)")


# ------------------------------------------------------------------ data in
def cmd_demo_data(args, cfg):
    if args.scale:
        from pipelines.dev.demo_scale import generate_scale

        res = generate_scale(cfg, users=args.users or 1_000_000, items=args.items or 100_000,
                             events=args.events, days=args.days or 30, end_date=args.end_date or _yesterday(),
                             seed=args.seed)
        print(res)
    else:
        from pipelines.dev.demo_data import import_demo

        res = import_demo(cfg, seed=args.seed, users=args.users or 2000, items=args.items or 400,
                          days=args.days or 90, end_date=args.end_date or _yesterday(), signals=args.signals)
        print(res.summary())
    print(f"landing zone: {layout(cfg).landing}")


def cmd_import_events(args, cfg):
    from pipelines.services.importers import import_events

    res = import_events(cfg, args.file, user_col=args.user_col, item_col=args.item_col, time_col=args.time_col,
                        time_format=args.time_format, event_type=args.event_type, event_type_col=args.event_type_col,
                        quantity_col=args.quantity_col, price_col=args.price_col, title_col=args.title_col,
                        order_col=args.order_col, session_col=args.session_col, rating_col=args.rating_col,
                        review_col=args.review_col, dwell_col=args.dwell_col, device_col=args.device_col,
                        channel_col=args.channel_col, landing_col=args.landing_col,
                        event_type_map=_pairs(args.event_type_map, "--event-type-map"), encoding=args.encoding)
    print(res.summary())


def _pairs(text: str | None, option: str) -> dict[str, str]:
    """``a=b,c=d`` as a dict; a clear error naming the option on a malformed pair."""
    out = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise SystemExit(f"{option}: {part.strip()!r} is not RAW=TYPE")
        out[key.strip()] = value.strip()
    return out


def cmd_import_online_retail(args, cfg):
    from pipelines.services.importers import import_online_retail

    print(import_online_retail(cfg, args.path).summary())


def cmd_import_catalog(args, cfg):
    from pipelines.services.importers import import_catalog

    print(import_catalog(cfg, args.path, encoding=args.encoding).summary())
    print("catalog update landed: the next run applies it to every table (or rerun: recsys run --ds D)")


def cmd_import_campaigns(args, cfg):
    from pipelines.services.campaigns import import_campaigns

    print(import_campaigns(cfg, args.path, encoding=args.encoding).summary())


def cmd_import_users(args, cfg):
    from pipelines.services.importers import import_users

    print(import_users(cfg, args.path, encoding=args.encoding).summary())


def cmd_batches(args, cfg):
    from pipelines.validation.batches import list_batches

    _print(list_batches(cfg))


def cmd_withdraw(args, cfg):
    from pipelines.infra.locks import root_lock
    from pipelines.validation.batches import withdraw

    if args.undo:
        return cmd_restore(args, cfg)
    with root_lock(cfg.home):  # the ledger is also written by a running validate step
        e = withdraw(cfg, args.batch, args.reason or "", by=args.by)
    print(f"batch {e['batch']} withdrawn by {e['withdrawn']['by']} at {e['withdrawn']['at']}: the next run leaves it "
          f"out of every partition it landed in (landing files kept; `recsys restore {e['batch']}` undoes it)")


def cmd_restore(args, cfg):
    from pipelines.infra.locks import root_lock
    from pipelines.validation.batches import restore

    with root_lock(cfg.home):
        e = restore(cfg, args.batch, by=args.by, reason=args.reason or "")
    print(f"batch {e['batch']} restored ({e['history'][-1]['action']}): the next run validates it again")


# ------------------------------------------------------------------ answers from the published tables
def _unknown_note(unknown: list[str]) -> str:
    return f"unknown items (not in the latest published catalog): {', '.join(unknown)}"


def cmd_cart_recs(args, cfg):
    from pipelines.services.serving import ServingError, cart_recs, unknown_items

    unknown = unknown_items(cfg, args.items)
    known = [i for i in args.items if str(i) not in set(unknown)]
    if not known:
        raise ServingError(_unknown_note(unknown))
    if unknown:
        print(f"recsys: note: {_unknown_note(unknown)}", file=sys.stderr)
    _print(cart_recs(cfg, args.items, n=args.n))


def cmd_session_recs(args, cfg):
    from pipelines.services.session_recs import session_recs

    recs, unknown = session_recs(cfg, args.items, n=args.n, ds=args.ds)
    if unknown:
        print(f"recsys: note: unknown items (not in the session model): {', '.join(unknown)}", file=sys.stderr)
    _print(recs)


def cmd_context_recs(args, cfg):
    from pipelines.services.context_recs import context_recs

    recs, unknown = context_recs(cfg, {"channel": args.channel, "landing_page": args.landing, "device": args.device,
                                       "country": args.country}, n=args.n)
    if unknown:
        print(f"no published list for: {', '.join(unknown)} (left out)", file=sys.stderr)
    _print(recs)


def cmd_rerank(args, cfg):
    from pipelines.services.serving import rerank, unknown_items, user_standing

    ds, has_list, has_affinity = user_standing(cfg, args.user)
    if not has_list:
        how = ("category affinity and best-seller standing" if has_affinity else "best-seller standing")
        print(f"recsys: note: user {args.user} has no published list on ds {ds}: ordered by {how}, "
              "then the search order", file=sys.stderr)
    unknown = unknown_items(cfg, args.items)
    if unknown:
        print(f"recsys: note: {_unknown_note(unknown)} (scored 0)", file=sys.stderr)
    _print(rerank(cfg, args.user, args.items))


def cmd_export(args, cfg):
    from pipelines.services.email_export import FORMATS, export_email

    out = Path(args.out)
    if out.is_dir():
        raise ValueError(f"--out {out} is a directory; give the path of the CSV file to write, e.g. "
                         f"{out / ('email.' + FORMATS[args.format])}")
    lst = export_email(cfg, args.ds, out, fmt=args.format, allow_empty=args.allow_empty)
    print(f"wrote {len(lst.recipients)} customers to {args.out} ({args.format}; left out: {lst.skipped_opted_out} "
          f"opted out of email since the run, {lst.skipped_no_address} without an email address)")


# ------------------------------------------------------------------ privacy
def cmd_consent(args, cfg):
    from pipelines.infra.consent import consent_flags
    from pipelines.services.privacy import record_consent

    to_bool = {"on": True, "off": False, None: None}
    record_consent(cfg, args.user, to_bool[args.personalization], to_bool[args.email])
    flags = consent_flags(cfg)
    row = flags[flags["user_id"] == str(args.user)].iloc[0]
    print(f"user {args.user}: personalization {'on' if row['consent_personalization'] else 'off'}, "
          f"email {'on' if row['consent_email'] else 'off'} (applies from the next run; "
          "`recsys export email` applies it at once)")


def cmd_forget(args, cfg):
    from pipelines.infra.locks import root_lock
    from pipelines.services.privacy import forget

    with root_lock(cfg.home):  # forget rewrites files a run reads: never beside a run
        audit = forget(cfg, args.user)
    if not audit["found"]:
        print(f"user {args.user} was not found anywhere under the data root"
              + (" (it was forgotten before)" if audit["already_forgotten"] else "")
              + "; it is blocked anyway: its salted hash is in the forgotten list, so no later import brings it in")
    print(f"forgot the user: request {audit['request_id']}: {audit['parquet_rows_removed']} rows in "
          f"{audit['parquet_files_rewritten']} Parquet files, {audit['warehouse_rows_removed']} warehouse rows, "
          f"{audit['matrices_rewritten']} matrices, {audit['exports_rewritten']} exports, "
          f"{audit['text_files_scrubbed']} text files; recorded in table privacy_requests")


def cmd_rebuild_warehouse(args, cfg):
    from pipelines.infra import warehouse
    from pipelines.infra.locks import root_lock

    with root_lock(cfg.home):  # never under a running night
        res = warehouse.rebuild(layout(cfg).duckdb_path, layout(cfg).parquet_root)
    print(f"rebuilt {layout(cfg).duckdb_path} from the Parquet copies: "
          + ", ".join(f"{t} {n} rows" for t, n in res["tables"].items())
          + (f"; the old file is kept as {res['kept']}" if res["kept"] else ""))


# ------------------------------------------------------------------ A/B testing
def cmd_import_outcomes(args, cfg):
    from pipelines.services.ab_report import import_outcomes

    n = import_outcomes(cfg, args.path)
    print("this file was imported before; nothing written" if n is None else f"landed {n} outcome events")


def cmd_ab(args, cfg):
    {"plan": _ab_plan, "report": _ab_report, "simulate": _ab_simulate}[args.ab_command](args, cfg)


def _ab_plan(args, cfg):
    from pipelines.services import ab
    from pipelines.services.ab_report import plan_text

    if args.baseline_rate is not None:
        plan = ab.plan_proportions(args.baseline_rate, args.mde, args.alpha, args.power, args.arms, args.daily_users)
    elif args.mean is not None and args.sd is not None:
        plan = ab.plan_means(args.mean, args.sd, args.mde, args.alpha, args.power, args.arms, args.daily_users)
    else:
        raise ValueError("ab plan: give --baseline-rate (a conversion rate) or --mean and --sd (revenue per visitor)")
    print(plan_text(plan))


def _ab_report(args, cfg):
    from pipelines.run import run_step

    res = run_step("ab_report", cfg, args.ds, args.run_id or f"cli__{args.ds}__ab")
    print(f"experiments {res['experiments']}: {res['rows']} rows in ab_results; report {res['report']}"
          + (f"; SAMPLE RATIO MISMATCH in {res['srm_flags']}" if res["srm_flags"] else ""))


def _ab_simulate(args, cfg):
    from pipelines.dev.ab_sim import simulate
    from pipelines.services import ab

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


# ------------------------------------------------------------------ the pipeline
def cmd_steps(args, cfg):
    """The step registry: what each step does and where it writes, in the order of the nightly run."""
    from pipelines.steps import OTHER_STEPS, STEPS

    def show(label: str, text: str, writes: str) -> None:
        print(textwrap.fill(text, width=100, initial_indent=f"{label:<14}", subsequent_indent=" " * 14))
        print(" " * 14 + f"writes: {writes}")

    print("The nightly run, step by step: `recsys run --ds D` runs them in this order, `--step NAME` one of\n"
          "them. Each reads what the steps before it wrote for the same ds; paths are under the data root\n"
          f"({cfg.home}).\n")
    for i, step in enumerate(STEPS.values(), 1):
        mapped = " (`--shard N`: one shard, as one mapped Airflow task runs it)" if step.mapped else ""
        show(f"{i:>2}. {step.name}", step.summary + mapped, step.writes)
    print("\nOther DAGs (`recsys ab report --ds D` runs ab_report):")
    for step in OTHER_STEPS.values():
        show(f"    {step.name}", step.summary, step.writes)
    print("\nEach step is pipelines/steps/<name>.py with a run(cfg, ds, run_id) function; the registry is\n"
          "pipelines/steps/__init__.py.")


def cmd_run(args, cfg):
    from pipelines.infra.locks import root_lock, task_lock
    from pipelines.run import check_ds, run_all, run_step

    run_id = args.run_id or f"cli__{args.ds}__{uuid.uuid4().hex[:8]}"
    if args.shard is not None and args.step != "score":
        raise ValueError("--shard goes with --step score")
    check_ds(args.ds, args.allow_future)  # before taking the lock: a refused ds never waits
    # One shard of the score step is a task, as Airflow runs it: the root lock shared and the (ds, step,
    # shard) exclusively, so that the shards of one night run at once; anything else holds the root.
    lock = task_lock(cfg.home, args.ds, args.step, args.shard) if args.shard is not None else root_lock(cfg.home)
    with lock:
        if args.step:
            print(run_step(args.step, cfg, args.ds, run_id, shard=args.shard, allow_future=args.allow_future))
            return
        results = run_all(cfg, args.ds, run_id, allow_future=args.allow_future)
    pub = results["publish"]
    print(f"run {run_id} for ds={args.ds}: champion {results['select']['champion']}, "
          f"published {pub['rows']} to {pub['duckdb']}")


def cmd_sql(args, cfg):
    """One query on a read-only connection: never blocks or is blocked by a publish (docs/tables.md)."""
    import csv

    import duckdb

    from pipelines.infra import warehouse

    con = warehouse.connect_readonly(cfg)
    try:
        try:
            if args.csv:  # streamed: every row, in batches
                cur = con.execute(args.query)
                if cur.description is None:
                    raise SystemExit("the query returned no result set (use a SELECT)")
                out = csv.writer(sys.stdout, lineterminator="\n")
                out.writerow([d[0] for d in cur.description])
                while batch := cur.fetchmany(10_000):
                    out.writerows(batch)
                return
            rel = con.sql(args.query)
            if rel is None:
                raise SystemExit("the query returned no result set (use a SELECT)")
            rel.show(max_rows=args.max_rows, max_width=200)
        except duckdb.Error as exc:
            raise SystemExit(f"SQL error: {str(exc).splitlines()[0]}") from None
    finally:
        con.close()


def cmd_show(args, cfg):
    from pipelines.infra import warehouse

    if not layout(cfg).duckdb_path.exists():
        raise SystemExit(f"no warehouse yet at {layout(cfg).duckdb_path}; run the pipeline first")
    con = warehouse.connect_readonly(cfg)
    print(f"DuckDB warehouse: {layout(cfg).duckdb_path}")
    print(f"Parquet tables:   {layout(cfg).parquet_root}/<table>/ds=<ds>/part-0.parquet")
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
