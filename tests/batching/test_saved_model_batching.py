"""Batching a real SavedModel (half_plus_two), when servable.tf is available."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from servable.batching import BatchingParameters, BatchScheduler, wrap_servable


def test_half_plus_two_batched(half_plus_two_export: str) -> None:
    saved_model = pytest.importorskip("servable.tf.saved_model")
    loader = saved_model.SavedModelLoader(half_plus_two_export)
    loader.load()
    scheduler = BatchScheduler(2)
    params = BatchingParameters(max_batch_size=8, batch_timeout_micros=2000, allowed_batch_sizes=(4, 8))
    padded: list[int] = []
    servable = wrap_servable(
        loader.servable(), params, scheduler, model_name="half_plus_two", version=1,
        on_batch=lambda queue_id, rows, padded_size, waited: padded.append(padded_size),
    )
    try:
        inputs = [np.arange(n, dtype=np.float32) + 10 * i for i, n in enumerate([1, 2, 3] * 8)]
        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(lambda x: servable.predict("serving_default", {"x": x}), inputs))
        for x, outputs in zip(inputs, results):
            np.testing.assert_allclose(outputs["y"], 0.5 * x + 2.0)
        assert padded and set(padded) <= {4, 8}
        assert servable.stats().rows == sum(len(x) for x in inputs)
    finally:
        servable.close()
        scheduler.stop(5)
        loader.unload()
