"""Users with no usable history get what shoppers of their country buy, then global best sellers."""
import dataclasses

import duckdb
import pandas as pd

from pipelines.config import load_config
from pipelines.importers import land_frames
from pipelines.run import run_all
from tests.conftest import events_frame


def test_empty_history_users_get_their_countrys_favourites(tmp_path):
    cfg = dataclasses.replace(load_config(environ={}, home=tmp_path / "var"), top_n=3, eval_k=3,
                              candidates=("popularity", "buy_again"), search_budget_seconds=0,
                              similar_items_n=2, max_quarantine_share=1.0)
    rows = []
    # Ten GB shoppers buy item G over 20 days; three FR shoppers buy item F.
    for d in range(1, 21):
        rows += [(f"gb{k}", "G", "purchase", f"2024-05-{d:02d} 10:0{k}", 1, 1.0, f"g{d}{k}") for k in range(10) if (d + k) % 3 == 0]
        rows += [(f"fr{k}", "F", "purchase", f"2024-05-{d:02d} 11:0{k}", 1, 1.0, f"f{d}{k}") for k in range(3) if (d + k) % 3 == 0]
    # A French shopper who bought item X and returned it: an empty row, no usable history.
    rows += [("fr_new", "X", "purchase", "2024-05-20 12:00", 1, 1.0, "x1"), ("fr_new", "X", "return", "2024-05-20 13:00", 1, 1.0, "x2")]
    users = pd.DataFrame({"user_id": [f"gb{k}" for k in range(10)] + [f"fr{k}" for k in range(3)] + ["fr_new"],
                          "country": ["GB"] * 10 + ["FR"] * 4})
    items = pd.DataFrame({"item_id": ["G", "F", "X", "Z"], "title": ["g", "f", "x", "z"]})
    land_frames(cfg, "b1", events_frame(rows), items, users)
    run_all(cfg, "2024-05-20", "r1")
    con = duckdb.connect(str(cfg.duckdb_path), read_only=True)
    got = con.execute("SELECT surface, rank, item_id, model FROM user_recommendations WHERE user_id = 'fr_new' "
                      "ORDER BY surface, rank").fetchall()
    gb = con.execute("SELECT item_id FROM user_recommendations WHERE user_id = 'gb1' AND surface = 'new_for_you' "
                     "AND rank = 1").fetchall()
    con.close()
    for_you = [r for r in got if r[0] == "for_you"]
    # F is what French shoppers buy (3 buyers), though G has more buyers overall (10).
    assert for_you[0][2:] == ("F", "popular_in_country")
    assert for_you[1][2:] == ("G", "popularity")
    assert gb == [("F",)]  # a GB shopper who has G gets F next: nobody else in GB buys anything else
