"""The sequence transformer (models/sasrec.py) and the user sequences it reads (features/sequences.py),
on planted data whose right answers are known."""
import numpy as np
import pytest
import scipy.sparse as sp

from features.sequences import KINDS, PURCHASE, UserSequences, build_sequences, from_daily
from models import load_model
from models.registry import fit_model
from models.sasrec import SASRec, baskets, gap_buckets

SMALL = dict(factors=32, layers=1, heads=2, max_len=12, dropout=0.0, learning_rate=0.01, epochs=40,
             batch_size=64, patience=0, validation_fraction=0.0, device="cpu", random_state=3)


def test_build_sequences_sorts_by_time_and_keeps_the_newest():
    # user 0: events at t=5, 1, 3 (items 10, 11, 12); user 2: two events at the same time (given order kept)
    seq = build_sequences(user_idx=[0, 0, 2, 0, 2], item_idx=[10, 11, 20, 12, 21], kinds=[0, 2, 1, 3, 2],
                          times=[5, 1, 9, 3, 9], n_users=3, max_events=2)
    assert seq.indptr.tolist() == [0, 2, 2, 4]  # user 0 keeps its 2 newest of 3; user 1 has none
    assert seq.items.tolist() == [12, 10, 20, 21]  # t=3, t=5; then the tie in the given order
    assert seq.kinds.tolist() == [3, 0, 1, 2]
    assert seq.times.tolist() == [3, 5, 9, 9]


def test_from_daily_marks_purchase_days_and_orders_by_day(tmp_path):
    seq = from_daily(user_idx=[1, 1, 0], item_idx=[4, 3, 7], day=[20, 10, 15], purchases=[0, 2, 1], n_users=2)
    assert seq.indptr.tolist() == [0, 1, 3]
    assert seq.items.tolist() == [7, 3, 4]
    assert seq.kinds.tolist() == [PURCHASE, PURCHASE, KINDS["view"]]
    assert seq.times.tolist() == [15 * 86400, 10 * 86400, 20 * 86400]
    again = UserSequences.load(seq.save(tmp_path / "s.npz"))
    assert again.items.tolist() == seq.items.tolist() and again.indptr.tolist() == seq.indptr.tolist()


def test_gap_buckets_are_log2_minutes_and_restart_per_user():
    indptr = np.array([0, 3, 5])
    times = np.array([0, 60, 60 + 7 * 60, 10_000, 10_000 + 60 * 1023])
    # gaps in minutes: -, 1, 7 | -, 1023 -> 1 + floor(log2(1 + m)): 1, 2, 4 | 1, 11
    assert gap_buckets(times, indptr).tolist() == [1, 2, 4, 1, 11]


def cycle_data(n_users: int, n_items: int, seed: int):
    """Each user walks the items in a fixed order (item k is followed by item k + 1, modulo n_items),
    from a random start, 4 to 10 purchases; the next item after each user's walk is held out."""
    rng = np.random.default_rng(seed)
    u, i, t, nxt = [], [], [], []
    for user in range(n_users):
        start, length = rng.integers(n_items), rng.integers(4, 11)
        for j in range(length):
            u.append(user)
            i.append((start + j) % n_items)
            t.append(user * 86_400 + j * 300)
        nxt.append((start + length) % n_items)
    seq = build_sequences(u, i, np.full(len(u), PURCHASE), t, n_users)
    x = sp.csr_matrix((np.ones(len(u), np.float32), (u, i)), shape=(n_users, n_items))
    x.sum_duplicates()
    return x, seq, np.array(nxt)


def test_learns_a_deterministic_item_order_to_hit_rate_at_1_of_090():
    x, seq, nxt = cycle_data(300, 20, seed=0)
    model = fit_model(SASRec(**SMALL), x, None, seq)
    top, _ = model.recommend(np.arange(300), x, 1, exclude=x)
    # The held-out next item of every walk: never in the user's training sequence.
    assert (top[:, 0] == nxt).mean() >= 0.9


def test_early_stopping_holds_out_each_validation_users_last_purchase():
    x, seq, _ = cycle_data(200, 15, seed=1)
    model = SASRec(**{**SMALL, "validation_fraction": 0.5, "patience": 2, "epochs": 30}).fit(x, None, sequences=seq)
    s = model.fit_summary_
    assert s["best_score"] is not None and s["best_score"] > 0.9  # AUC of the held-out purchase
    assert s["stopped_by"] in ("patience", "epochs") and 1 <= s["best_epoch"] <= s["epochs"]


def test_deterministic_on_cpu_and_serves_without_torch_after_load(tmp_path):
    x, seq, _ = cycle_data(60, 10, seed=2)
    params = {**SMALL, "epochs": 5}
    a = SASRec(**params).fit(x, None, sequences=seq)
    b = SASRec(**params).fit(x, None, sequences=seq)
    np.testing.assert_array_equal(a.user_factors_, b.user_factors_)
    loaded = load_model(a.save(tmp_path / "m"))
    assert loaded.net_ is None  # the encoder stays as arrays until asked for
    np.testing.assert_array_equal(loaded.recommend(np.arange(60), x, 5)[0], a.recommend(np.arange(60), x, 5)[0])
    enc = loaded.encoder()  # rebuilt from the saved weights: the same item embeddings
    np.testing.assert_allclose(enc["item"].weight[1:].detach().numpy(), a.item_factors_)


def test_refuses_a_fit_without_sequences_or_with_other_users():
    x, seq, _ = cycle_data(10, 5, seed=3)
    with pytest.raises(ValueError, match="needs each user's events in time order"):
        SASRec(**SMALL).fit(x, None)
    with pytest.raises(ValueError, match="sequences cover 10 users, the matrix has 11 rows"):
        SASRec(**SMALL).fit(sp.vstack([x, sp.csr_matrix((1, 5))]).tocsr(), None, sequences=seq)


