"""The warehouse's schema in one place: every table's and view's columns, types and descriptions.

``TABLES`` and ``VIEWS`` are the single source of the column tables of docs/tables.md (regenerate
them with ``python -m pipelines.infra.warehouse_schema``; tests/pipelines/test_warehouse_schema.py
compares the doc, this module and a real warehouse column by column) and of the DuckDB comments
(``COMMENT ON``, written by every warehouse transaction: pipelines/infra/warehouse_ddl.py). A Python
module rather than the doc itself, because the package is installed without docs/ in production
(docs/deploy.md).
"""
from __future__ import annotations

import re
from pathlib import Path

from pipelines.infra.warehouse_schema_web import WEB_TABLES

# The nightly's tables: written together by the publish step, one published_runs row each per ds.
NIGHTLY_TABLES = ("user_recommendations", "similar_items", "model_runs", "frequently_bought_together",
                  "complete_the_look", "cart_cross_sell", "trending", "best_sellers", "post_purchase_email",
                  "user_category_affinity", "ab_assignments", "items", "session_next_items", "context_defaults",
                  "homepage")
# Tables written by other writers, with a latest_ view over their own newest ds (not in the future).
OWN_LATEST_TABLES = ("ab_results",)
PUBLISHED_RUNS = "published_runs"

_RUN = [("ds", "DATE", "logical date of the run"),
        ("run_id", "VARCHAR", "Airflow run id (or `cli__...` for `recsys run`)")]
_PAIR = [("pair_count", "BIGINT", "baskets holding both (n_ab)"),
         ("support", "DOUBLE", "n_ab / N, N = baskets in the window"),
         ("confidence", "DOUBLE", "n_ab / n_a: share of the anchor's baskets that hold the other item"),
         ("lift", "DOUBLE", "n_ab x N / (n_a x n_b): how much more often than chance; symmetric, as are "
                            "`pair_count` and `support`")]
_SURFACE = ("`for_you`: homepage \"for you\", repeats of repeatable items allowed; `new_for_you`: only items the "
            "user never interacted with (discovery, email); `buy_again`: the user's own repeatable purchases "
            "(no backfill: a user without one has no rows)")
VALIDATION = [
    ("ds", "DATE", "the ds of the validation run"),
    ("run_id", "VARCHAR", "the run that validated"),
    ("dataset", "VARCHAR", "`items`, `users`, `events`, or `withdrawn_batch` (one row per withdrawn batch: who, "
                           "when and why in `message`)"),
    ("rows_in", "BIGINT", "rows read"),
    ("rows_valid", "BIGINT", "rows that passed every rule"),
    ("rows_quarantined", "BIGINT", "rows set aside (rows_in = rows_valid + rows_quarantined)"),
    ("success", "BOOLEAN", "false when a rule failed the run (every dataset of a failed run)"),
    ("partitions", "INTEGER", "landing partitions validated"),
    ("rule_counts", "MAP(VARCHAR, BIGINT)", "rows per rule that fired, e.g. `rule_counts['duplicate_event']`"),
    ("warnings", "VARCHAR", "warnings, one a line"),
    ("message", "VARCHAR", "the errors (or the failure) of the run, one a line"),
    ("data_docs", "VARCHAR", "the run's HTML report (a file URI)"),
    ("validated_at", "TIMESTAMP WITH TIME ZONE", "when the run was recorded (NULL for runs of older releases)"),
]

