"""One frozen configuration object: defaults <- YAML file <- environment variables.

* YAML: the file named by ``RECSYS_CONFIG`` (flat keys, same names as the fields below).
* Environment: ``RECSYS_<FIELD>`` in upper case, e.g. ``RECSYS_ALS_FACTORS=32``;
  ``RECSYS_HOME`` sets the data root.

No step reads Airflow Variables or connections; the DAG passes nothing but ``ds`` and the run id.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping


def _default_weights() -> Mapping[str, float]:
    # Purchases dominate; a return cancels one purchase of the same item.
    return MappingProxyType({"view": 1.0, "add_to_cart": 3.0, "purchase": 8.0, "return": -8.0})


@dataclass(frozen=True)
class Config:
    home: Path = Path("var")
    seed: int = 42
    # Recommendation list length per user and surface, and the cut-off used by the evaluation.
    top_n: int = 20
    eval_k: int = 10
    # Temporal holdout: the last `holdout_days` days up to ds are the evaluation window.
    holdout_days: int = 7
    # Only events of the last `history_days` days up to ds feed the models (0 = all history).
    history_days: int = 0
    # Popularity counts purchases in this trailing window.
    popularity_days: int = 30
    # Trending: purchases decayed with this half-life (days) before the cut-off.
    trending_half_life_days: float = 7.0
    # Brand-new items (first seen within new_item_days of ds, or catalog-only) get up to
    # new_item_slots of the last positions of each personal list, by content similarity to the
    # user's history (they have no interactions yet, so no collaborative model can place them).
    new_item_days: int = 14
    new_item_slots: int = 2
    # New items scored per user for those slots, at most (fresh_pool in pipelines/publish.py).
    new_item_pool: int = 2_000
    event_weights: Mapping[str, float] = field(default_factory=_default_weights)
    als_factors: int = 64
    als_regularization: float = 0.05
    als_alpha: float = 2.0
    als_iterations: int = 15
    itemknn_neighbours: int = 100
    itemknn_weighting: str = "bm25"
    bpr_factors: int = 64
    bpr_iterations: int = 100
    ease_regularization: float = 200.0
    # Seconds the nightly hyperparameter search may spend (0 = no search).
    search_budget_seconds: float = 60.0
    # Two-stage hybrid (pipelines/hybrid.py): label window, number of stacked training windows,
    # candidates per generator.
    ranker_window_days: int = 28
    ranker_windows: int = 2
    ranker_candidates: int = 50
    # The hybrid serves a surface only when its holdout NDCG beats the best single model by this share.
    hybrid_min_gain: float = 0.0
    # EASE holds an items x items dense matrix: skipped above this catalog size.
    ease_max_items: int = 20_000
    similar_items_n: int = 20
    # similar_items: weight of the content cosine against the item-kNN (co-interaction) cosine.
    similar_content_weight: float = 0.5
    # ---- surfaces (pipelines/surfaces.py, docs/tables.md)
    # Pairs bought together: baskets of more items than this (wholesale orders) are left out; a pair
    # needs at least fbt_min_pair_count baskets (minimum support) and a lift above fbt_min_lift.
    fbt_max_basket_items: int = 50
    fbt_min_pair_count: int = 3
    fbt_min_lift: float = 1.0
    fbt_n: int = 20
    cart_pairs_n: int = 50
    # Post-purchase email: "others bought next" = bought within next_purchase_days after the item.
    next_purchase_days: int = 30
    email_candidates: int = 50
    email_n: int = 10
    # Trending: this week's buyers against the weekly average of the trending_weeks before.
    trending_weeks: int = 4
    trending_min_buyers: int = 2
    # Length of the best-seller and trending lists per country, and of each user's category affinity.
    fallback_n: int = 50
    affinity_n: int = 10
    # PostgreSQL serving copy of the latest tables (RECSYS_SERVING_URL), e.g.
    # postgresql://recsys@db.internal:5432/recsys; empty = off (docs/tables.md, "Serving copy").
    serving_url: str = ""
    # A/B experiments (YAML, docs/ab-testing.md); empty = none.
    experiments_file: str = ""
    # Business rules file (YAML, docs/rules.md); empty = the built-in defaults (pipelines/rules.yaml).
    rules_file: str = ""
    # User shards of the score step (Airflow maps one task per shard; RECSYS_PUBLISH_SHARDS must be
    # set for the scheduler that parses the DAG too). Every shard becomes visible at publish, together.
    publish_shards: int = 1
    # Users scored per block, and the most floats a dense score block may hold (rows = this / items):
    # memory stays bounded whatever the number of users.
    score_block_users: int = 4096
    score_block_cells: int = 16_777_216
    # The score step builds the lists of this many users at a time (memory of the rules layer).
    score_chunk_users: int = 50_000
    # Offline evaluation (evaluate step, the hybrid's windows) scores a fixed random sample of at
    # most this many users per segment: metrics to about +-0.003 NDCG, in bounded time at any size.
    eval_max_users: int = 10_000
    # The hybrid re-ranks the lists of at most this many users per night (the most active first);
    # the others get the champion's lists. Its cost is per (user, candidate) pair (docs/deploy.md).
    hybrid_max_users: int = 50_000
    # Candidate models evaluated every night; the best on NDCG@eval_k becomes champion.
    candidates: tuple[str, ...] = ("popularity", "trending", "buy_again", "als", "bpr", "itemknn", "ease", "content")
    # ---- validation gate (docs/validation.md)
    # A run fails when more than this share of its rows is quarantined for data errors.
    max_quarantine_share: float = 0.10
    # Rules whose rows are set aside but do not count as errors towards the share limit: guest
    # checkouts have no customer id, which is a property of the shop, not a broken feed.
    quarantine_share_exempt_rules: tuple[str, ...] = ("null_user_id",)
    # Volume: the ds partition against the median of the 7 days before it. "warn" or "fail".
    volume_rule: str = "warn"
    volume_low_ratio: float = 0.2
    volume_high_ratio: float = 5.0
    # Freshness: no events landed for ds. "warn" or "fail".
    freshness_rule: str = "warn"
    max_id_length: int = 256
    max_quantity: int = 100_000
    # Champion/challenger gate: the alias moves when the night's best model beats the current
    # champion's model and the baselines on NDCG@eval_k by this share, keeping coverage within tolerance.
    gate_margin: float = 0.01
    gate_coverage_tolerance: float = 0.10
    mlflow_experiment: str = "recsys_nightly"
    # An MLflow tracking server (e.g. http://mlflow:5000) instead of the SQLite store under the data root.
    mlflow_tracking_uri: str = ""
    registered_model: str = "recsys_recommender"

    # ---- derived paths (one place for the layout under the data root) ----
    @property
    def landing(self) -> Path:
        return self.home / "landing"

    @property
    def validated(self) -> Path:
        return self.home / "validated"

    @property
    def quarantine(self) -> Path:
        return self.home / "quarantine"

    def features_dir(self, ds: str) -> Path:
        return self.home / "features" / f"ds={ds}"

    def models_dir(self, ds: str) -> Path:
        return self.home / "models" / f"ds={ds}"

    def eval_dir(self, ds: str) -> Path:
        return self.home / "eval" / f"ds={ds}"

    @property
    def warehouse(self) -> Path:
        return self.home / "warehouse"

    @property
    def duckdb_path(self) -> Path:
        return self.warehouse / "recsys.duckdb"

    @property
    def mlflow_dir(self) -> Path:
        return self.home / "mlflow"

    @property
    def mlflow_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{self.mlflow_dir / 'mlflow.db'}"

    @property
    def airflow_dir(self) -> Path:
        return self.home / "airflow"


def _coerce(name: str, raw: Any, default: Any) -> Any:
    """Turn a YAML or environment value into the type of the field's default."""
    try:
        if isinstance(default, Path):
            return Path(raw)
        if isinstance(default, bool):
            return str(raw).lower() in ("1", "true", "yes", "on")
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        if isinstance(default, tuple):
            items = raw.split(",") if isinstance(raw, str) else list(raw)
            return tuple(str(x).strip() for x in items if str(x).strip())
        if isinstance(default, Mapping):
            if isinstance(raw, str):
                pairs = (p.split("=") for p in raw.split(",") if p.strip())
                raw = {k.strip(): v for k, v in pairs}
            merged = dict(default)
            merged.update({str(k): float(v) for k, v in dict(raw).items()})
            return MappingProxyType(merged)
        return raw
    except (TypeError, ValueError) as exc:
        raise ValueError(f"config: {name}={raw!r} is not a valid {type(default).__name__}") from exc


def load_config(environ: Mapping[str, str] | None = None, **overrides: Any) -> Config:
    """Build the Config from defaults, the YAML file in RECSYS_CONFIG, RECSYS_* variables, overrides."""
    env = os.environ if environ is None else environ
    defaults = Config()
    values: dict[str, Any] = {}
    known = {f.name for f in fields(Config)}
    yaml_path = env.get("RECSYS_CONFIG")
    if yaml_path:
        import yaml

        with open(yaml_path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh) or {}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"config file {yaml_path}: unknown keys {unknown}; known keys: {sorted(known)}")
        values.update(data)
    for f in fields(Config):
        key = f"RECSYS_{f.name.upper()}"
        if key in env:
            values[f.name] = env[key]
    values.update({k: v for k, v in overrides.items() if v is not None})
    coerced = {k: _coerce(k, v, getattr(defaults, k)) for k, v in values.items()}
    cfg = dataclasses.replace(defaults, **coerced)
    # The data root is always absolute: Airflow task processes and sqlite URIs need it.
    return dataclasses.replace(cfg, home=cfg.home.expanduser().resolve())
