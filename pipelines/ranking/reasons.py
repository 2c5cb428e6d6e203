"""Where a published row came from (column ``model``) and why it is shown (column ``reason``), as
named codes instead of positional integers.

* ``Source``: the fixed sources of the personal lists; the night's model names (champion,
  challenger) follow them in ``SourceVocabulary`` (codes from ``len(Source)`` up).
* ``Reason``: the fixed reason texts; "popular in <country>" follows per country code (codes from
  ``POPULAR_IN`` up). A row's reason comes from its source (``SOURCE_REASON``); any other source
  reads "picked for you", or "you buy this regularly" for an item the user already bought.

The score step writes the codes as Arrow dictionary indices into these vocabularies.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np


class Source(IntEnum):
    """A row's source; ``label`` is the text published in column ``model``."""
    HYBRID = 0
    CONTENT_INTERESTS = 1  # content similarity to a new user's stated interests
    POPULAR_IN_COUNTRY = 2
    POPULARITY = 3
    CONTENT_NEW_ITEM = 4  # a brand-new item, by content similarity
    DISCOVERY = 5
    PINNED = 6
    BUY_AGAIN = 7

    @property
    def label(self) -> str:
        return self.name.lower()


class Reason(IntEnum):
    PICKED_FOR_YOU = 0
    BOUGHT_REGULARLY = 1
    MATCHES_INTERESTS = 2
    BEST_SELLER = 3
    NEW_ARRIVAL = 4
    DISCOVERY = 5
    FEATURED = 6


REASON_TEXT = {
    Reason.PICKED_FOR_YOU: "picked for you",
    Reason.BOUGHT_REGULARLY: "you buy this regularly",
    Reason.MATCHES_INTERESTS: "matches your interests",
    Reason.BEST_SELLER: "best seller",
    Reason.NEW_ARRIVAL: "new arrival",
    Reason.DISCOVERY: "discovery: outside your usual categories",
    Reason.FEATURED: "featured",
}
POPULAR_IN = len(Reason)  # reason code of "popular in <country>": POPULAR_IN + the country's code

SOURCE_REASON = {
    Source.CONTENT_INTERESTS: Reason.MATCHES_INTERESTS,
    Source.POPULARITY: Reason.BEST_SELLER,
    Source.CONTENT_NEW_ITEM: Reason.NEW_ARRIVAL,
    Source.DISCOVERY: Reason.DISCOVERY,
    Source.PINNED: Reason.FEATURED,
}


@dataclass(frozen=True)
class SourceVocabulary:
    """The fixed sources, then the night's model names (sorted; ``hybrid`` and ``popularity`` are
    fixed sources already). ``code`` maps a name to its code (a model named like a fixed source
    gets the later code; both print the same text)."""
    names: tuple[str, ...]
    code: dict[str, int]

    @classmethod
    def of(cls, model_names) -> SourceVocabulary:
        fixed = [s.label for s in Source]
        names = fixed + [k for k in sorted(set(model_names))
                         if k not in (Source.HYBRID.label, Source.POPULARITY.label)]
        return cls(tuple(names), {k: i for i, k in enumerate(names)})

    def __getitem__(self, source: Source) -> int:
        return self.code[source.label]

    def reason_of_source(self) -> np.ndarray:
        """Reason code per source code (0, picked for you, where no source-specific reason)."""
        out = np.zeros(len(self.names), np.int32)
        for source, reason in SOURCE_REASON.items():
            out[self[source]] = int(reason)
        return out


def reason_texts(country_names) -> list[str]:
    """The reason vocabulary: the fixed texts by code, then "popular in <country>" per country."""
    return [REASON_TEXT[r] for r in Reason] + [f"popular in {c}" for c in country_names]


def reason_codes(vocab: SourceVocabulary, src: np.ndarray, owned: np.ndarray, users: np.ndarray,
                 country_of_user: np.ndarray) -> np.ndarray:
    """Per row (source code, owned by the user, user index): the reason of its source; an owned item
    with no source-specific reason is bought regularly; a row from the user's country list is
    "popular in" the user's country (``country_of_user``: country code per user index)."""
    reason = vocab.reason_of_source()[src]
    reason = np.where((reason == int(Reason.PICKED_FOR_YOU)) & owned, int(Reason.BOUGHT_REGULARLY), reason)
    in_country = src == vocab[Source.POPULAR_IN_COUNTRY]
    reason[in_country] = POPULAR_IN + country_of_user[users[in_country]]
    return reason