# table -> (description, [(column, type, description)])
TABLES: dict[str, tuple[str, list[tuple[str, str, str]]]] = {
    "user_recommendations": ("Personal lists: one row per (ds, surface, user_id, rank).", [
        ("recommendation_id", "VARCHAR", "a stable id per row, to send back with impressions, clicks and purchases"),
        *_RUN,
        ("surface", "VARCHAR", _SURFACE),
        ("user_id", "VARCHAR", "every user with a valid event up to `ds`, and registered users with stated interests"),
        ("rank", "INTEGER", "1 = best; `top_n` (20) rows per user on `for_you` and `new_for_you`, never fewer than "
                            "`min_items`"),
        ("item_id", "VARCHAR", "never an inactive or out-of-stock item, never an already-bought non-repeatable one"),
        ("score", "FLOAT", "re-ranking utility: 1 / log2(position + 1) x the margin and promotion boosts (0 for "
                           "slots filled after the head: new items, discovery, backfill)"),
        ("model", "VARCHAR", "the list the row came from: `hybrid`, the champion's name, `buy_again`, "
                             "`content_interests`, `popular_in_country` or `popularity` (fallbacks), "
                             "`content_new_item`, `discovery`, `pinned`"),
        ("reason", "VARCHAR", "a short text for the customer: \"picked for you\", \"you buy this regularly\", "
                              "\"popular in France\", \"best seller\", \"new arrival\", ..."),
        ("experiment_id", "VARCHAR", "the A/B experiment the user's list belongs to (NULL outside experiments)"),
        ("variant", "VARCHAR", "the experiment's arm (NULL outside experiments)"),
    ]),
    "similar_items": ("Product page \"similar items\": one row per (ds, item_id, rank).", [
        *_RUN,
        ("item_id", "VARCHAR", "an available catalog item"),
        ("rank", "INTEGER", "1..20"),
        ("similar_item_id", "VARCHAR", "an available item other than `item_id`"),
        ("score", "FLOAT", "the blended score"),
        ("content_score", "FLOAT", "the content cosine (0 where the content model does not list the pair)"),
        ("itemknn_score", "FLOAT", "the scaled item-kNN similarity (0 where item-kNN does not list the pair)"),
        ("model", "VARCHAR", "`content+itemknn`, `content` or `itemknn`: which signals found the pair"),
    ]),
    "frequently_bought_together": ("Pairs bought in the same basket: one row per (ds, item_id, rank).", [
        *_RUN,
        ("item_id", "VARCHAR", "the anchor (product page) item"),
        ("rank", "INTEGER", "1 = best"),
        ("other_item_id", "VARCHAR", "the item bought with it"),
        *_PAIR,
        ("reason", "VARCHAR", "\"bought together with <item_id>\""),
    ]),
    "complete_the_look": ("Bought-together pairs across categories: one row per (ds, item_id, rank).", [
        *_RUN,
        ("item_id", "VARCHAR", "the anchor (product page) item"),
        ("rank", "INTEGER", "1 = best"),
        ("other_item_id", "VARCHAR", "the complementary item"),
        *_PAIR,
        ("category", "VARCHAR", "the anchor's category (or a derived `~<term>_<k>`)"),
        ("other_category", "VARCHAR", "the other item's category"),
        ("reason", "VARCHAR", "\"bought together with <item_id>\""),
    ]),
    "cart_cross_sell": ("Additions for a cart holding item_id: one row per (ds, item_id, rank).", [
        *_RUN,
        ("item_id", "VARCHAR", "the cart item"),
        ("rank", "INTEGER", "1 = best"),
        ("add_item_id", "VARCHAR", "the item to add"),
        *_PAIR,
        ("reason", "VARCHAR", "\"bought together with <item_id>\""),
    ]),
    "post_purchase_email": ("The email after a purchase: one row per (ds, user_id).", [
        *_RUN,
        ("user_id", "VARCHAR", "the customer"),
        ("purchased_items", "VARCHAR[]", "what they bought on `ds`"),
        ("recommended_items", "VARCHAR[]", "up to `email_n` (10) items, best first, never one they already bought"),
        ("reasons", "VARCHAR[]", "per item: \"others bought this after X\", \"bought together with X\", "
                                 "\"popular in <country>\", \"best seller\""),
        ("scores", "DOUBLE[]", "per item: the summed confidence, or the buyers count for best sellers"),
        ("recommendation_ids", "VARCHAR[]", "per item: its stable recommendation id (as in user_recommendations)"),
    ]),
    "trending": ("Rising items: one row per (ds, country, rank); country `ALL` holds the overall list.", [
        *_RUN,
        ("country", "VARCHAR", "the users file's country, or `ALL`"),
        ("rank", "INTEGER", "1 = best"),
        ("item_id", "VARCHAR", "the item"),
        ("buyers_this_week", "BIGINT", "distinct buyers in the 7 days up to `ds`"),
        ("buyers_per_week_before", "DOUBLE", "weekly average of distinct buyers in the `trending_weeks` before"),
        ("trend_score", "DOUBLE", "(this week + 1) / (weekly before + 1)"),
    ]),
    "best_sellers": ("Best sellers: one row per (ds, country, rank); country `ALL` holds the overall list.", [
        *_RUN,
        ("country", "VARCHAR", "the users file's country, or `ALL`"),
        ("rank", "INTEGER", "1 = best"),
        ("item_id", "VARCHAR", "the item"),
        ("buyers", "BIGINT", "distinct buyers over the last `popularity_days` (30)"),
        ("units", "DOUBLE", "units bought in the window"),
        ("revenue", "DOUBLE", "quantity x price in the window"),
    ]),
    "user_category_affinity": ("The user's top categories: one row per (ds, user_id, rank).", [
        *_RUN,
        ("user_id", "VARCHAR", "the user"),
        ("rank", "INTEGER", "1 = the user's strongest category"),
        ("category", "VARCHAR", "the category"),
        ("affinity", "FLOAT", "share of the user's weight in this category (sums to 1 over all their categories)"),
        ("weight", "FLOAT", "the summed interaction weight"),
    ]),
    "session_next_items": ("What shoppers look at or buy next after an item within a visit (anonymous sessions): "
                           "one row per (ds, item_id, rank).", [
        *_RUN,
        ("item_id", "VARCHAR", "an available item seen in a session of the window"),
        ("rank", "INTEGER", "1 = best; up to `session_next_n` (10) rows per item"),
        ("next_item_id", "VARCHAR", "an available item other than `item_id`"),
        ("score", "FLOAT", "the session model's score for the one-item session [`item_id`] (comparable within "
                           "an item and a night only)"),
        ("model", "VARCHAR", "the session model chosen tonight on held-out sessions (best HR@20): `session_knn`, "
                             "`item_cooccurrence`, ... (model_runs rows with protocol `session`)"),
        ("reason", "VARCHAR", "\"shoppers viewed this next\""),
    ]),
    "items": ("The catalog as the night saw it: one row per (ds, item_id).", [
        *_RUN,
        ("item_id", "VARCHAR", "the catalog's item id"),
        ("title", "VARCHAR", "the catalog's title"),
        ("category", "VARCHAR", "the catalog's category"),
        ("brand", "VARCHAR", "the catalog's brand"),
        ("price", "DOUBLE", "the catalog's price"),
        ("in_stock", "BOOLEAN", "in stock on `ds`"),
        ("active", "BOOLEAN", "sellable on `ds` (inactive items are never recommended)"),
        ("first_seen", "DATE", "date of the item's first event (NULL: none yet)"),
        ("url", "VARCHAR", "the product page (NULL when the catalog has none)"),
        ("image_url", "VARCHAR", "the product image (NULL when the catalog has none)"),
        ("review_count", "BIGINT", "review events with a text in the features window (0: none)"),
        ("review_sentiment", "DOUBLE", "their mean VADER compound score, -1 (negative) to 1 (positive); 0 without "
                                       "reviews (docs/rules.md: poorly reviewed items are demoted)"),
    ]),
    "model_runs": ("Evaluation of every candidate: one row per (ds, protocol, model, segment, task, metric).", [
        *_RUN,
        ("protocol", "VARCHAR", "`holdout` (the last `holdout_days`, evaluate step), `ranker_window` (the rank "
                                "step: the hybrid and its generators) or `session` (next-item models of anonymous "
                                "sessions, leave-last-out on the holdout window's sessions: surfaces step)"),
        ("model", "VARCHAR", "candidate name, `hybrid`, or `popular_in_country` (new users)"),
        ("segment", "VARCHAR", "`returning` (history before the window), `new` (first event inside the window) "
                               "or `sessions` (protocol `session`)"),
        ("task", "VARCHAR", "`all` (anything bought: `for_you`), `new` (never-bought items: `new_for_you`) or "
                            "`next_item` (protocol `session`)"),
        ("metric", "VARCHAR", "`precision_at_10`, `recall_at_10`, `ndcg_at_10`, ... `users` (docs/metrics.md); "
                              "protocol `session`: `hr_at_20`, `mrr_at_20`, `sessions` (held-out sessions scored)"),
        ("value", "DOUBLE", "the value"),
        ("mlflow_run_id", "VARCHAR", "the night's MLflow run (NULL for rows of older releases)"),
        ("model_version", "VARCHAR", "the registered model version the night created (NULL: older releases)"),
    ]),
    "ab_assignments": ("A/B arms: one row per (ds, experiment_id, user_id) for every running experiment.", [
        *_RUN,
        ("experiment_id", "VARCHAR", "the experiment"),
        ("user_id", "VARCHAR", "the user"),
        ("variant", "VARCHAR", "the user's arm"),
        ("bucket", "DOUBLE", "the hash position in [0, 1)"),
        ("lists", "VARCHAR", "the lists the arm serves"),
    ]),
    "published_runs": ("One row per (ds, table_name) published by the nightly: the latest_ views' ds and the "
                       "link from a row set to its model.", [
        ("ds", "DATE", "the published ds"),
        ("table_name", "VARCHAR", "the table (`user_recommendations` covers all its surfaces)"),
        ("run_id", "VARCHAR", "the run that published it"),
        ("rows", "BIGINT", "rows of the table for `ds`"),
        ("published_at", "TIMESTAMP WITH TIME ZONE", "when the publish committed"),
        ("mlflow_run_id", "VARCHAR", "the night's MLflow run (NULL for dates published by older releases)"),
        ("model_version", "VARCHAR", "the registered model version the night created"),
        ("champion", "VARCHAR", "the model serving the personal lists"),
        ("champion_version", "VARCHAR", "the champion's registered version"),
    ]),
    "validation_runs": ("The newest validation run of each (ds, dataset) (a rerun replaces the ds's rows).",
                        VALIDATION),
    "validation_runs_history": ("Every validation run, append-only: one row per (ds, run, dataset).", VALIDATION),
    "quarantined_events": ("Every quarantined event with its rule(s) and landing file (docs/validation.md).", [
        ("ds", "DATE", "the ds of the validation run that set it aside"),
        ("run_id", "VARCHAR", "that run"),
        ("event_date", "VARCHAR", "the landing partition: a date, or `unknown` (a time that did not parse)"),
        ("rule", "VARCHAR", "the rule(s) it broke (docs/validation.md)"),
        ("user_id", "VARCHAR", "as landed"), ("item_id", "VARCHAR", "as landed"),
        ("event_type", "VARCHAR", "as landed"),
        ("event_time", "TIMESTAMP WITH TIME ZONE", "as landed (NULL: did not parse)"),
        ("quantity", "BIGINT", "as landed"), ("price", "DOUBLE", "as landed"),
        ("order_id", "VARCHAR", "as landed"), ("session_id", "VARCHAR", "as landed"),
        ("rating", "DOUBLE", "as landed"), ("review_text", "VARCHAR", "as landed"),
        ("dwell_seconds", "DOUBLE", "as landed"), ("device", "VARCHAR", "as landed"),
        ("channel", "VARCHAR", "as landed"), ("landing_page", "VARCHAR", "as landed"),
        ("unparseable", "VARCHAR", "the raw text of values that did not parse"),
        ("source_file", "VARCHAR", "the landing file it came from"),
    ]),
    "privacy_requests": ("One row per `recsys forget` request; never the user id (docs/privacy.md).", [
        ("request_id", "VARCHAR", "the request"), ("kind", "VARCHAR", "`forget`"),
        ("requested_at", "TIMESTAMP WITH TIME ZONE", "when it started"),
        ("completed_at", "TIMESTAMP WITH TIME ZONE", "when it committed"),
        ("parquet_files_rewritten", "BIGINT", "Parquet files rewritten"),
        ("parquet_rows_removed", "BIGINT", "rows removed from them"),
        ("matrices_rewritten", "BIGINT", "feature matrices rewritten"),
        ("warehouse_rows_removed", "BIGINT", "rows removed from the DuckDB tables"),
        ("exports_rewritten", "BIGINT", "CSV exports rewritten"),
        ("text_files_scrubbed", "BIGINT", "text files scrubbed"),
        ("serving_rows_removed", "BIGINT", "rows removed from the PostgreSQL serving copy"),
        ("ds", "DATE", "the UTC date of the request (its Parquet copy's partition)"),
    ]),
}

