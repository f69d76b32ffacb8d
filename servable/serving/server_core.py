"""ServerCore: the model list, its filesystem source, the manager and version labels.

The equivalent of TF Serving's ``ServerCore``: it turns a list of model configs into a
``FileSystemSource`` feeding an ``AspiredVersionsManager``, keeps the version-label map,
and applies new configs (startup, ``HandleReloadConfigRequest``, config file changes).

Threads: ``apply_config`` is called from the main thread at startup and from a worker
thread on reloads; reloads are serialized by a lock. It returns only when the new
config is in effect: every model of the new list has settled (its aspired versions are
AVAILABLE or have failed) and the labels point at available versions.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

from servable.core.loader import Loader
from servable.core.manager import AspiredVersionsManager
from servable.core.policies import availability_preserving, resource_preserving
from servable.core.states import ManagerState, ServableStateMonitor
from servable.core.status import Code, ServingError, failed_precondition, invalid_argument
from servable.serving.labels import VersionLabels
from servable.sources.filesystem import FileSystemSource, ServableToMonitor

log = logging.getLogger(__name__)

LoaderFactory = Callable[[str, int, str], Loader]


@dataclass
class CoreOptions:
    file_system_poll_wait_seconds: float = 1.0
    file_system_settle_seconds: float = 0.1
    use_file_events: bool = True
    max_num_load_retries: int = 5
    load_retry_interval_s: float = 60.0
    load_timeout_s: float | None = None
    num_load_threads: int = 4
    num_unload_threads: int = 2
    allow_version_labels_for_unavailable_models: bool = False
    resource_preserving: bool = False
    reload_timeout_s: float | None = None


class ServerCore:
    """Owns the source, the manager and the labels for one server process."""

    def __init__(self, options: CoreOptions, loader_factories: Mapping[str, LoaderFactory]) -> None:
        self.options = options
        self.loader_factories = dict(loader_factories)
        self.monitor = ServableStateMonitor()
        self.manager = AspiredVersionsManager(
            policy=resource_preserving if options.resource_preserving else availability_preserving,
            monitor=self.monitor,
            num_load_threads=options.num_load_threads,
            num_unload_threads=options.num_unload_threads,
            max_num_load_retries=options.max_num_load_retries,
            load_retry_interval_s=options.load_retry_interval_s,
            load_timeout_s=options.load_timeout_s,
        )
        self.labels = VersionLabels()
        self._models: dict[str, Any] = {}
        self._apply_lock = threading.Lock()
        self.source = FileSystemSource(
            [],
            loader_factory=self._create_loader,
            poll_wait_seconds=options.file_system_poll_wait_seconds,
            settle_seconds=options.file_system_settle_seconds,
            use_file_events=options.use_file_events,
        )
        self.source.set_aspired_versions_callback(self.manager.aspired_versions_callback)
        self._started = False

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        self.manager.start()
        self.source.start()
        self._started = True

    def stop(self, timeout: float = 30.0) -> None:
        """Stop watching, then unload every version (waiting for in-flight requests)."""
        if self._started:
            self.source.stop()
            self.manager.stop(timeout)
            self._started = False

    @property
    def model_names(self) -> list[str]:
        return list(self._models)

    @property
    def models(self) -> Mapping[str, Any]:
        return dict(self._models)

    def is_ready(self) -> bool:
        """True when every configured model has at least one AVAILABLE version."""
        return all(self.manager.available_versions(name) for name in self._models)

    # -- configuration -----------------------------------------------------------------

    def _create_loader(self, name: str, version: int, path: str) -> Loader:
        model = self._models.get(name)
        platform = (getattr(model, "platform", "") or "tensorflow") if model is not None else "tensorflow"
        factory = self.loader_factories.get(platform)
        if factory is None:
            raise invalid_argument(f"Model {name} requests unsupported platform {platform}")
        return factory(name, version, path)

    def validate(self, models: Sequence[Any]) -> None:
        """Static checks that need no loading (duplicates, platforms)."""
        seen: set[str] = set()
        for model in models:
            if model.name in seen:
                raise invalid_argument(f"Illegal to list model {model.name} multiple times in config list")
            seen.add(model.name)
            platform = getattr(model, "platform", "") or "tensorflow"
            if platform not in self.loader_factories:
                raise invalid_argument(f"Model {model.name} requests unsupported platform {platform}")

    def apply_config(self, models: Sequence[Any], *, timeout: float | None = None) -> None:
        """Make ``models`` the served model list; see the module docstring for when it returns.

        A config refused by validation changes nothing. A config whose labels cannot be
        honoured once its models have loaded is rolled back to the previous list.
        """
        with self._apply_lock:
            self.validate(models)
            previous = self._models
            self._models = {model.name: model for model in models}
            self._update_source(models)
            names = list(self._models)
            wait = timeout if timeout is not None else self.options.reload_timeout_s
            if not self.manager.wait_until_settled(names, wait):
                log.warning("models %s did not settle within %ss", names, wait)
            try:
                new_labels = self._checked_labels(models)
            except ServingError:
                self._models = previous
                self._update_source(list(previous.values()))
                raise
            self.labels.replace(new_labels)
            failed = self._failed_models(names)
            if failed:
                log.warning("%d model(s) did not become available: %s", len(failed), failed)

    def _update_source(self, models: Iterable[Any]) -> None:
        self.source.update_config(
            [ServableToMonitor(m.name, m.base_path, m.version_policy) for m in models]
        )

    def _checked_labels(self, models: Sequence[Any]) -> dict[str, dict[str, int]]:
        """TF Serving's label rules (ServerCore::UpdateModelVersionLabelMap)."""
        current = self.labels.snapshot()
        result: dict[str, dict[str, int]] = {}
        for model in models:
            labels = dict(getattr(model, "version_labels", {}) or {})
            if not labels:
                continue
            available = set(self.manager.available_versions(model.name))
            for label, version in labels.items():
                if version < 0:
                    raise invalid_argument(f"Version label {label} of model {model.name} points at negative version {version}")
                if version in available:
                    continue
                previous = current.get(model.name, {}).get(label)
                is_new = previous is None or previous == version
                if self.options.allow_version_labels_for_unavailable_models and is_new:
                    continue
                raise failed_precondition(
                    f"Request to assign label to version {version} of model {model.name}, "
                    "which is not currently available for inference"
                )
            result[model.name] = labels
        return result

    def _failed_models(self, names: Iterable[str]) -> dict[str, str]:
        failed = {}
        for name in names:
            if self.manager.available_versions(name):
                continue
            for version, state in self.monitor.get_version_states(name).items():
                if state.state == ManagerState.END and state.error is not None:
                    failed[f"{name}:{version}"] = state.error.message
        return failed


def error_code_name(error: ServingError | None) -> str:
    return Code.OK.name if error is None else error.code.name
