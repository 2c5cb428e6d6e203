"""The columns of the web's landing surfaces (issue 17): ``context_defaults`` (lists for visitors
without history, per context of the visit) and ``homepage`` (each user's homepage slots). Part of
``TABLES`` in pipelines/infra/warehouse_schema.py (kept apart only for that module's size)."""
from __future__ import annotations

_RUN = [("ds", "DATE", "logical date of the run"),
        ("run_id", "VARCHAR", "Airflow run id (or `cli__...` for `recsys run`)")]

WEB_TABLES: dict[str, tuple[str, list[tuple[str, str, str]]]] = {
    "context_defaults": ("Lists for visitors without history, per context of the visit: one row per (ds, context, "
                         "value, rank).", [
        *_RUN,
        ("context", "VARCHAR", "`channel` (the referral source), `landing_page` (page type or category), `device`, "
                               "`country` (the users file's) or `all` (every visitor: the overall list)"),
        ("value", "VARCHAR", "the context's value, trimmed and lower-case (`social`, `garden`, `mobile`, "
                             "`united kingdom`); `all` for context `all`"),
        ("rank", "INTEGER", "1 = best; up to `context_n` (20) rows per (context, value)"),
        ("item_id", "VARCHAR", "an available item (active, in stock); at most `max_category_share` of a list "
                               "from one category unless the list would be short"),
        ("score", "DOUBLE", "(w_value(item) + m x p(item)) / (W_value + m): the value's share of weighted "
                            "events on the item, shrunk towards overall popularity p by m = `context_prior` "
                            "(context `all`: p itself)"),
        ("reason", "VARCHAR", "\"popular with visitors from social\", \"popular with visitors landing on garden\", "
                              "\"popular on mobile\", \"popular in France\", \"popular with shoppers\""),
    ]),
    "homepage": ("Each user's homepage slots: one row per (ds, user_id, slot_type, position).", [
        *_RUN,
        ("user_id", "VARCHAR", "every user of the night (as in user_recommendations)"),
        ("slot_type", "VARCHAR", "`hero` (products), `category` (featured categories, the discovery one last) or "
                                 "`banner` (at most one campaign)"),
        ("position", "INTEGER", "1 = first, within the slot type: hero 1..`homepage_hero_n` (6), category "
                                "1..`homepage_categories` + 1, banner 1"),
        ("item_id", "VARCHAR", "hero: the product; NULL on category and banner rows"),
        ("category", "VARCHAR", "hero: the item's category; category: the featured category; banner: the target "
                                "category the user likes best (NULL: matched by brand, or a fallback banner)"),
        ("banner_id", "VARCHAR", "banner: the campaign (`recsys import-campaigns`); NULL on other rows"),
        ("score", "DOUBLE", "hero: for_you position utility 1 / log2(rank + 1) x the rules' margin and promotion "
                            "boost, or the context default's score; category: the user's affinity (0 for "
                            "discovery); banner: the user's affinity to its targets (category share + brand "
                            "share), or for a fallback banner its targets' share of all shoppers' weight"),
        ("reason", "VARCHAR", "hero: the for_you row's reason or the context default's; category: \"you often "
                              "shop X\", \"something new to discover\", \"popular in France\"; banner: "
                              "\"matches your interest in X\", \"for everyone\""),
    ]),
}
