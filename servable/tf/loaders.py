"""Loader options and the loader factory the file-system source uses for "tensorflow" models.

``servable.settings`` builds ``LoaderOptions.from_flags(flags)`` once and hands
``make_loader_factory(tags, options)`` to the server core; the source calls the factory
``(name, version, path) -> Loader`` on its own thread for every new version folder. The
returned loaders load, wrap (``wrap_servable`` hook, e.g. batching), warm up and log
"warmup: replayed N records" inside ``load()``, on a manager load thread.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from servable.core.loader import Loader

log = logging.getLogger(__name__)

WrapServable = Callable[[Any, str, str], Any]


@dataclass
class LoaderOptions:
    """SavedModel loading options; field names follow TF Serving's flags.

    ``intra_op``/``inter_op`` of 0 leave TensorFlow's defaults. ``wrap_servable(servable,
    version_path, model_name)`` returns the object to serve instead (same protocol); it
    runs before warmup so warmup also primes the wrapper. ``model_name`` is the served
    model's name, which labels the wrapper's metrics (the base path's folder may differ).
    With ``model_process`` set, SavedModels are loaded and called in that worker process
    (``servable.tf.worker``); the wrapper and warmup still run here, in front of it.
    """

    enable_model_warmup: bool = True
    num_request_iterations_for_warmup: int = 1
    intra_op: int = 0
    inter_op: int = 0
    enable_batching: bool = False
    batching_parameters_file: str = ""
    enable_per_model_batching_parameters: bool = False
    method_name_check: bool = False  # --enable_signature_method_name_check
    warmup_signatures_without_file: bool = True
    single_threaded_executor: bool = True  # --tensorflow_single_threaded_executor
    wrap_servable: WrapServable | None = None
    model_process: Any = None  # servable.tf.worker.ModelProcess (--tensorflow_worker_process)

    @classmethod
    def from_flags(cls, flags: Any) -> "LoaderOptions":
        """Read TF Serving's flag attributes from a parsed-flags object (missing -> default).

        ``--tensorflow_session_parallelism`` sizes both TensorFlow pools, as in TF
        Serving's server.cc; the intra/inter-op flags, when given, take precedence
        (``check_flags`` refuses all three at once).
        """
        defaults = cls()
        session = int(getattr(flags, "tensorflow_session_parallelism", 0) or 0)
        return cls(
            enable_model_warmup=bool(getattr(flags, "enable_model_warmup", defaults.enable_model_warmup)),
            num_request_iterations_for_warmup=int(
                getattr(flags, "num_request_iterations_for_warmup", defaults.num_request_iterations_for_warmup)
            ),
            intra_op=int(getattr(flags, "tensorflow_intra_op_parallelism", 0) or 0) or max(session, 0),
            inter_op=int(getattr(flags, "tensorflow_inter_op_parallelism", 0) or 0) or max(session, 0),
            enable_batching=bool(getattr(flags, "enable_batching", False)),
            batching_parameters_file=str(getattr(flags, "batching_parameters_file", "") or ""),
            enable_per_model_batching_parameters=bool(getattr(flags, "enable_per_model_batching_parameters", False)),
            method_name_check=bool(getattr(flags, "enable_signature_method_name_check", False)),
            warmup_signatures_without_file=bool(getattr(flags, "warmup_signatures_without_file", True)),
            single_threaded_executor=bool(getattr(flags, "tensorflow_single_threaded_executor", True)),
        )


_threading_lock = threading.Lock()
_threading_applied: tuple[int, int] | None = None


def configure_threading(intra_op: int, inter_op: int) -> None:
    """Set TensorFlow's thread pool sizes once per process (non-zero values only).

    TensorFlow fixes them when its runtime starts; a later, different request is logged
    and ignored.
    """
    global _threading_applied
    if not intra_op and not inter_op:
        return
    with _threading_lock:
        if _threading_applied is not None:
            if _threading_applied != (intra_op, inter_op):
                log.warning("TensorFlow thread pools already set to %s; ignoring %s", _threading_applied, (intra_op, inter_op))
            return
        import tensorflow as tf

        try:
            if intra_op:
                tf.config.threading.set_intra_op_parallelism_threads(intra_op)
            if inter_op:
                tf.config.threading.set_inter_op_parallelism_threads(inter_op)
        except RuntimeError as error:  # the runtime is already initialized
            log.warning("cannot set TensorFlow thread pools (%s); keeping the defaults", error)
        _threading_applied = (intra_op, inter_op)


def make_loader_factory(
    tags: Sequence[str] = ("serve",), options: LoaderOptions | None = None
) -> Callable[[str, int, str], Loader]:
    """A ``(name, version, path) -> SavedModelLoader`` factory sharing ``tags`` and ``options``."""
    options = options or LoaderOptions()
    tags = tuple(tags) or ("serve",)
    configure_threading(options.intra_op, options.inter_op)

    def factory(name: str, version: int, path: str) -> Loader:
        from servable.tf.saved_model import SavedModelLoader

        return SavedModelLoader(path, tags, options, name=name, version=version)

    return factory
