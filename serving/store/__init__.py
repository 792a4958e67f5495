"""One store of predictions and feedback for all replicas: SQLite by default, PostgreSQL
when DATABASE_URL is set (docs/monitoring.md)."""

from serving.store.config import StoreConfig
from serving.store.database import StoreError
from serving.store.records import FeedbackOutcome, PredictionRecord, Window
from serving.store.store import LabelConflict, Store, UnknownPrediction

__all__ = [
    "FeedbackOutcome",
    "LabelConflict",
    "PredictionRecord",
    "Store",
    "StoreConfig",
    "StoreError",
    "UnknownPrediction",
    "Window",
]
