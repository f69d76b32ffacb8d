"""Request batching: TF Serving's BatchingParameters, shared batch scheduler and wrapper.

Usage (server wiring)::

    params = load_batching_parameters(path)          # or BatchingParameters()
    scheduler = create_scheduler(params)             # one per process
    servable = wrap_servable(loaded, params, scheduler, model_name="m", version=1)
    ...
    servable.close()                                 # before the version unloads
    scheduler.stop()                                 # at shutdown
"""

from servable.batching.batching_servable import (
    BatchingServable,
    BatchingStats,
    BatchQueueId,
    OnBatch,
    wrap_servable,
)
from servable.batching.parameters import (
    BatchingParameters,
    default_num_batch_threads,
    load_batching_parameters,
    parse_batching_parameters,
)
from servable.batching.scheduler import BatchQueue, BatchScheduler, Task, create_scheduler

__all__ = [
    "BatchQueue",
    "BatchQueueId",
    "BatchScheduler",
    "BatchingParameters",
    "BatchingServable",
    "BatchingStats",
    "OnBatch",
    "Task",
    "create_scheduler",
    "default_num_batch_threads",
    "load_batching_parameters",
    "parse_batching_parameters",
    "wrap_servable",
]
