"""ServerCore: the model list, its filesystem source, the manager and version labels.

The equivalent of TF Serving's ``ServerCore``: it turns a list of model configs into a
``FileSystemSource`` feeding an ``AspiredVersionsManager``, keeps the version-label map,
and applies new configs (startup, ``HandleReloadConfigRequest``, config file changes).

Threads: ``apply_config`` is called from the main thread at startup and from a worker
thread on reloads; reloads are serialized by a lock. It returns only when the new
config is in effect: every model of the new list has settled (its aspired versions are
AVAILABLE or have failed), the labels point at available versions, and versions the new
config dropped have been unloaded (after their in-flight requests). A refused config
(INVALID_ARGUMENT / FAILED_PRECONDITION with TF Serving's messages) leaves the previous
one serving, untouched.

Differences from TF Serving, on purpose: labels are checked after the new versions have
loaded (TF Serving checks before, so a config file that carries labels cannot start
without ``--allow_version_labels_for_unavailable_models``); a reload never drops a
version a client of a model that stays could be using before its replacement is
AVAILABLE.
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
from servable.sources.filesystem import FileSystemSource, ServableToMonitor, list_versions

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
        platform = _platform_of(model) if model is not None else "tensorflow"
        factory = self.loader_factories.get(platform)
        if factory is None:
            raise invalid_argument(f"Model {name} requests unsupported platform {platform}")
        return factory(name, version, path)

    def validate(self, models: Sequence[Any]) -> None:
        """Static checks that need no loading, with TF Serving's messages (INVALID_ARGUMENT).

        Duplicate names, unsupported platforms, and a platform change of a model that
        stays in the config (``ServerCore::ValidateNoModelsChangePlatforms``).
        """
        seen: set[str] = set()
        for model in models:
            if model.name in seen:
                raise invalid_argument(f"Illegal to list model {model.name} multiple times in config list")
            seen.add(model.name)
            platform = _platform_of(model)
            if platform not in self.loader_factories:
                raise invalid_argument(f"Model {model.name} requests unsupported platform {platform}")
            old = self._models.get(model.name)
            if old is not None and _platform_of(old) != platform:
                raise invalid_argument(
                    f"Illegal to change a model's platform. For model {model.name} platform was "
                    f"{_platform_of(old)} and new platform requested is {platform}"
                )

    def apply_config(
        self, models: Sequence[Any], *, timeout: float | None = None, require_available: bool = False
    ) -> None:
        """Make ``models`` the served model list; returns once the new config is in effect.

        Make before break, so a client of a model that stays never sees a failure:

        1. static checks (``validate``) and a label pre-check against what is available
           or on disk; a refused config changes nothing;
        2. the source watches the union of the old and the new config (each model that
           stays aspires the versions of both its policies) and every new version loads;
        3. the labels are checked against the AVAILABLE versions (TF Serving's rules);
           if they cannot be honoured the old config is restored and the error raised;
        4. the new labels are published, then the source watches the new config only:
           versions and models that left are unloaded once their in-flight requests end,
           and this call waits for that (bounded by ``timeout``, 60 s when None).

        ``require_available`` (the reload RPC): after the config is in effect, raise
        UNKNOWN "N model(s) did not become available: {...}" when a model of the new
        config has no AVAILABLE version because its loads failed, as TF Serving does.
        """
        with self._apply_lock:
            self.validate(models)
            self._precheck_labels(models)
            wait = timeout if timeout is not None else self.options.reload_timeout_s
            previous = dict(self._models)
            new = {model.name: model for model in models}
            # Phase 1: old and new side by side.
            self._models = {**previous, **new}
            self._update_source(self._transition_entries(previous, new))
            if not self.manager.wait_until_settled(list(self._models), wait):
                log.warning("models %s did not settle within %ss", list(new), wait)
            try:
                new_labels = self._checked_labels(models)
            except ServingError:
                self._models = previous
                self._update_source(self._entries(previous.values()))
                self._wait_for_unloads(list(new) + list(previous), wait)
                raise
            # Phase 2: publish the labels, then drop what the new config does not want.
            self.labels.replace(new_labels)
            self._models = new
            self._update_source(self._entries(models))
            self._wait_for_unloads(list({**previous, **new}), wait)
            failed = self._failed_models(list(new))
            if failed:
                log.warning("%d model(s) did not become available: %s", len(failed), failed)
                if require_available:
                    detail = ", ".join(f"{{{name} due to error: {message}}}" for name, message in failed.items())
                    raise ServingError(Code.UNKNOWN, f"{len(failed)} model(s) did not become available: {{{detail}, }}")

    # -- helpers for apply_config ----------------------------------------------------------

    @staticmethod
    def _entries(models: Iterable[Any]) -> list[ServableToMonitor]:
        return [ServableToMonitor(m.name, m.base_path, m.version_policy) for m in models]

    @staticmethod
    def _transition_entries(previous: Mapping[str, Any], new: Mapping[str, Any]) -> list[ServableToMonitor]:
        """What the source watches while a config is being applied (see ``apply_config``)."""
        entries = []
        for name in {**previous, **new}:
            old, model = previous.get(name), new.get(name)
            if model is None:
                entries.append(ServableToMonitor(old.name, old.base_path, old.version_policy))
            elif old is None or old.base_path != model.base_path or old.version_policy == model.version_policy:
                entries.append(ServableToMonitor(model.name, model.base_path, model.version_policy))
            else:
                union = UnionPolicy((old.version_policy, model.version_policy))
                entries.append(ServableToMonitor(model.name, model.base_path, union))
        return entries

    def _update_source(self, entries: Sequence[ServableToMonitor]) -> None:
        self.source.update_config(list(entries))

    def _wait_for_unloads(self, names: Sequence[str], timeout: float | None) -> None:
        """Wait until versions of ``names`` that are no longer aspired have left.

        The source has emitted already; once the manager has taken the wish in
        (``wait_until_settled``), unloads have started and are published UNLOADING; this
        waits for their END (each one waits for its in-flight requests).
        """
        limit = 60.0 if timeout is None else timeout
        self.manager.wait_until_settled(names, limit)
        configured = set(self._models)

        def done() -> bool:
            for name in names:
                if name not in configured and self.manager.available_versions(name):
                    return False
                for state in self.monitor.get_version_states(name).values():
                    if state.state == ManagerState.UNLOADING:
                        return False
            return True

        if not self.monitor.wait_until(done, limit):
            log.warning("versions of %s still unloading after %.1fs; continuing", list(names), limit)

    def _precheck_labels(self, models: Sequence[Any]) -> None:
        """Refuse, before touching anything, labels that cannot become valid.

        A label must point at a version that is AVAILABLE now or that the new config will
        load (on disk and chosen by the model's policy); with
        ``--allow_version_labels_for_unavailable_models`` a new label may point anywhere.
        """
        current = self.labels.snapshot()
        for model in models:
            labels = dict(getattr(model, "version_labels", {}) or {})
            if not labels:
                continue
            possible = set(self.manager.available_versions(model.name))
            try:
                possible.update(model.version_policy.select(list(list_versions(model.base_path))))
            except OSError:
                pass
            for label, version in labels.items():
                if version < 0:
                    raise invalid_argument(
                        f"Version label {label} of model {model.name} points at negative version {version}"
                    )
                if version in possible or self._unavailable_label_allowed(current, model.name, label, version):
                    continue
                raise failed_precondition(_label_message(model.name, version))

    def _unavailable_label_allowed(
        self, current: Mapping[str, Mapping[str, int]], name: str, label: str, version: int
    ) -> bool:
        """``--allow_version_labels_for_unavailable_models``: only labels that do not move."""
        if not self.options.allow_version_labels_for_unavailable_models:
            return False
        previous = current.get(name, {}).get(label)
        return previous is None or previous == version

    def _checked_labels(self, models: Sequence[Any]) -> dict[str, dict[str, int]]:
        """TF Serving's label rules (ServerCore::UpdateModelVersionLabelMap).

        Checked after the new versions loaded: a label may point at an AVAILABLE version;
        with the flag, a new label may also point at one that is not.
        """
        current = self.labels.snapshot()
        result: dict[str, dict[str, int]] = {}
        for model in models:
            labels = dict(getattr(model, "version_labels", {}) or {})
            if not labels:
                continue
            available = set(self.manager.available_versions(model.name))
            for label, version in labels.items():
                if version in available or self._unavailable_label_allowed(current, model.name, label, version):
                    continue
                raise failed_precondition(_label_message(model.name, version))
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


class UnionPolicy:
    """Versions chosen by any of ``policies`` (used while a config change is applied)."""

    def __init__(self, policies: Sequence[Any]) -> None:
        self.policies = tuple(policies)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, UnionPolicy) and other.policies == self.policies

    def __hash__(self) -> int:
        return hash(self.policies)

    def select(self, versions: Iterable[int]) -> list[int]:
        found = list(versions)
        return sorted({v for policy in self.policies for v in policy.select(found)}, reverse=True)


def _platform_of(model: Any) -> str:
    return getattr(model, "platform", "") or "tensorflow"


def _label_message(name: str, version: int) -> str:
    return (
        f"Request to assign label to version {version} of model {name}, "
        "which is not currently available for inference"
    )


def error_code_name(error: ServingError | None) -> str:
    return Code.OK.name if error is None else error.code.name
