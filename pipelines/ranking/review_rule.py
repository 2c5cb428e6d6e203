"""The rules layer's review rule (issue 17, docs/rules.md): items whose reviews are strongly
negative are demoted in the personal lists, or dropped from every list and table.

An item is *poorly reviewed* when it has at least ``min_reviews`` reviews in the features' window
and their mean sentiment (``sentiment_full``: VADER compound in [-1, 1], features/sentiment.py) is
below ``demote_below``. Its re-ranking utility is multiplied by ``demote_factor`` (0.5 by default:
an item at position 1 then weighs as one at position 3); a factor of 0 drops it instead, like an
out-of-stock item: from the personal lists and from every table that filters on availability (best
sellers, trending, similar items, the email list ...). An item table without review columns, or
items with fewer reviews, get factor 1: no change.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class ReviewRule:
    min_reviews: int = 3
    demote_below: float = -0.5
    demote_factor: float = 0.5


def parse_review_rule(section: dict, source: str, error: type[Exception]) -> ReviewRule:
    """The ``reviews`` section of a rules file, checked; ``error`` (RulesError) names the file and key."""
    try:
        rule = ReviewRule(int(section["min_reviews"]), float(section["demote_below"]), float(section["demote_factor"]))
    except (TypeError, ValueError, KeyError) as exc:
        raise error(f"{source}: invalid value in reviews: {exc}") from exc
    if rule.min_reviews < 1:
        raise error(f"{source}: reviews.min_reviews must be >= 1, got {rule.min_reviews}")
    if not -1 <= rule.demote_below <= 1:
        raise error(f"{source}: reviews.demote_below must be within [-1, 1] (VADER compound), got {rule.demote_below}")
    if not 0 <= rule.demote_factor <= 1:
        raise error(f"{source}: reviews.demote_factor must be within [0, 1] (0 drops), got {rule.demote_factor}")
    return rule


def review_keeps(items: pd.DataFrame, rule: ReviewRule) -> np.ndarray:
    """Per item: False where the rule drops it (a poorly reviewed item with ``demote_factor`` 0)."""
    return review_factor(items, rule) > 0


def review_factor(items: pd.DataFrame, rule: ReviewRule) -> np.ndarray:
    """Per item (aligned with item_idx): ``rule.demote_factor`` for poorly reviewed items, else 1.0."""
    if "review_count_full" not in items or "sentiment_full" not in items:
        return np.ones(len(items))
    n = pd.to_numeric(items["review_count_full"], errors="coerce").fillna(0).to_numpy(float)
    s = pd.to_numeric(items["sentiment_full"], errors="coerce").fillna(0).to_numpy(float)
    return np.where((n >= rule.min_reviews) & (s < rule.demote_below), rule.demote_factor, 1.0)
