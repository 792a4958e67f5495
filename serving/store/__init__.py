"""One store of predictions and feedback for all replicas: SQLite by default, PostgreSQL
when DATABASE_URL is set (docs/monitoring.md).

This package's names are its public interface: the service writes through `Store`, and
readers outside the service (the monitoring report) read through `read_predictions`,
which never creates or migrates anything. The modules below it are private.
"""

from serving.store.config import StoreConfig
from serving.store.database import StoreError
from serving.store.reader import (
    LabelledPrediction,
    ShadowPair,
    TimeRange,
    read_predictions,
    read_shadow,
)
from serving.store.records import FeedbackOutcome, PredictionRecord, RecentWindow, ShadowRecord
from serving.store.store import LabelConflict, Store, UnknownPrediction

__all__ = [
    "FeedbackOutcome",
    "LabelConflict",
    "LabelledPrediction",
    "PredictionRecord",
    "RecentWindow",
    "ShadowPair",
    "ShadowRecord",
    "Store",
    "StoreConfig",
    "StoreError",
    "TimeRange",
    "UnknownPrediction",
    "read_predictions",
    "read_shadow",
]
