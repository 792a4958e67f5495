"""Everything one app holds, built once by create_app; routes get its parts as dependencies."""

from __future__ import annotations

import asyncio

from serving.clients import Clients
from serving.inference.engine import Engine
from serving.inference.predictor import Predictor
from serving.lineage import Lineage, read_lineage
from serving.prometheus_metrics import ServiceMetrics
from serving.recording import Recorder
from serving.settings import Settings
from serving.shadowing import Shadow, ShadowError
from serving.stats import Stats
from serving.tokens import FeedbackSigner


class AppState:
    """Settings, clients, metrics, the inference engine, the predictor, the recorder, stats,
    the shadow challenger and the registry record."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.clients = Clients(settings)
        self.signer = FeedbackSigner(settings.feedback_secret)
        # /explain runs ~50 inferences: a few at once would starve /predict.
        self.explain_slots = asyncio.Semaphore(settings.explain_max_concurrent)
        self.metrics = ServiceMetrics()
        self.engine = Engine(settings, self.metrics.observe_batch, self.metrics.stage_cpu)
        self.stats = Stats(self.metrics)
        self.recorder = Recorder(settings, self.metrics.registry, self.metrics.stage_cpu)
        self.shadow = Shadow(settings, self.metrics, self.recorder.store)
        self.predictor = Predictor(
            self.engine, self.recorder, on_prediction=self.stats.add, on_photo=self.shadow.offer
        )
        self.lineage = Lineage()

    async def start(self) -> None:
        await self.engine.start()
        model = self.engine.model
        if model is None:
            return
        self.stats.reset(model.classes)
        await asyncio.to_thread(self.recorder.open, model.classes)
        try:
            await asyncio.to_thread(self.shadow.start, model)
        except ShadowError as exc:  # a misconfigured challenger: not ready, saying why
            self.engine.refuse(str(exc))
            return
        m = model.manifest
        self.lineage = read_lineage(self.settings.model_dir, m.version)
        self.metrics.model_info.labels(
            version=m.version, name=m.name, data_version=m.data_version or "",
            git_revision=m.git_revision or "", **self.lineage.labels(),
        ).set(1)  # fmt: skip

    async def stop(self) -> None:
        self.engine.begin_drain()
        await self.engine.stop()
        await asyncio.to_thread(self.shadow.stop)
        await asyncio.to_thread(self.recorder.close)
