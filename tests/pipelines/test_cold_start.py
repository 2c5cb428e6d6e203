"""Users with no usable history get what shoppers of their country buy, then global best sellers."""

import duckdb
import pandas as pd

from pipelines.artifacts import layout
from pipelines.config import load_config
from pipelines.run import run_all
from pipelines.services.importers import land_frames
from tests.conftest import events_frame


def test_empty_history_users_get_their_countrys_favourites(tmp_path):
    cfg = load_config(environ={}, home=tmp_path / "var").replace(top_n=3, eval_k=3,
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
    con = duckdb.connect(str(layout(cfg).duckdb_path), read_only=True)
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


def test_new_items_reach_lists_by_content_and_quiz_answers_give_a_new_user_a_content_list(tmp_path):
    # Two kinds of items only: the default category cap (half a list) would hold the new item back.
    rules = tmp_path / "rules.yaml"
    rules.write_text("diversity:\n  max_category_share: 1.0\n")
    cfg = load_config(environ={}, home=tmp_path / "var").replace(top_n=4, eval_k=3,
                              candidates=("popularity", "buy_again"), search_budget_seconds=0,
                              similar_items_n=2, max_quarantine_share=1.0, new_item_slots=1, new_item_days=3,
                              rules_file=str(rules))
    rows = []
    # Gardeners buy garden tools, cooks buy kitchen items, over three weeks (items seen long ago).
    for d in range(1, 21):
        for k in range(4):
            rows.append((f"g{k}", ["G1", "G2"][d % 2], "purchase", f"2024-05-{d:02d} 10:0{k}", 1, 1.0, f"g{d}{k}"))
            rows.append((f"c{k}", ["K1", "K2", "K3"][d % 3], "purchase", f"2024-05-{d:02d} 11:0{k}", 1, 1.0, f"c{d}{k}"))
    items = pd.DataFrame({
        "item_id": ["G1", "G2", "K1", "K2", "K3", "GNEW", "KNEW"],
        "title": ["garden spade", "garden rake", "kitchen pan", "kitchen pot", "kitchen knife",
                  "garden hose", "kitchen whisk"]})
    # A new sign-up with no events who answered the quiz: "I love my garden".
    users = pd.DataFrame({"user_id": ["quiz1"], "country": ["FR"], "interests": ["I love my garden"]})
    land_frames(cfg, "b1", events_frame(rows), items, users)
    run_all(cfg, "2024-05-20", "r1")
    con = duckdb.connect(str(layout(cfg).duckdb_path), read_only=True)
    recs = con.execute("SELECT user_id, surface, rank, item_id, model FROM user_recommendations").df()
    con.close()
    g0 = recs[(recs.user_id == "g0") & (recs.surface == "for_you")].sort_values("rank")
    c0 = recs[(recs.user_id == "c0") & (recs.surface == "new_for_you")].sort_values("rank")
    # GNEW and KNEW were never bought (catalog only): each reaches the last slot of the matching users.
    assert g0.iloc[-1][["item_id", "model"]].tolist() == ["GNEW", "content_new_item"]
    assert c0.iloc[-1][["item_id", "model"]].tolist() == ["KNEW", "content_new_item"]
    assert "GNEW" not in set(g0.item_id.iloc[:-1]) and "KNEW" not in set(g0.item_id)
    quiz = recs[(recs.user_id == "quiz1") & (recs.surface == "for_you")].sort_values("rank")
    # The quiz answer matches the "garden" items only: those come first, by content.
    assert set(quiz.item_id.iloc[:2]) == {"G1", "G2"} and set(quiz.model.iloc[:2]) == {"content_interests"}
