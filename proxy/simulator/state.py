"""The simulator's shared state, guarded by one condition so test threads can watch it change."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from proxy.simulator.catalogue import Catalogue
from proxy.simulator.controls import Faults, Settings
from proxy.simulator.files import FileStore
from proxy.simulator.models import ModelSpec
from proxy.simulator.records import PredictionRecord


class SimState:
    """Catalogue, knobs and prediction records; every mutation notifies `wait_for` waiters."""

    def __init__(
        self,
        models: Iterable[ModelSpec],
        settings: Settings,
        faults: Mapping[str | None, Faults] | None = None,
    ) -> None:
        self._cond = threading.Condition()
        self.catalogue = Catalogue(models, lock=self._cond)
        self.files = FileStore()
        self._settings = settings
        self._model_settings: dict[str, dict[str, Any]] = {}
        self._faults: dict[str | None, Faults] = dict(faults or {})
        self._records: list[PredictionRecord] = []
        self._ids = itertools.count(1)

    @contextmanager
    def changing(self) -> Iterator[None]:
        """Hold the lock for a mutation, then wake every waiter."""
        with self._cond:
            yield
            self._cond.notify_all()

    def new_record(self, model: str, history: list[dict[str, Any]], config: dict[str, Any]) -> PredictionRecord:
        with self.changing():
            record = PredictionRecord(id=next(self._ids), model=model, history=history, config=config)
            self._records.append(record)
            return record

    def predictions(self) -> list[dict[str, Any]]:
        with self._cond:
            return [r.as_dict() for r in self._records]

    def clear(self) -> None:
        with self.changing():
            self._records.clear()

    def wait_for(self, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float) -> list[dict[str, Any]]:
        """Block until `predicate(predictions)` is true; raise TimeoutError after `timeout` seconds."""
        with self._cond:
            ok = self._cond.wait_for(lambda: predicate([r.as_dict() for r in self._records]), timeout)
            snapshot = [r.as_dict() for r in self._records]
        if not ok:
            raise TimeoutError(f"simulator condition not met within {timeout}s; predictions: {snapshot}")
        return snapshot

    def faults_for(self, model: str | None) -> Faults:
        """A model's own faults if set, else the global ones."""
        with self._cond:
            if model is not None and model in self._faults:
                return self._faults[model]
            return self._faults.get(None, Faults())

    def refusing(self) -> bool:
        """Connections are not per model: `refuse_connections` in any scope refuses them all."""
        with self._cond:
            return any(f.refuse_connections for f in self._faults.values())

    def set_faults(self, model: str | None, faults: Faults) -> None:
        """Replace the faults of one model (or the global ones when `model` is None)."""
        with self.changing():
            if faults == Faults():
                self._faults.pop(model, None)
            else:
                self._faults[model] = faults

    def all_faults(self) -> dict[str, Any]:
        with self._cond:
            return {"*" if k is None else k: v.as_dict() for k, v in self._faults.items()}

    def settings_for(self, model: str | None) -> Settings:
        with self._cond:
            overrides = self._model_settings.get(model, {}) if model is not None else {}
            return self._settings.updated(overrides)

    def set_settings(self, model: str | None, changes: Mapping[str, Any]) -> None:
        """Update timing globally, or override it for one model."""
        with self.changing():
            validated = self._settings.updated(changes)  # raises on unknown keys or bad values
            if model is None:
                self._settings = validated
            else:
                merged = {**self._model_settings.get(model, {}), **changes}
                self._model_settings[model] = {k: v for k, v in merged.items() if v is not None}

    def all_settings(self) -> dict[str, Any]:
        with self._cond:
            return {"*": self._settings.as_dict(), **self._model_settings}

    def models(self) -> list[dict[str, Any]]:
        with self._cond:
            return self.catalogue.summary()