TABLES.update(WEB_TABLES)  # context_defaults, homepage

# Views beyond latest_<table>: name -> (description, SQL body).
V_VIEWS: dict[str, tuple[str, str]] = {
    "v_user_recommendations": (
        "latest_user_recommendations with the item's title, category, brand, price and links.",
        "SELECT r.*, i.title, i.category, i.brand, i.price, i.url, i.image_url FROM latest_user_recommendations r "
        "LEFT JOIN latest_items i USING (item_id)"),
    "v_similar_items": (
        "latest_similar_items with both items' titles and categories.",
        "SELECT s.*, a.title, a.category, b.title AS similar_title, b.category AS similar_category, "
        "b.price AS similar_price FROM latest_similar_items s LEFT JOIN latest_items a ON a.item_id = s.item_id "
        "LEFT JOIN latest_items b ON b.item_id = s.similar_item_id"),
    "v_frequently_bought_together": (
        "latest_frequently_bought_together with both items' titles.",
        "SELECT s.*, a.title, b.title AS other_title, b.price AS other_price FROM latest_frequently_bought_together s "
        "LEFT JOIN latest_items a ON a.item_id = s.item_id LEFT JOIN latest_items b ON b.item_id = s.other_item_id"),
    "v_complete_the_look": (
        "latest_complete_the_look with both items' titles.",
        "SELECT s.*, a.title, b.title AS other_title, b.price AS other_price FROM latest_complete_the_look s "
        "LEFT JOIN latest_items a ON a.item_id = s.item_id LEFT JOIN latest_items b ON b.item_id = s.other_item_id"),
    "v_cart_cross_sell": (
        "latest_cart_cross_sell with both items' titles.",
        "SELECT s.*, a.title, b.title AS add_title, b.price AS add_price FROM latest_cart_cross_sell s "
        "LEFT JOIN latest_items a ON a.item_id = s.item_id LEFT JOIN latest_items b ON b.item_id = s.add_item_id"),
    "v_session_next_items": (
        "latest_session_next_items with both items' titles.",
        "SELECT s.*, a.title, b.title AS next_title, b.price AS next_price FROM latest_session_next_items s "
        "LEFT JOIN latest_items a ON a.item_id = s.item_id LEFT JOIN latest_items b ON b.item_id = s.next_item_id"),
    "v_trending": (
        "latest_trending with the item's title, category and price.",
        "SELECT s.*, i.title, i.category, i.price FROM latest_trending s LEFT JOIN latest_items i USING (item_id)"),
    "v_best_sellers": (
        "latest_best_sellers with the item's title, category and price.",
        "SELECT s.*, i.title, i.category, i.price FROM latest_best_sellers s LEFT JOIN latest_items i USING (item_id)"),
    "v_post_purchase_email": (
        "latest_post_purchase_email in long form: one row per (user_id, position) with the item's title.",
        "SELECT e.ds, e.run_id, e.user_id, e.position, e.item_id, i.title, i.price, e.reason, e.score, "
        "e.recommendation_id FROM (SELECT ds, run_id, user_id, "
        "unnest(generate_series(1, len(recommended_items))) AS position, unnest(recommended_items) AS item_id, "
        "unnest(reasons) AS reason, unnest(scores) AS score, unnest(recommendation_ids) AS recommendation_id "
        "FROM latest_post_purchase_email) e LEFT JOIN latest_items i USING (item_id)"),
}
# The columns a v_ view adds to its latest_ view (or, for the email view, all of them).
V_COLUMNS: dict[str, list[tuple[str, str, str]]] = {
    "v_user_recommendations": [("title", "VARCHAR", "the item's title"), ("category", "VARCHAR", "its category"),
                               ("brand", "VARCHAR", "its brand"), ("price", "DOUBLE", "its price"),
                               ("url", "VARCHAR", "its product page"), ("image_url", "VARCHAR", "its image")],
    "v_similar_items": [("title", "VARCHAR", "the item's title"), ("category", "VARCHAR", "its category"),
                        ("similar_title", "VARCHAR", "the similar item's title"),
                        ("similar_category", "VARCHAR", "its category"), ("similar_price", "DOUBLE", "its price")],
    "v_frequently_bought_together": [("title", "VARCHAR", "the anchor's title"),
                                     ("other_title", "VARCHAR", "the other item's title"),
                                     ("other_price", "DOUBLE", "its price")],
    "v_complete_the_look": [("title", "VARCHAR", "the anchor's title"),
                            ("other_title", "VARCHAR", "the other item's title"), ("other_price", "DOUBLE", "its price")],
    "v_cart_cross_sell": [("title", "VARCHAR", "the cart item's title"),
                          ("add_title", "VARCHAR", "the added item's title"), ("add_price", "DOUBLE", "its price")],
    "v_session_next_items": [("title", "VARCHAR", "the item's title"),
                             ("next_title", "VARCHAR", "the next item's title"), ("next_price", "DOUBLE", "its price")],
    "v_trending": [("title", "VARCHAR", "the item's title"), ("category", "VARCHAR", "its category"),
                   ("price", "DOUBLE", "its price")],
    "v_best_sellers": [("title", "VARCHAR", "the item's title"), ("category", "VARCHAR", "its category"),
                       ("price", "DOUBLE", "its price")],
    "v_post_purchase_email": [*_RUN, ("user_id", "VARCHAR", "the customer"),
                              ("position", "BIGINT", "1 = the email's first item"),
                              ("item_id", "VARCHAR", "the recommended item"), ("title", "VARCHAR", "its title"),
                              ("price", "DOUBLE", "its price"), ("reason", "VARCHAR", "why it is recommended"),
                              ("score", "DOUBLE", "its score"),
                              ("recommendation_id", "VARCHAR", "its stable recommendation id")],
}
V_BASE = {name: name.replace("v_", "", 1) for name in V_VIEWS}


