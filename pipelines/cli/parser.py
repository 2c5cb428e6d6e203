"""The commands of ``recsys`` and their options, one function per group of commands (in the order
``recsys --help`` lists them)."""
from __future__ import annotations

import argparse
from datetime import date

import pipelines.cli.commands as cmd
from pipelines import constants as C
from pipelines.cli.tools import cmd_airflow, cmd_airflow_test, cmd_mlflow_ui
from pipelines.steps import STEPS


def ds_arg(text: str) -> str:
    """A logical date, checked when the command line is read (one clear line, exit code 2)."""
    try:
        return date.fromisoformat(text).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date YYYY-MM-DD: {text!r}") from None


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


class OneLineParser(argparse.ArgumentParser):
    """A usage error is one line (which command, which argument, what is wrong) and exit code 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="recsys", description="Nightly batch recommendations for retailers. "
                                "Data root: $RECSYS_HOME (default ./var).")
    p.add_argument("--home", help="data root (overrides RECSYS_HOME)")
    p.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only (default: progress lines too)")
    p.add_argument("--debug", action="store_true", help="print the full traceback of an error (also RECSYS_DEBUG=1)")
    sub = p.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    for add in (_data_commands, _serving_commands, _privacy_commands, _ab_commands, _pipeline_commands,
                _tool_commands):
        add(sub)
    return p


def _data_commands(sub) -> None:
    d = sub.add_parser("demo-data", help="generate deterministic demo data into the landing zone")
    d.add_argument("--seed", type=int, default=42, help="random seed; the same seed gives the same data (default 42)")
    d.add_argument("--users", type=positive_int, help="default 2000 (1,000,000 with --scale)")
    d.add_argument("--items", type=positive_int, help="default 400 (100,000 with --scale)")
    d.add_argument("--days", type=positive_int, help="default 90 (30 with --scale)")
    d.add_argument("--scale", action="store_true",
                   help="the scale data set: power-law users and items, generated day by day (pipelines/dev/demo_scale.py)")
    d.add_argument("--events", type=positive_int, default=10_000_000, help="with --scale: events in all (default 10,000,000)")
    d.add_argument("--end-date", type=ds_arg, help="last day of data, YYYY-MM-DD (default: yesterday, UTC)")
    d.add_argument("--no-signals", dest="signals", action="store_false",
                   help="without the wider signals (ratings, reviews, wishlists, dwell times, device, channel, "
                        "landing page: pipelines/dev/demo_signals.py); not used with --scale")
    d.set_defaults(func=cmd.cmd_demo_data)

    _import_events_command(sub)

    o = sub.add_parser("import-online-retail", help="land the UCI Online Retail file (xlsx, csv or parquet)")
    o.add_argument("path", metavar="PATH", help="path of the Online Retail file (.xlsx, .csv or .parquet)")
    o.set_defaults(func=cmd.cmd_import_online_retail)

    c = sub.add_parser("import-catalog", help="land a catalog update: item_id plus in_stock, active, margin, "
                       "promotion, repeatable, price, title, ... (CSV or Parquet)")
    c.add_argument("path", metavar="PATH", help="path of the catalog file (.csv or .parquet), one row per item_id")
    c.add_argument("--encoding", default="utf-8", help="text encoding of a CSV file (default utf-8)")
    c.set_defaults(func=cmd.cmd_import_catalog)

    u = sub.add_parser("import-users", help="land a users file: user_id plus country, consent_personalization, "
                       "consent_email, interests, signup_date; contact fields email, first_name, locale for the email export "
                       "(CSV or Parquet)")
    u.add_argument("path", metavar="PATH", help="path of the users file (.csv or .parquet), one row per user_id")
    u.add_argument("--encoding", default="utf-8", help="text encoding of a CSV file (default utf-8)")
    u.set_defaults(func=cmd.cmd_import_users)

    ic = sub.add_parser("import-campaigns", help="land homepage banner campaigns: banner_id, start_date, end_date, "
                        "target_categories, target_brands, countries (CSV or Parquet)")
    ic.add_argument("path", metavar="PATH", help="path of the campaigns file (.csv or .parquet), one row per banner_id; "
                    "lists as Parquet lists or text separated by ';' (empty: any)")
    ic.add_argument("--encoding", default="utf-8", help="text encoding of a CSV file (default utf-8)")
    ic.set_defaults(func=cmd.cmd_import_campaigns)

    b = sub.add_parser("batches", help="list landed import batches: rows landed, valid, quarantined, status "
                       "(pending, validated, failed, withdrawn), event dates")
    b.set_defaults(func=cmd.cmd_batches)
    w = sub.add_parser("withdraw", help="exclude an import batch from every later run (kept in landing/; "
                       "--undo or `recsys restore` brings it back)")
    w.add_argument("batch", metavar="BATCH", help="batch id (or a unique prefix), from `recsys batches`")
    w.add_argument("--reason", help="why (required to withdraw; kept in the ledger)")
    w.add_argument("--by", help="who (default: the login name)")
    w.add_argument("--undo", action="store_true", help="restore the batch instead")
    w.set_defaults(func=cmd.cmd_withdraw)
    r = sub.add_parser("restore", help="undo `recsys withdraw BATCH`, or have a failed batch judged again")
    r.add_argument("batch", metavar="BATCH", help="batch id (or a unique prefix), from `recsys batches`")
    r.add_argument("--reason", default="", help="why (kept in the ledger; default empty)")
    r.add_argument("--by", help="who (default: the login name)")
    r.set_defaults(func=cmd.cmd_restore)


def _import_events_command(sub) -> None:
    e = sub.add_parser("import-events", help="land a CSV or Parquet file of events")
    e.add_argument("file", metavar="FILE", help="path of the events file (.csv or .parquet)")
    e.add_argument("--user-col", required=True, help="name of the user id column (required)")
    e.add_argument("--item-col", required=True, help="name of the item id column (required)")
    e.add_argument("--time-col", required=True, help="name of the event time column (required; see --time-format)")
    e.add_argument("--time-format", help="epoch_s or epoch_ms (Unix seconds or milliseconds), or a strftime format "
                   "of the time column (default: any ISO 8601 form per row; epochs detected when every value is "
                   "a number in one epoch range)")
    g = e.add_mutually_exclusive_group(required=True)
    types = ", ".join(C.EVENT_TYPES)
    g.add_argument("--event-type", help=f"one event type for every row: {types}")
    g.add_argument("--event-type-col", help=f"name of the column holding each row's event type ({types}, or raw "
                   "values renamed by --event-type-map); one of this or --event-type is required")
    e.add_argument("--event-type-map", metavar="RAW=TYPE[,RAW=TYPE...]",
                   help="rename raw event type values, e.g. fav=add_to_wishlist,stars=rating,comment=review")
    for c, what in (("quantity", "units per row (default 1 per row)"), ("price", "unit price (default: none)"),
                    ("title", "item title (default: none)"),
                    ("order", "order id grouping one basket (default: none)"),
                    ("session", "session id (default: none)"),
                    ("rating", "1-5 star rating of rating and review events (default: none)"),
                    ("review", "review text of review events (default: none)"),
                    ("dwell", "seconds spent on the page, for views (default: none)"),
                    ("device", "device: mobile, desktop, app, ... (default: none)"),
                    ("channel", "referral channel: search, social, email, direct, paid (default: none)"),
                    ("landing", "landing page type or category (default: none)")):
        e.add_argument(f"--{c}-col", help=f"name of the column with the {what}")
    e.add_argument("--encoding", default="utf-8", help="text encoding of a CSV file (default utf-8)")
    e.set_defaults(func=cmd.cmd_import_events)


def _serving_commands(sub) -> None:
    cr = sub.add_parser("cart-recs", help="the best additions to a cart, from the published pair table")
    cr.add_argument("items", nargs="+", metavar="ITEM",
                    help="item ids in the cart (one or more); ids not in the latest published catalog are named "
                         "on stderr, and if none is known the command fails (exit code 2)")
    cr.add_argument("-n", type=positive_int, default=10, help="how many items (default 10)")
    cr.set_defaults(func=cmd.cmd_cart_recs)

    sr = sub.add_parser("session-recs", help="the next items for an anonymous visitor's session so far, from the "
                                             "night's session model")
    sr.add_argument("items", nargs="+", metavar="ITEM",
                    help="item ids of the session, most recent last; ids the model does not know are named on "
                         "stderr, and if none is known the command fails (exit code 2)")
    sr.add_argument("-n", "--n", type=positive_int, default=10, help="how many items (default 10)")
    sr.add_argument("--ds", type=ds_arg, help="the published night whose model answers, YYYY-MM-DD (default: the "
                                              "newest published)")
    sr.set_defaults(func=cmd.cmd_session_recs)

    cx = sub.add_parser("context-recs", help="items for a visitor without history, from the visit's context "
                        "(published context_defaults)")
    cx.add_argument("--channel", help="referral channel, e.g. search, social, email, direct, paid")
    cx.add_argument("--landing", help="landing page type or category, e.g. garden, home, search")
    cx.add_argument("--device", help="device, e.g. mobile, desktop, app")
    cx.add_argument("--country", help="the visitor's country, as in the users file")
    cx.add_argument("-n", "--n", type=positive_int, default=10, help="how many items (default 10)")
    cx.set_defaults(func=cmd.cmd_context_recs)

    rr = sub.add_parser("rerank", help="order search results (item ids) for a user")
    rr.add_argument("user", metavar="USER", help="user id; a user without a published list on the latest ds gets "
                    "the best-seller order (said on stderr)")
    rr.add_argument("items", nargs="+", metavar="ITEM",
                    help="the search results' item ids, in the search engine's order (one or more); unknown ids are "
                         "named on stderr and score 0")
    rr.set_defaults(func=cmd.cmd_rerank)

    ex = sub.add_parser("export", help="write a list marketing pulls: `export email --ds D --out FILE.csv`")
    ex.add_argument("what", choices=["email"], help="which list: email (the post-purchase email list: one record per "
                    "customer with email consent and an address; docs/privacy.md)")
    ex.add_argument("--ds", type=ds_arg, required=True, help="logical date of the published night, YYYY-MM-DD (required)")
    ex.add_argument("--out", required=True, help="path of the file to write (required; replaced if it exists)")
    ex.add_argument("--format", choices=["csv", "klaviyo", "braze", "json"], default="csv",
                    help="csv (flat, default), klaviyo (JSON Lines of Klaviyo profiles), braze (a /users/track body), "
                         "json (JSON Lines, one object per recipient)")
    ex.add_argument("--allow-empty", action="store_true", help="write an empty file for a ds with no published run "
                    "or no recipient (default: refuse with exit code 2)")
    ex.set_defaults(func=cmd.cmd_export)


def _privacy_commands(sub) -> None:
    co = sub.add_parser("consent", help="record a user's consent: --personalization on|off --email on|off")
    co.add_argument("user", metavar="USER", help="user id")
    co.add_argument("--personalization", choices=["on", "off"],
                    help="personal lists for this user: on or off (default: left as it is)")
    co.add_argument("--email", choices=["on", "off"], help="marketing email for this user: on or off "
                    "(default: left as it is)")
    co.set_defaults(func=cmd.cmd_consent)

    fg = sub.add_parser("forget", help="remove a user from every zone, table, Parquet file and export")
    fg.add_argument("user", metavar="USER", help="user id to remove")
    fg.set_defaults(func=cmd.cmd_forget)

    rw = sub.add_parser("rebuild-warehouse", help="rebuild warehouse/recsys.duckdb from the Parquet copies (a damaged "
                        "file is kept aside as recsys.duckdb.damaged-<time>)")
    rw.set_defaults(func=cmd.cmd_rebuild_warehouse)


def _ab_commands(sub) -> None:
    io_ = sub.add_parser("import-outcomes", help="land outcome events (impression, click, add_to_cart, purchase)")
    io_.add_argument("path", metavar="PATH", help="path of the outcomes file (.csv or .parquet): user_id, "
                     "event_type, event_time, optional recommendation_id, item_id, revenue, experiment_id")
    io_.set_defaults(func=cmd.cmd_import_outcomes)

    ab = sub.add_parser("ab", help="A/B testing: plan (power analysis), report, simulate (docs/ab-testing.md)")
    abs_ = ab.add_subparsers(dest="ab_command", required=True)
    pl = abs_.add_parser("plan", help="users per arm and days for the smallest lift worth detecting")
    pl.add_argument("--baseline-rate", type=float, help="conversion rate of control, e.g. 0.02")
    pl.add_argument("--mean", type=float, help="mean of a continuous metric (revenue per visitor)")
    pl.add_argument("--sd", type=float, help="its standard deviation per visitor")
    pl.add_argument("--mde", type=float, required=True, help="smallest relative lift worth detecting, e.g. 0.05")
    pl.add_argument("--alpha", type=float, default=0.05, help="significance level, two-sided (default 0.05)")
    pl.add_argument("--power", type=float, default=0.8, help="chance of detecting the --mde lift (default 0.8)")
    pl.add_argument("--arms", type=int, default=2, help="number of arms, control included (default 2)")
    pl.add_argument("--daily-users", type=int, help="users entering the experiment per day, all arms together; "
                    "gives the days needed (default: days not computed)")
    rp = abs_.add_parser("report", help="compute ab_results and the report for one ds (what recsys_ab_report runs)")
    rp.add_argument("--ds", type=ds_arg, required=True, help="logical date to report on, YYYY-MM-DD (required)")
    rp.add_argument("--run-id", help="run id recorded with the results (default cli__<ds>__ab)")
    sm = abs_.add_parser("simulate", help="write simulated outcome events with a known true lift (CSV)")
    sm.add_argument("--experiment", required=True, help="experiment id from the experiments file (required)")
    sm.add_argument("--users", type=positive_int, default=20000, help="simulated users, all arms (default 20000)")
    sm.add_argument("--lift", type=float, default=0.05,
                    help="true relative lift of every treated arm, e.g. 0.05 for +5%% (default 0.05)")
    sm.add_argument("--days", type=positive_int, default=14, help="days of outcome events (default 14)")
    sm.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    sm.add_argument("--out", required=True, help="path of the CSV file to write (required)")
    ab.set_defaults(func=cmd.cmd_ab)


def _pipeline_commands(sub) -> None:
    st = sub.add_parser("steps", help="list the steps of the nightly run: what each does and where it writes")
    st.set_defaults(func=cmd.cmd_steps)

    r = sub.add_parser("run", help="run the nightly steps in-process for one ds")
    r.add_argument("--ds", type=ds_arg, required=True, help="logical date YYYY-MM-DD: uses events up to the end of that day (UTC)")
    r.add_argument("--run-id", help="id of this run, kept with every output (default cli__<ds>__<random 8 hex>)")
    r.add_argument("--step", choices=tuple(STEPS),
                   help="run one step only (default: every step, in order; see `recsys steps`)")
    r.add_argument("--allow-future", action="store_true",
                   help="build a ds after today (UTC) on purpose (refused by default: it would become the newest night)")
    r.add_argument("--shard", type=int,
                   help="with --step score: that user shard only (0 .. RECSYS_PUBLISH_SHARDS - 1), as one mapped "
                        "Airflow task runs it")
    r.set_defaults(func=cmd.cmd_run)

    s = sub.add_parser("show", help="print where the tables are and sample rows")
    s.add_argument("--rows", type=positive_int, default=5, help="sample rows per table (default 5)")
    s.set_defaults(func=cmd.cmd_show)

    q = sub.add_parser("sql", help="run one SQL query on the warehouse (read-only) and print the result, e.g. "
                       "`recsys sql \"SELECT * FROM v_user_recommendations WHERE user_id = '12347'\"`")
    q.add_argument("query", metavar="QUERY", help="a SELECT (or DESCRIBE, SHOW TABLES, ...); the tables and views "
                   "are in docs/tables.md")
    q.add_argument("--csv", action="store_true", help="print CSV (a header and every row) instead of a table")
    q.add_argument("--max-rows", type=positive_int, default=40,
                   help="rows shown in table form (default 40; --csv prints every row)")
    q.set_defaults(func=cmd.cmd_sql)


def _tool_commands(sub) -> None:
    a = sub.add_parser("airflow", help="run an airflow command with this project's configuration")
    a.add_argument("airflow_args", nargs=argparse.REMAINDER, metavar="ARG",
                   help="the airflow command and its arguments, passed as they are, e.g. dags list")
    a.set_defaults(func=cmd_airflow)

    t = sub.add_parser("airflow-test", help="run recsys_nightly once through Airflow (dag.test(), no scheduler)")
    t.add_argument("--ds", type=ds_arg, required=True, help="logical date of the DAG run, YYYY-MM-DD (required)")
    t.set_defaults(func=cmd_airflow_test)

    m = sub.add_parser("mlflow-ui", help="the MLflow UI on the pipeline's tracking store")
    m.add_argument("--port", type=int, default=5000, help="TCP port on 127.0.0.1 (default 5000)")
    m.set_defaults(func=cmd_mlflow_ui)
