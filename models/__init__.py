"""Recommenders behind one contract (models.base.Recommender) and the registry of candidates."""
from models.base import Recommender, load_model
from models.popularity import PopularityRecommender, TrendingRecommender
from models.als import ALSRecommender
from models.itemknn import ItemKNNRecommender
from models.content import ContentRecommender
from models.buy_again import BuyAgainRecommender
from models.ease import EASERecommender
from models.bpr import BPRRecommender

REGISTRY: dict[str, type[Recommender]] = {
    m.name: m for m in (PopularityRecommender, TrendingRecommender, BuyAgainRecommender, ALSRecommender, BPRRecommender,
                        ItemKNNRecommender, EASERecommender, ContentRecommender)
}

__all__ = ["Recommender", "REGISTRY", "load_model"]