def view_columns(name: str) -> list[tuple[str, str, str]] | None:
    """The documented columns of a view (None: not a view of this module)."""
    if name in V_VIEWS:
        base = V_BASE[name]
        return V_COLUMNS[name] if name == "v_post_purchase_email" else TABLES[base][1] + V_COLUMNS[name]
    if name.startswith("latest_") and name[len("latest_"):] in TABLES:
        return TABLES[name[len("latest_"):]][1]
    return None


def view_description(name: str) -> str:
    if name in V_VIEWS:
        return V_VIEWS[name][0]
    table = name[len("latest_"):]
    if table in NIGHTLY_TABLES:
        return f"{table} of the newest ds in published_runs that is not in the future (UTC)"
    if table.startswith("validation_runs"):
        return f"{table} of the newest validated ds that is not in the future (UTC)"
    return f"{table} of its newest ds that is not in the future (UTC)"


# ------------------------------------------------------------------ docs/tables.md
DOC = Path(__file__).resolve().parents[2] / "docs" / "tables.md"
_BLOCK = re.compile(r"<!-- columns: (\S+) -->\n.*?<!-- /columns -->", re.S)


def doc_columns_table(name: str) -> str:
    cols = TABLES[name][1] if name in TABLES else view_columns(name)
    rows = [f"| `{c}` | {t} | {d.replace('|', '/')} |" for c, t, d in cols]
    return "\n".join([f"<!-- columns: {name} -->", "| column | type | description |", "|---|---|---|", *rows,
                      "<!-- /columns -->"])


def render_doc(text: str) -> str:
    """docs/tables.md with every ``<!-- columns: NAME -->`` block regenerated from this module."""
    return _BLOCK.sub(lambda m: doc_columns_table(m.group(1)), text)


def parse_doc(text: str) -> dict[str, dict[str, tuple[str, str]]]:
    """{name: {column: (type, description)}} of every ``| column | type | description |`` block."""
    out = {}
    for m in _BLOCK.finditer(text):
        rows = [r.split(" | ") for r in m.group(0).splitlines() if r.startswith("| `")]
        out[m.group(1)] = {c[2:].strip("`"): (t, d[:-2]) for c, t, d in rows}
    return out


if __name__ == "__main__":
    DOC.write_text(render_doc(DOC.read_text(encoding="utf-8")), encoding="utf-8")
    print(f"regenerated the column tables of {DOC}")
