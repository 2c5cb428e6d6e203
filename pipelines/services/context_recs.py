"""``recsys context-recs``: what to show a visitor without history, from the context of the visit
(channel, landing page, device, country), combining the published ``context_defaults`` lists.

Each given value whose list is published contributes its list with scores divided by the list's
top score (its rank 1 counts 1, so no context outweighs another by the size of its traffic); an
item's score is the sum over the contexts, its reason that of the context contributing most
(ties: the earlier of channel, landing page, device, country). A value with no published list
(unknown, or never seen in the window) contributes nothing and is named back to the caller; when
no value is known the answer is the overall list (context ``all``). The overall list then fills
the answer up to ``n`` (score 0, reason its own). Read-only, from the newest published ds.
"""
from __future__ import annotations

import pandas as pd

from pipelines.config import Config
from pipelines.ranking.context_tables import ALL, CONTEXTS, normalise
from pipelines.services.serving import ServingError, _connect, _require


def context_recs(cfg: Config, contexts: dict[str, str | None], n: int = 10) -> tuple[pd.DataFrame, list[str]]:
    """(rank, item_id, score, reason of the top ``n``; the given ``context=value`` pairs without a
    published list). ``contexts``: context name (CONTEXTS) -> value, None for not given."""
    bad = sorted(set(contexts) - set(CONTEXTS))
    if bad:
        raise ServingError(f"context-recs: unknown context(s) {bad}; known: {list(CONTEXTS)}")
    given = [(k, v) for k, v in zip(contexts, normalise(pd.Series(list(contexts.values()), dtype="object")))
             if isinstance(v, str)]
    con = _connect(cfg)
    try:
        _require(con, "latest_context_defaults")
        lists = set(con.execute("SELECT DISTINCT context, value FROM latest_context_defaults").fetchall())
        known = [kv for kv in given if kv in lists]
        unknown = [f"{k}={v}" for k, v in given if (k, v) not in lists]
        use = known or [(ALL, ALL)]
        con.register("given", pd.DataFrame({"context": [k for k, _ in use], "value": [v for _, v in use],
                                            "ord": range(len(use))}))
        df = con.execute("""
            WITH s AS (SELECT d.item_id, d.score / max(d.score) OVER (PARTITION BY d.context, d.value) AS s,
                              d.reason, g.ord
                       FROM latest_context_defaults d JOIN given g USING (context, value)),
                 c AS (SELECT item_id, sum(s) AS score, first(reason ORDER BY s DESC, ord) AS reason, 0 AS tier,
                              0 AS pos FROM s GROUP BY item_id),
                 f AS (SELECT item_id, 0.0 AS score, reason, 1 AS tier, rank AS pos FROM latest_context_defaults
                       WHERE context = 'all' AND item_id NOT IN (SELECT item_id FROM c))
            SELECT item_id, score, reason FROM (SELECT * FROM c UNION ALL SELECT * FROM f)
            ORDER BY tier, score DESC, pos, item_id LIMIT ?""", [n]).df()
    finally:
        con.close()
    df.insert(0, "rank", range(1, len(df) + 1))
    return df, unknown