def test_baskets_group_an_orders_lines_and_point_to_what_comes_next():
    # user 0: t=10 (items 1, 2), t=20 (3), t=50 (4, 5); user 1: t=5 (6)
    seq = build_sequences([0, 0, 0, 0, 0, 1], [1, 2, 3, 4, 5, 6], [PURCHASE] * 6, [10, 10, 20, 50, 50, 5], 2)
    first, nxt, length = baskets(seq, "next_basket")
    assert first.tolist() == [0, 0, 2, 3, 3, 5]
    assert nxt[length > 0].tolist() == [2, 2, 3] and length.tolist() == [1, 1, 2, 0, 0, 0]
    _, nxt, length = baskets(seq, "next_basket", horizon_s=40)  # t=10 reaches t=50, t=20 too
    assert length.tolist() == [3, 3, 2, 0, 0, 0]
    _, nxt, length = baskets(seq, "next_event")
    assert nxt[length > 0].tolist() == [1, 2, 3, 4] and length.tolist() == [1, 1, 1, 1, 0, 0]


def test_next_basket_target_learns_which_order_follows():
    """Orders of two lines, in a random line order: pair k = items (2k, 2k + 1) is always followed
    by pair k + 1 (modulo 10). Each user's next order is held out: its two items are the top 2."""
    rng = np.random.default_rng(4)
    u, i, t, nxt = [], [], [], []
    for user in range(300):
        start, orders = rng.integers(10), rng.integers(2, 5)
        for j in range(orders):
            pair = (start + j) % 10
            for item in rng.permutation([2 * pair, 2 * pair + 1]):
                u.append(user)
                i.append(item)
                t.append(user * 86_400 + j * 3600)
        nxt.append({2 * ((start + orders) % 10), 2 * ((start + orders) % 10) + 1})
    seq = build_sequences(u, i, np.full(len(u), PURCHASE), t, 300)
    x = sp.csr_matrix((np.ones(len(u), np.float32), (u, i)), shape=(300, 20))
    x.sum_duplicates()
    model = SASRec(**{**SMALL, "target": "next_basket"}).fit(x, None, sequences=seq)
    top, _ = model.recommend(np.arange(300), x, 2, exclude=x)
    assert np.mean([set(row) == want for row, want in zip(top.tolist(), nxt)]) >= 0.9


def test_user_time_order_equals_lexsort_with_ties_and_wide_spans():
    """The packed stable sort (and its lexsort fallback when user x time span passes 62 bits) orders
    by user, then time, ties in the given order: numpy's lexsort, computed independently."""
    from features.sequences import user_time_order

    rng = np.random.default_rng(5)
    for users, lo, hi in [(40, 0, 30), (3, -10**6, 10**6), (2 ** 20, 0, 2 ** 50)]:
        u, t = rng.integers(0, users, 5000), rng.integers(lo, hi, 5000)
        np.testing.assert_array_equal(user_time_order(u, t), np.lexsort((np.arange(5000), t, u)))
    assert user_time_order(np.zeros(0, np.int64), np.zeros(0, np.int64)).tolist() == []


def test_query_codes_are_the_month_and_log2_hours_since_the_last_event():
    from models.sasrec import query_codes

    # 2025-12-03 00:00 UTC and 2025-06-01 12:00 UTC; last events 0 h, 1 h, 7 h and 1023 h before.
    dec, jun = 1_764_720_000, 1_748_779_200
    month, gap = query_codes(np.array([dec, dec, jun, jun]), np.array([dec, dec - 3600, jun - 7 * 3600,
                                                                       jun - 1023 * 3600]))
    assert month.tolist() == [12, 12, 6, 6]
    assert gap.tolist() == [1, 2, 4, 11]  # 1 + floor(log2(1 + hours))


def seasonal_data(now_month: int):
    """Shoppers who buy item 0 and, two days later, item 1 in December and item 2 in June (items 3-9:
    other purchases, never after item 0); 100 more shoppers whose only purchase is item 0, three
    days before the data's newest event, in month ``now_month``. Their next item is 1 in December,
    2 in June: only the time asked about tells which."""
    day, u, i, t = 86_400, [], [], []
    dec, jun = 1_733_011_200, 1_748_736_000  # 2024-12-01 and 2025-06-01, 00:00 UTC
    rng = np.random.default_rng(6)
    for user in range(200):
        start = (dec if user % 2 else jun) + int(rng.integers(0, 20)) * 3600
        filler = int(rng.integers(3, 10))
        u += [user] * 3
        i += [filler, 0, 1 if user % 2 else 2]
        t += [start - 5 * day, start, start + 2 * day]
    now = (1_764_547_200 if now_month == 12 else jun) + 20 * day  # 2025-12-21 or 2025-06-21: after all
    for user in range(200, 300):
        u.append(user)
        i.append(0)
        t.append(now - 3 * day)
    u.append(0)  # the data's newest event: the time the lists are asked for
    i.append(5)
    t.append(now)
    seq = build_sequences(u, i, np.full(len(u), PURCHASE), t, 300)
    x = sp.csr_matrix((np.ones(len(u), np.float32), (u, i)), shape=(300, 10))
    x.sum_duplicates()
    return x, seq


@pytest.mark.parametrize("now_month, want", [(12, 1), (6, 2)])
def test_query_time_learns_what_follows_by_the_month_asked_about(now_month, want):
    x, seq = seasonal_data(now_month)
    model = SASRec(**{**SMALL, "epochs": 60}).fit(x, None, sequences=seq)
    top, _ = model.recommend(np.arange(200, 300), x, 1, exclude=x)
    assert (top[:, 0] == want).mean() >= 0.9
