"""The rules layer as first written: pandas group operations over long rows, one step per rule.
Kept as the test oracle for the rectangular implementation (pipelines.ranking.rules.rerank_lists): two
independent ways to the same lists."""
import numpy as np
import pandas as pd
import scipy.sparse as sp

from pipelines.ranking.rules import Rules


def _first_per_user(df: pd.DataFrame, n: int | np.ndarray) -> pd.DataFrame:
    pos = df.groupby("user_idx", sort=False).cumcount().to_numpy()
    limit = n if np.isscalar(n) else np.asarray(n)[df["user_idx"].to_numpy()]
    return df[pos < limit]


def rerank_personal_pandas(cands: pd.DataFrame, *, surface: str, rules: Rules, flags: pd.DataFrame, category: np.ndarray,
                    bought: sp.csr_matrix, user_categories: sp.csr_matrix, top_n: int,
                    fresh: pd.DataFrame, fresh_slots: int, discovery_pool: np.ndarray, backfill: pd.DataFrame,
                    item_index: dict[str, int], exclude_owned: sp.csr_matrix | None) -> pd.DataFrame:
    """Apply the rules to one surface.

    ``cands``: user_idx, item_idx, source, in each user's candidate order (best first).
    ``category``: category code per item; ``user_categories``: users x category codes (interaction weight).
    ``fresh``: brand-new item candidates (user_idx, item_idx, source), best first.
    ``discovery_pool``: item indices (best sellers, best first) for discovery slots.
    ``backfill``: user_idx, item_idx, source: best sellers of the user's country, then overall.
    ``exclude_owned``: users x items of items that may never appear (new_for_you: all interacted items).
    Returns user_idx, rank (1..), item_idx, utility, source (the caller turns sources into reasons).
    """
    avail, repeatable = flags["available"].to_numpy(), flags["repeatable"].to_numpy()

    def allowed(df: pd.DataFrame) -> pd.DataFrame:
        df = df.astype({"user_idx": np.int64, "item_idx": np.int64})
        u, i = df["user_idx"].to_numpy(), df["item_idx"].to_numpy()
        ok = avail[i]
        if len(df):
            owned = np.asarray(bought[u, i]).ravel() > 0
            ok &= ~owned | repeatable[i]
            if exclude_owned is not None:
                ok &= ~(np.asarray(exclude_owned[u, i]).ravel() > 0)
        return df[ok]

    df = allowed(cands).copy()
    df["pos"] = df.groupby("user_idx", sort=False).cumcount() + 1
    boost = 1 + rules.margin_weight * flags["margin"].to_numpy()[df["item_idx"]] \
        + rules.promotion_weight * flags["promotion"].to_numpy()[df["item_idx"]]
    boost = boost * flags["review_factor"].to_numpy()[df["item_idx"]]  # the review rule's demotion (1: none)
    df["utility"] = 1.0 / np.log2(df["pos"].to_numpy() + 1.0) * boost
    df = df.sort_values(["user_idx", "utility", "pos"], ascending=[True, False, True], kind="stable")
    # Diversity: at most max_category_share of the list from one category.
    cap = max(1, int(np.floor(rules.max_category_share * top_n)))
    df["category"] = category[df["item_idx"].to_numpy()]
    df = df[df.groupby(["user_idx", "category"], sort=False).cumcount() < cap]
    n_fresh = fresh_slots if len(fresh) else 0
    n_disc = int(round(rules.discovery_share * top_n))
    n_pins = len([p for p in rules.pinned if surface in p.get("surfaces", [surface])])
    head_n = max(1, top_n - n_fresh - n_disc - n_pins)
    head = _first_per_user(df, head_n)
    parts = [head.assign(tier=0)]
    if len(fresh):
        parts.append(allowed(fresh).assign(tier=1, utility=0.0))
    if n_disc and len(discovery_pool):
        # Best sellers from categories the user never interacted with (users with no history: none).
        has_history = np.diff(user_categories.indptr) > 0
        present = np.unique(np.concatenate([cands["user_idx"].to_numpy(np.int64),
                                            backfill["user_idx"].to_numpy(np.int64)]))
        users = present[has_history[present]]
        pool_code = category[discovery_pool]
        uu = np.repeat(users, len(discovery_pool))
        ii = np.tile(discovery_pool, len(users))
        seen = np.asarray(user_categories[uu, np.tile(pool_code, len(users))]).ravel() > 0
        disc = pd.DataFrame({"user_idx": uu[~seen], "item_idx": ii[~seen]})
        disc = disc.assign(source="discovery", tier=2, utility=0.0)
        parts.append(allowed(disc))
    out = pd.concat(parts, ignore_index=True)
    out = out.drop_duplicates(["user_idx", "item_idx"], keep="first")
    out["category"] = category[out["item_idx"].to_numpy()]
    # Discovery items beyond n_disc and fresh items beyond their slots are not needed.
    tier_pos = out.groupby(["user_idx", "tier"], sort=False).cumcount().to_numpy()
    tier = out["tier"].to_numpy()
    out = out[(tier == 0) | ((tier == 1) & (tier_pos < max(n_fresh, 0))) | ((tier == 2) & (tier_pos < n_disc))]
    # Backfill up to min_items from best sellers (country, then overall).
    want = min(rules.min_items, top_n)
    # The candidates beyond the head come first, then best sellers (both "tier 3": backfill).
    rest = df.drop(index=head.index).assign(tier=3)
    back = allowed(backfill).assign(tier=3, utility=0.0)
    back["category"] = category[back["item_idx"].to_numpy()]
    out = pd.concat([out, rest, back], ignore_index=True).drop_duplicates(["user_idx", "item_idx"], keep="first")
    out = out.sort_values(["user_idx", "tier"], kind="stable")
    # The category cap over the whole list; capped-out items are a last resort (tier 4) so that
    # min_items wins over diversity when a catalog has too few categories.
    over = out.groupby(["user_idx", "category"], sort=False).cumcount().to_numpy() >= cap
    out = out.assign(tier=np.where(over, 4, out["tier"].to_numpy())).sort_values(["user_idx", "tier"], kind="stable")
    pos = out.groupby("user_idx", sort=False).cumcount().to_numpy()
    out = out[(out["tier"].to_numpy() < 3) | (pos < want)]
    # Pinned items at their positions (moved there if already in the list).
    for p in rules.pinned:
        if surface not in p.get("surfaces", [surface]) or str(p["item_id"]) not in item_index:
            continue
        item = item_index[str(p["item_id"])]
        if not avail[item]:
            continue
        users = out["user_idx"].unique()
        out = out[out["item_idx"] != item]
        out = out.assign(order=out.groupby("user_idx", sort=False).cumcount() + 1.0)
        pin = pd.DataFrame({"user_idx": users, "item_idx": item, "source": "pinned",
                            "tier": -1, "utility": 0.0, "order": float(p["position"]) - 0.5})
        out = pd.concat([out, allowed(pin)], ignore_index=True).sort_values(["user_idx", "order"], kind="stable")
        out = out.drop(columns="order")
    out = _first_per_user(out, top_n)
    out = out.assign(rank=out.groupby("user_idx", sort=False).cumcount() + 1)
    return out[["user_idx", "rank", "item_idx", "utility", "source"]].reset_index(drop=True)
