"""Which TensorFlow executor runs a signature call's graph: single-threaded when it can.

TensorFlow's default executor hands every op of a function call to its inter-op thread
pool, so each call wakes pool threads and hands work between them. For the small graphs
a model server mostly runs, those hand-offs cost more than the arithmetic. The
``SINGLE_THREADED_EXECUTOR`` runs the ops one after another on the calling thread
instead; an op that parallelises itself (a big matmul, a convolution) still uses the
intra-op pool. Measured on the 784-128-10 MLP, TF 2.21, 2 cores, interleaved runs of the
same restored signature (``/tmp``-style script in the session notes):

=========================  ===============  ===============
call                       default          single-threaded
=========================  ===============  ===============
1 row, back to back p50    0.233 ms         0.210 ms
1 row after a 1 ms gap     0.388 ms         0.325 ms
32 rows, back to back p50  0.441 ms         0.356 ms
32 rows, CPU per call      654 us           452 us
=========================  ===============  ===============

The single-threaded executor refuses graphs holding low-level control flow: a
``tf.while_loop`` or ``tf.map_fn`` (lowered to Switch/Merge/Enter inside functions) or a
TF1 ``cond``. It says so with a ``FailedPreconditionError`` on the first call, before
any op runs, so the caller can run the same call again on the default executor
(``unsupported_by_single_threaded``) and keep to it for that signature.

The executor is a per-thread setting of TensorFlow's eager context: ``call_with`` sets it
around one call and restores it, so other TensorFlow code on the same thread (a Python
model, a test) never inherits it. It sets the attribute the public
``tf.experimental.function_executor_type`` context manager sets, without that manager's
copy of the options per call. Called from request, batch, warmup and load threads.
"""

from __future__ import annotations

from typing import Any, Callable, TypeVar

import tensorflow as tf
from tensorflow.python.eager import context as tf_context

SINGLE_THREADED = "SINGLE_THREADED_EXECUTOR"
_REFUSAL = "single-threaded executor"

T = TypeVar("T")


def call_with(executor_type: str | None, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` with this thread's function executor set to ``executor_type`` (None: default)."""
    options = tf_context.context().function_call_options
    previous = options.executor_type
    options.executor_type = executor_type
    try:
        return fn(*args)
    finally:
        options.executor_type = previous


def unsupported_by_single_threaded(error: BaseException) -> bool:
    """Whether ``error`` is the single-threaded executor refusing a graph (not a model error)."""
    return isinstance(error, tf.errors.FailedPreconditionError) and _REFUSAL in str(error).lower()
