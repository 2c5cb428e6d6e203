"""The deep models' settings (PyTorch: models/lightgcn.py, models/two_tower.py, models/sasrec.py), a
part of the ``models`` section (pipelines.config.ModelSettings inherits them): each is
``<model>_<parameter>``, the constructor parameter of the registered model, as every model's."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DeepModelSettings:
    # LightGCN (models/lightgcn.py, PyTorch; not a default candidate: add "lightgcn" to candidates).
    # Training stops at lightgcn_epochs, after lightgcn_budget_seconds, or after lightgcn_patience
    # epochs without a better validation score; above lightgcn_max_interactions it trains on a
    # random sample of whole users. Device: "auto" (CUDA when available), "cpu" or "cuda".
    lightgcn_factors: int = 64
    lightgcn_layers: int = 3
    lightgcn_learning_rate: float = 0.005
    lightgcn_regularization: float = 3e-3
    lightgcn_epochs: int = 50
    lightgcn_batch_size: int = 4096
    lightgcn_budget_seconds: float = 600.0
    lightgcn_patience: int = 5
    lightgcn_validation_fraction: float = 0.1
    lightgcn_max_interactions: int = 2_000_000
    # "softmax" (over every item up to lightgcn_full_softmax_items, else over lightgcn_negatives
    # random items) or "bpr" (the paper's pairwise loss; slower to converge).
    lightgcn_loss: str = "softmax"
    lightgcn_full_softmax_items: int = 20_000
    lightgcn_negatives: int = 2048
    # The early-stopping score on the validation share: "auc" or "dcg" (models.deep.validation_auc).
    lightgcn_validation_metric: str = "auc"
    # E_0's start: "svd" (the truncated SVD of the binary matrix, entries' RMS lightgcn_init_scale)
    # or "random" (N(0, 0.1), the paper's).
    lightgcn_init: str = "svd"
    lightgcn_init_scale: float = 0.1
    lightgcn_device: str = "auto"
    # Two-tower retrieval (models/two_tower.py, PyTorch; not a default candidate: add "two_tower" to
    # candidates). Same stopping rules, sample and device as LightGCN; items without interactions
    # are embedded from their content (TF-IDF settings as content_*).
    two_tower_factors: int = 64
    two_tower_learning_rate: float = 0.005
    two_tower_epochs: int = 30
    two_tower_batch_size: int = 1024
    two_tower_temperature: float = 0.1
    two_tower_id_dropout: float = 0.5
    two_tower_budget_seconds: float = 600.0
    two_tower_patience: int = 3
    two_tower_validation_fraction: float = 0.1
    two_tower_max_interactions: int = 2_000_000
    two_tower_min_df: int = 1
    two_tower_ngram_max: int = 1
    two_tower_max_features: int = 20_000
    # logQ correction of the in-batch softmax (popular items are over-represented as negatives).
    two_tower_logq: bool = True
    # The user tower also reads the user's country and stated interests (the features' users table).
    two_tower_user_features: bool = True
    # Up to this many items the softmax runs over the whole catalog (one item-tower pass per batch;
    # the user's other items left out) instead of the batch's items; above it, in-batch with logQ.
    two_tower_full_softmax_items: int = 20_000
    # A learned bias per item added to the logits (served as an extra factor column).
    two_tower_item_bias: bool = True
    # A fit that starts from an earlier fit with the same settings (the hybrid's next cut-off) runs at
    # most this many epochs, with a patience of 1 (0: always cold).
    two_tower_warm_epochs: int = 1
    # The user tower also reads the month of the year asked about (each training pair's purchase
    # month; served: the month of the data's newest event), from the features' sequences.
    two_tower_query_month: bool = True
    two_tower_validation_metric: str = "auc"
    two_tower_device: str = "auto"
    # SASRec-style sequence transformer (models/sasrec.py, PyTorch; not a default candidate): each
    # user's newest sasrec_max_len events (features sequence_max_events kept per user). Same stopping
    # rules, sample and device as LightGCN; a full softmax up to sasrec_full_softmax_items items,
    # above it sasrec_negatives shared random items per batch.
    sasrec_factors: int = 128
    sasrec_layers: int = 2
    sasrec_heads: int = 2
    sasrec_max_len: int = 50
    sasrec_dropout: float = 0.2
    sasrec_learning_rate: float = 0.005
    sasrec_epochs: int = 40
    sasrec_batch_size: int = 128
    sasrec_budget_seconds: float = 600.0
    sasrec_patience: int = 3
    sasrec_validation_fraction: float = 0.1
    sasrec_max_interactions: int = 2_000_000
    sasrec_full_softmax_items: int = 20_000
    sasrec_negatives: int = 2048
    # What each position learns to predict: "next_event" or "next_basket" (the events of the user's
    # next time), the latter widened to sasrec_horizon_days after the event when > 0.
    sasrec_target: str = "next_event"
    sasrec_horizon_days: float = 0.0
    # Each position's output also reads the time asked about: the target's month of the year and the
    # hours since the user's last event (served: the data's newest event).
    sasrec_query_time: bool = True
    sasrec_device: str = "auto"
