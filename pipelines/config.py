"""One frozen configuration object in sections: defaults <- YAML file <- environment variables.

``cfg.models.als_factors``, ``cfg.evaluation.eval_k``, ``cfg.scale.publish_shards``: each section is
a frozen dataclass; ``Config`` holds the data root, the seed and one instance of each section.

* YAML: the file named by ``RECSYS_CONFIG``, either flat keys (``als_factors: 32``) or keys under
  their section (``models: {als_factors: 32}``); both forms may be mixed. An unknown key fails.
* Environment: ``RECSYS_<FIELD>`` in upper case, e.g. ``RECSYS_ALS_FACTORS=32`` (field names are
  unique across sections, so the variable names do not carry the section); ``RECSYS_HOME`` sets
  the data root.
* Code: ``load_config(top_n=5)`` and ``cfg.replace(gate_margin=0.05)`` take the same flat names.

Nothing but this module reads ``RECSYS_*`` variables, no step reads Airflow Variables or connections
(the DAG files read their settings through ``load_config`` too); paths are ``pipelines.artifacts``'s.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from pipelines.config_deep import DeepModelSettings


def _default_weights() -> Mapping[str, float]:
    # Purchases dominate; a return cancels a purchase; ratings weigh by their stars (rating_weight).
    return MappingProxyType({"view": 1.0, "add_to_cart": 3.0, "purchase": 8.0, "return": -8.0,
                             "add_to_wishlist": 4.0, "rating": 0.0, "review": 1.0})


@dataclass(frozen=True)
class FeatureSettings:
    """How events become model inputs (features step)."""
    event_weights: Mapping[str, float] = field(default_factory=_default_weights)
    # Temporal holdout: the last `holdout_days` days up to ds are the evaluation window.
    holdout_days: int = 7
    history_days: int = 0  # only events of the last `history_days` days up to ds feed the models (0 = all)
    popularity_days: int = 30  # popularity counts purchases in this trailing window
    trending_half_life_days: float = 7.0  # trending: purchases decayed with this half-life (days)
    # Anonymous sessions: events without a session_id start a new session after this much inactivity.
    session_gap_minutes: float = 30.0
    # Events kept per user (the newest) in the sequences of the sequence models (models/sasrec.py).
    sequence_max_events: int = 200
    # Ratings, dislikes and dwell times (docs/data-contract.md, "How events become interaction weights").
    rating_weight: float = 2.0
    rating_neutral: float = 3.0
    dislike_max_rating: float = 2.0
    dwell_reference_seconds: float = 30.0
    dwell_min_factor: float = 0.25
    dwell_max_factor: float = 3.0


@dataclass(frozen=True)
class ModelSettings(DeepModelSettings):
    """Candidate models and their hyperparameters. ``<model>_<parameter>`` is the constructor
    parameter ``parameter`` of the model registered as ``model`` (models.registry builds each model
    from these; ``random_state`` comes from the top-level seed). The deep models' settings are
    inherited from pipelines.config_deep.DeepModelSettings."""
    # Candidate models evaluated every night; the best on NDCG@eval_k becomes champion.
    candidates: tuple[str, ...] = ("popularity", "trending", "buy_again", "als", "bpr", "itemknn", "ease", "content")
    als_factors: int = 64
    als_regularization: float = 0.05
    als_alpha: float = 2.0
    als_iterations: int = 15
    # The select step's refit of an ALS champion starts from its holdout fit (models/als.py): 0 = cold.
    als_warm_iterations: int = 5
    bpr_factors: int = 64
    bpr_iterations: int = 100
    bpr_learning_rate: float = 0.01
    bpr_regularization: float = 0.01
    bpr_max_samples: int = 200_000_000  # per fit: on large data the iterations are cut (models/bpr.py)
    bpr_min_iterations: int = 10
    itemknn_neighbours: int = 100
    itemknn_weighting: str = "bm25"
    ease_regularization: float = 200.0
    ease_binary: bool = True
    # EASE holds an items x items dense matrix: skipped above this catalog size.
    ease_max_items: int = 20_000
    # buy_again: repeat rates shrunk towards the catalog-wide share with this many pseudo-buyers.
    buy_again_smoothing: float = 10.0
    content_min_df: int = 1
    content_ngram_max: int = 2
    content_max_features: int = 50_000
    # Review-sentiment prior on content scores (docs/configuration.md): 0 = off; no reviews = no change.
    content_sentiment_weight: float = 0.2
    content_sentiment_shrinkage: float = 3.0


@dataclass(frozen=True)
class EvaluationSettings:
    """Offline evaluation (evaluate step) and the nightly hyperparameter search."""
    eval_k: int = 10  # the K of precision@K, recall@K and NDCG@K
    # Each segment is scored on a fixed random sample of at most this many users: metrics to about
    # +-0.003 NDCG, in bounded time at any size.
    eval_max_users: int = 10_000
    # Seconds the nightly hyperparameter search may spend (0 = no search).
    search_budget_seconds: float = 60.0
    # The search tunes only candidates whose NDCG is at least this share of the best candidate's.
    search_min_share: float = 0.5


@dataclass(frozen=True)
class HybridSettings:
    """The two-stage hybrid (rank step, pipelines/hybrid/)."""
    # Stage-1 generators (registered models): each proposes ranker_candidates items per user and its
    # score is a ranker feature. The deep models (lightgcn, two_tower, sasrec) may be added: each is
    # then fitted at every cut-off (ranker_windows + 2 per night), within its budget_seconds.
    hybrid_generators: tuple[str, ...] = ("buy_again", "itemknn", "ease", "als")
    # Label window, number of stacked training windows, candidates per generator.
    ranker_window_days: int = 28
    ranker_windows: int = 2
    ranker_candidates: int = 50
    # The hybrid serves a surface only when its holdout NDCG beats the best single model by this share.
    hybrid_min_gain: float = 0.0
    # The hybrid re-ranks the lists of at most this many users per night (the most active first);
    # the others get the champion's lists. Its cost is per (user, candidate) pair (docs/deploy.md).
    hybrid_max_users: int = 50_000
    # Hour-of-day, weekday and last-year-season ranker features (off: docs/configuration.md says why).
    ranker_context_features: bool = False


@dataclass(frozen=True)
class RankingSettings:
    """The personal lists and the product-page neighbours (score and publish steps)."""
    # Recommendation list length per user and surface.
    top_n: int = 20
    # Brand-new items (first seen within new_item_days of ds, or catalog-only) get up to
    # new_item_slots of the last positions of each personal list, by content similarity to the
    # user's history (they have no interactions yet, so no collaborative model can place them).
    new_item_days: int = 14
    new_item_slots: int = 2
    # New items scored per user for those slots, at most (pipelines.ranking.sources.fresh_pool).
    new_item_pool: int = 2_000
    # Business rules file (YAML, docs/rules.md); empty = the built-in defaults (pipelines/ranking/rules.yaml).
    rules_file: str = ""
    similar_items_n: int = 20
    # similar_items: weight of the content cosine against the item-kNN (co-interaction) cosine.
    similar_content_weight: float = 0.5
    # What places items nobody has bought (the new-item slots and the content leg of similar_items):
    # "content" (TF-IDF of the item text) or "two_tower" (the two-tower model's item tower over the
    # text and, for items with interactions, their id; fitted on all data by the select step).
    cold_item_model: str = "content"


@dataclass(frozen=True)
class SurfaceSettings:
    """The surfaces step's tables (docs/tables.md)."""
    # Pairs bought together: baskets of more items than this (wholesale orders) are left out; a pair
    # needs at least fbt_min_pair_count baskets (minimum support) and a lift above fbt_min_lift.
    fbt_max_basket_items: int = 50
    fbt_min_pair_count: int = 3
    fbt_min_lift: float = 1.0
    fbt_n: int = 20
    cart_pairs_n: int = 50
    # Post-purchase email: "others bought next" = bought within next_purchase_days after the item, by
    # customers of at most next_purchase_max_items distinct items in the window (no wholesale accounts).
    next_purchase_days: int = 30
    next_purchase_max_items: int = 1000
    email_candidates: int = 50
    email_n: int = 10
    # Trending: this week's buyers against the weekly average of the trending_weeks before.
    trending_weeks: int = 4
    trending_min_buyers: int = 2
    # Length of the best-seller and trending lists per country, and of each user's category affinity.
    fallback_n: int = 50
    affinity_n: int = 10
    # session_next_items: next items per item, from the session model chosen on held-out sessions.
    session_next_n: int = 10
    # context_defaults (per channel, landing page, device, country; docs/tables.md) and homepage.
    context_n: int = 20
    context_days: int = 30
    context_prior: float = 50.0  # pseudo-weight of overall popularity mixed into each value's list
    homepage_hero_n: int = 6
    homepage_categories: int = 4
    # The session models compared each night (models/sessions.py; "session_gru", a neural model that
    # trains for minutes, is opt-in). Order breaks ties: the simpler first.
    session_models: tuple[str, ...] = ("session_knn", "item_cooccurrence")


