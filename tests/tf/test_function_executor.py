"""Signatures run on TensorFlow's single-threaded executor, and fall back when it refuses.

Real SavedModels exported here: the MLP (straight-line graph), a TF2 function with a
``while`` loop and a TF1 graph with ``cond``/``while_loop`` (both refused by the
single-threaded executor), and a TF2 function whose op fails on bad input.
"""

from __future__ import annotations

import logging
import threading

import numpy as np
import pytest

from servable.core.status import Code, ServingError
from servable.tf.testing_models import mlp_reference


def _load(path: str, **options):
    from servable.tf.loaders import LoaderOptions
    from servable.tf.saved_model import SavedModelLoader

    loader = SavedModelLoader(path, options=LoaderOptions(enable_model_warmup=False, **options))
    loader.load()
    return loader


@pytest.fixture(scope="module")
def control_flow_exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    import tensorflow as tf

    base = tmp_path_factory.mktemp("control-flow")

    class Looping(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
        def add_sum_times(self, x):
            """y = x + 1 repeated sum(x) times (a data-dependent while loop)."""
            i = tf.constant(0)
            y = x
            while i < tf.cast(tf.reduce_sum(x), tf.int32):
                y = y + 1.0
                i += 1
            return {"y": y}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
        def pairs(self, x):
            """A straight-line graph whose reshape fails on an odd length."""
            return {"y": tf.reduce_sum(tf.reshape(x, [-1, 2]), axis=1)}

    module = Looping()
    tf2 = str(base / "tf2" / "1")
    tf.saved_model.save(module, tf2, signatures={"serving_default": module.add_sum_times, "pairs": module.pairs})

    tf1 = str(base / "tf1" / "1")
    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        x = v1.placeholder(tf.float32, [None], name="x")
        doubled = v1.cond(tf.reduce_sum(x) > 0, lambda: x * 2, lambda: x)
        z = v1.while_loop(lambda i, a: i < 3, lambda i, a: (i + 1, a + 1), [0, doubled])[1]
        with v1.Session(graph=graph) as session:
            builder = v1.saved_model.Builder(tf1)
            builder.add_meta_graph_and_variables(
                session, ["serve"],
                signature_def_map={"serving_default": v1.saved_model.predict_signature_def({"x": x}, {"z": z})},
            )
            builder.save()
    return {"tf2": tf2, "tf1": tf1}


def _executor_type() -> str | None:
    from tensorflow.python.eager import context

    return context.context().function_call_options.executor_type


def test_straight_line_graph_stays_single_threaded_with_the_default_executors_numbers(mlp_export):
    images = np.random.default_rng(3).random((32, 784), dtype=np.float32)
    single, default = _load(mlp_export), _load(mlp_export, single_threaded_executor=False)
    try:
        fast = single.servable().predict("serving_default", {"images": images})["scores"]
        reference = default.servable().predict("serving_default", {"images": images})["scores"]
        assert single.servable()._runner("serving_default").single_threaded
        assert not default.servable()._runner("serving_default").single_threaded
        np.testing.assert_array_equal(fast, reference)
        np.testing.assert_allclose(fast, mlp_reference(images), rtol=1e-5, atol=1e-6)
    finally:
        single.unload()
        default.unload()


def test_the_executor_setting_never_leaks_to_the_calling_thread(mlp_export):
    loader = _load(mlp_export)
    try:
        before = _executor_type()
        loader.servable().predict("serving_default", {"images": np.zeros((1, 784), np.float32)})
        assert _executor_type() == before
    finally:
        loader.unload()


def test_tf2_loop_falls_back_to_the_default_executor_and_says_so(control_flow_exports, caplog):
    loader = _load(control_flow_exports["tf2"])
    try:
        servable = loader.servable()
        with caplog.at_level(logging.INFO, logger="servable.tf.saved_model"):
            first = servable.predict("serving_default", {"x": np.array([1.0, 2.0], np.float32)})["y"]
        np.testing.assert_array_equal(first, [4.0, 5.0])  # sum 3: three increments
        assert not servable._runner("serving_default").single_threaded
        assert "serving_default runs on TensorFlow's default executor" in caplog.text
        again = servable.predict("serving_default", {"x": np.array([0.5, 0.5], np.float32)})["y"]
        np.testing.assert_array_equal(again, [1.5, 1.5])
        # The other signature of the same model keeps the single-threaded executor.
        pairs = servable.predict("pairs", {"x": np.array([1.0, 2.0, 3.0, 4.0], np.float32)})["y"]
        np.testing.assert_array_equal(pairs, [3.0, 7.0])
        assert servable._runner("pairs").single_threaded
    finally:
        loader.unload()


def test_tf1_control_flow_falls_back_to_the_default_executor(control_flow_exports):
    loader = _load(control_flow_exports["tf1"])
    try:
        servable = loader.servable()
        z = servable.predict("serving_default", {"x": np.array([1.0, 2.0], np.float32)})["z"]
        np.testing.assert_array_equal(z, [5.0, 7.0])  # doubled, then three increments
        assert not servable._runner("serving_default").single_threaded
    finally:
        loader.unload()


def test_a_model_error_is_the_models_and_keeps_the_single_threaded_executor(control_flow_exports):
    loader = _load(control_flow_exports["tf2"])
    try:
        servable = loader.servable()
        with pytest.raises(ServingError) as raised:
            servable.predict("pairs", {"x": np.array([1.0, 2.0, 3.0], np.float32)})
        assert raised.value.code == Code.INVALID_ARGUMENT
        assert "reshape" in raised.value.message.lower()
        assert servable._runner("pairs").single_threaded
    finally:
        loader.unload()


def test_concurrent_calls_on_the_single_threaded_executor_get_their_own_rows(mlp_export):
    loader = _load(mlp_export)
    servable = loader.servable()
    failures: list[str] = []

    def client(seed: int) -> None:
        images = np.random.default_rng(seed).random((1 + seed % 5, 784), dtype=np.float32)
        expected = mlp_reference(images)
        for _ in range(20):
            got = servable.predict("serving_default", {"images": images})["scores"]
            if got.shape != expected.shape or not np.allclose(got, expected, rtol=1e-5, atol=1e-6):
                failures.append(f"client {seed}: wrong rows")
                return

    threads = [threading.Thread(target=client, args=(seed,)) for seed in range(8)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not failures
        assert servable._runner("serving_default").single_threaded
    finally:
        loader.unload()


def test_flag_turns_it_off():
    from servable.config.flags import parse_flags
    from servable.tf.loaders import LoaderOptions

    assert LoaderOptions.from_flags(parse_flags([])).single_threaded_executor
    flags = parse_flags(["--tensorflow_single_threaded_executor=false"])
    assert not LoaderOptions.from_flags(flags).single_threaded_executor