@dataclass(frozen=True)
class GateSettings:
    """Champion/challenger gate (select step) and the MLflow names it uses."""
    # The alias moves when the night's best model beats the current champion's model and the
    # baselines on NDCG@eval_k by this share, keeping coverage within tolerance.
    gate_margin: float = 0.01
    gate_coverage_tolerance: float = 0.10
    mlflow_experiment: str = "recsys_nightly"
    # An MLflow tracking server (e.g. http://mlflow:5000) instead of the SQLite store under the data root.
    mlflow_tracking_uri: str = ""
    registered_model: str = "recsys_recommender"


@dataclass(frozen=True)
class ValidationSettings:
    """The validation gate (docs/validation.md)."""
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
    # Row rule price_out_of_range: a price that is not finite (inf, 1e400) or above this is quarantined.
    max_price: float = 1_000_000.0
    # Row rule event_time_before_earliest: events before this UTC date (YYYY-MM-DD) are quarantined
    # (a 1970 epoch zero, a 1900 or 0001 default date of the source system).
    earliest_event_date: str = "1990-01-01"
    # Row rules dwell_out_of_range (seconds) and review_too_long (characters): docs/validation.md.
    max_dwell_seconds: float = 14_400.0
    max_review_length: int = 20_000
    # The gate reads, checks and writes the pending partitions in chunks of about this many rows; the
    # Great Expectations suite runs over at most expectation_sample_rows of each (a uniform sample).
    validation_chunk_rows: int = 1_000_000
    expectation_sample_rows: int = 200_000


@dataclass(frozen=True)
class ServingSettings:
    """Copies of the tables for the web team."""
    # PostgreSQL serving copy of the latest tables (RECSYS_SERVING_URL), e.g.
    # postgresql://recsys@db.internal:5432/recsys; empty = off (docs/tables.md, "Serving copy").
    serving_url: str = ""
    # Drop folder of the nightly post-purchase email file (RECSYS_EXPORT_DIR): any path the deployment
    # mounts; the export step writes <export_dir>/email/ds=<ds>/ there; empty = the step does nothing.
    export_dir: str = ""
    # Format of that file: csv, klaviyo, braze or json (docs/privacy.md, "The email export").
    export_format: str = "csv"


@dataclass(frozen=True)
class ABSettings:
    """A/B experiments (docs/ab-testing.md)."""
    # The experiments file (YAML); empty = none.
    experiments_file: str = ""


@dataclass(frozen=True)
class ScaleSettings:
    """Work split and memory bounds (docs/deploy.md)."""
    # User shards of the score step (Airflow maps one task per shard; RECSYS_PUBLISH_SHARDS must be
    # set for the scheduler that parses the DAG too). Every shard becomes visible at publish, together.
    publish_shards: int = 1
    # Users scored per block, and the most floats a dense score block may hold (rows = this / items):
    # memory stays bounded whatever the number of users.
    score_block_users: int = 4096
    score_block_cells: int = 16_777_216
    # The score step builds the lists of this many users at a time (memory of the rules layer).
    score_chunk_users: int = 25_000
    # DuckDB's memory in the features and surfaces steps; beyond it, joins and sorts spill to disk.
    duckdb_memory_limit: str = "2GB"
    # Airflow retries per task (the nightly keeps 2; `recsys airflow-test` sets 0 to fail fast).
    task_retries: int = 2
    # Airflow execution_timeout of every task of both DAGs, in minutes (a hung step fails instead of
    # holding the night): generous, a full-size train or score fits well inside it.
    task_timeout_minutes: int = 240
    # Called with the task context when a task fails for good (after its retries), after the built-in
    # one-line log summary (pipelines.airflow_tasks.on_failure): "module:function"; "" = the log line only.
    failure_callback: str = ""
    # Threads of each step's pools (OpenMP in scikit-learn and implicit, BLAS), applied around every
    # step (pipelines/run.py) and passed to implicit: 0 = the CPUs this process may use
    # (os.sched_getaffinity). Beside other busy processes, give the step its share (docs/benchmarks.md).
    threads: int = 0

    def thread_count(self) -> int:
        """``threads``, or the CPUs this process may use when it is 0."""
        return self.threads if self.threads > 0 else len(os.sched_getaffinity(0))


SECTIONS: Mapping[str, type] = MappingProxyType({
    "features": FeatureSettings, "models": ModelSettings, "evaluation": EvaluationSettings,
    "hybrid": HybridSettings, "ranking": RankingSettings, "surfaces": SurfaceSettings, "gate": GateSettings,
    "validation": ValidationSettings, "serving": ServingSettings, "ab": ABSettings, "scale": ScaleSettings})


@dataclass(frozen=True)
class Config:
    home: Path = Path("var")
    seed: int = 42
    features: FeatureSettings = field(default_factory=FeatureSettings)
    models: ModelSettings = field(default_factory=ModelSettings)
    evaluation: EvaluationSettings = field(default_factory=EvaluationSettings)
    hybrid: HybridSettings = field(default_factory=HybridSettings)
    ranking: RankingSettings = field(default_factory=RankingSettings)
    surfaces: SurfaceSettings = field(default_factory=SurfaceSettings)
    gate: GateSettings = field(default_factory=GateSettings)
    validation: ValidationSettings = field(default_factory=ValidationSettings)
    serving: ServingSettings = field(default_factory=ServingSettings)
    ab: ABSettings = field(default_factory=ABSettings)
    scale: ScaleSettings = field(default_factory=ScaleSettings)

    def replace(self, **flat: Any) -> "Config":
        """A copy with settings changed by their flat names (``top_n=5``), coerced to the field's
        type; ``home`` and ``seed`` are top-level. An unknown name fails, listing the known ones."""
        top = {k: v for k, v in flat.items() if k in ("home", "seed")}
        per_section: dict[str, dict[str, Any]] = {}
        for name, value in flat.items():
            if name in top:
                continue
            section = SECTION_OF.get(name)
            if section is None:
                raise ValueError(f"config: unknown setting {name!r}; known: {sorted(SECTION_OF) + ['home', 'seed']}")
            per_section.setdefault(section, {})[name] = value
        changed = {s: dataclasses.replace(getattr(self, s), **v) for s, v in per_section.items()}
        return dataclasses.replace(self, **top, **changed)

    def flat(self) -> dict[str, Any]:
        """Every setting by its flat name (logged as MLflow params, shown by ``recsys config``)."""
        out: dict[str, Any] = {"home": self.home, "seed": self.seed}
        for section in SECTIONS:
            values = getattr(self, section)
            out.update({f.name: getattr(values, f.name) for f in fields(values)})
        return out


# Flat setting name -> its section (names are unique across sections: checked at import).
SECTION_OF: Mapping[str, str] = MappingProxyType(
    {f.name: section for section, cls in SECTIONS.items() for f in fields(cls)})
assert len(SECTION_OF) == sum(len(fields(c)) for c in SECTIONS.values()), "a setting name is used by two sections"


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


def _yaml_values(yaml_path: str) -> dict[str, Any]:
    """Flat settings from the YAML file: top-level flat keys and keys under a section name."""
    import yaml

    with open(yaml_path, encoding="utf-8") as fh:
        data = yaml.safe_load(fh) or {}
    known = set(SECTION_OF) | {"home", "seed"}
    values: dict[str, Any] = {}
    unknown: list[str] = []
    for key, value in data.items():
        if key in SECTIONS and isinstance(value, Mapping):
            for sub, v in value.items():
                if SECTION_OF.get(sub) == key:
                    values[sub] = v
                else:
                    unknown.append(f"{key}.{sub}")
        elif key in known:
            values[key] = value
        else:
            unknown.append(str(key))
    if unknown:
        raise ValueError(f"config file {yaml_path}: unknown keys {sorted(unknown)}; known keys: {sorted(known)} "
                         f"(flat, or under their section: {', '.join(SECTIONS)})")
    return values


def load_config(environ: Mapping[str, str] | None = None, **overrides: Any) -> Config:
    """Build the Config from defaults, the YAML file in RECSYS_CONFIG, RECSYS_* variables, overrides."""
    env = os.environ if environ is None else environ
    defaults = Config()
    values: dict[str, Any] = {}
    if env.get("RECSYS_CONFIG"):
        values.update(_yaml_values(env["RECSYS_CONFIG"]))
    for name in ("home", "seed", *SECTION_OF):
        key = f"RECSYS_{name.upper()}"
        if key in env:
            values[name] = env[key]
    values.update({k: v for k, v in overrides.items() if v is not None})
    flat_defaults = defaults.flat()
    unknown = sorted(set(values) - set(flat_defaults))
    if unknown:
        raise ValueError(f"config: unknown settings {unknown}; known: {sorted(flat_defaults)}")
    cfg = defaults.replace(**{k: _coerce(k, v, flat_defaults[k]) for k, v in values.items()})
    # The data root is always absolute: Airflow task processes and sqlite URIs need it.
    return cfg.replace(home=cfg.home.expanduser().resolve())
