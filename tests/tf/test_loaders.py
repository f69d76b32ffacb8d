"""SavedModelLoader and the loader factory: load, wrap, estimate, unload frees memory."""

from __future__ import annotations

import gc
import os
import types
import weakref

import numpy as np
import pytest

from servable.core.loader import Loader
from servable.core.status import Code, ServingError
from servable.tf.loaders import LoaderOptions, make_loader_factory
from servable.tf.saved_model import SavedModelLoader, SavedModelServable


def test_options_from_flags_reads_tf_serving_flag_names():
    flags = types.SimpleNamespace(
        enable_model_warmup=False,
        num_request_iterations_for_warmup=3,
        tensorflow_intra_op_parallelism=2,
        tensorflow_inter_op_parallelism=1,
        enable_batching=True,
        batching_parameters_file="/b.txt",
        enable_per_model_batching_parameters=True,
    )
    options = LoaderOptions.from_flags(flags)
    assert options == LoaderOptions(False, 3, 2, 1, True, "/b.txt", True)
    assert LoaderOptions.from_flags(types.SimpleNamespace()) == LoaderOptions()


def test_session_parallelism_sizes_both_pools_unless_one_is_given():
    from servable.config.flags import parse_flags

    options = LoaderOptions.from_flags(parse_flags(["--tensorflow_session_parallelism=3"]))
    assert (options.intra_op, options.inter_op) == (3, 3)
    options = LoaderOptions.from_flags(
        parse_flags(["--tensorflow_session_parallelism=3", "--tensorflow_intra_op_parallelism=1"])
    )
    assert (options.intra_op, options.inter_op) == (1, 3)
    assert (LoaderOptions.from_flags(parse_flags([])).intra_op, LoaderOptions.from_flags(parse_flags([])).inter_op) == (0, 0)


def test_factory_builds_loaders_that_serve(half_plus_two_export):
    factory = make_loader_factory(("serve",), LoaderOptions(enable_model_warmup=False))
    loader = factory("half_plus_two", 1, half_plus_two_export)
    assert isinstance(loader, Loader)
    loader.load()
    try:
        servable = loader.servable()
        assert isinstance(servable, SavedModelServable)
        y = servable.predict("serving_default", {"x": np.array([1.0, 2.0, 5.0], np.float32)}, ())["y"]
        assert y.tolist() == [2.5, 3.0, 4.5]
    finally:
        loader.unload()


def test_estimate_covers_the_files(half_plus_two_export):
    on_disk = sum(
        os.path.getsize(os.path.join(root, name)) for root, _, files in os.walk(half_plus_two_export) for name in files
    )
    assert SavedModelLoader(half_plus_two_export).estimate_resources() >= on_disk > 0


def test_unload_frees_the_model(half_plus_two_export):
    loader = SavedModelLoader(half_plus_two_export, options=LoaderOptions(enable_model_warmup=False))
    loader.load()
    model_ref = weakref.ref(loader.servable().loaded)
    servable_ref = weakref.ref(loader.servable())
    loader.unload()
    gc.collect()
    assert model_ref() is None
    assert servable_ref() is None
    with pytest.raises(RuntimeError):
        loader.servable()


def test_a_model_loaded_after_the_startup_freeze_is_still_freed(half_plus_two_export):
    """The server freezes its start-up objects out of the cyclic GC (servable.server):
    a version loaded later must still be collected at unload, and quickly."""
    from servable.server import _freeze_startup_objects

    class Settings:
        models = [type("Model", (), {"platform": "tensorflow"})()]

    _freeze_startup_objects(Settings())
    try:
        assert gc.get_freeze_count() > 0
        loader = SavedModelLoader(half_plus_two_export, options=LoaderOptions(enable_model_warmup=False))
        loader.load()
        model_ref = weakref.ref(loader.servable().loaded)
        loader.unload()  # its gc.collect() walks only what was made after the freeze
        assert model_ref() is None
    finally:
        gc.unfreeze()


def test_wrong_tags_fail_the_load(half_plus_two_export):
    loader = SavedModelLoader(half_plus_two_export, tags=("serve", "tpu"))
    with pytest.raises(ServingError) as raised:
        loader.load()
    assert raised.value.code == Code.NOT_FOUND
    assert "Could not find meta graph def matching supplied tags: { serve tpu }" in raised.value.message


class Wrapper:
    """A pass-through wrapper like the batching one: same protocol, counts predicts."""

    def __init__(self, inner, path):
        self.inner, self.path, self.predicts, self.closed = inner, path, 0, False
        self.signatures = inner.signatures

    def signature_defs(self):
        return self.inner.signature_defs()

    def predict(self, key, inputs, output_filter=()):
        self.predicts += 1
        return self.inner.predict(key, inputs, output_filter)

    def classify(self, key, examples):
        return self.inner.classify(key, examples)

    def regress(self, key, examples):
        return self.inner.regress(key, examples)

    def close(self):
        self.closed = True


def test_wrap_hook_runs_before_warmup_and_is_closed(half_plus_two_export):
    wrappers: list[Wrapper] = []

    names: list[str] = []

    def wrap(servable, path, name):
        wrappers.append(Wrapper(servable, path))
        names.append(name)
        return wrappers[-1]

    loader = make_loader_factory(options=LoaderOptions(wrap_servable=wrap))("m", 1, half_plus_two_export)
    loader.load()
    (wrapper,) = wrappers
    assert loader.servable() is wrapper
    assert wrapper.path == half_plus_two_export
    assert names == ["m"]  # the served model's name, whatever its base path's folder is called
    assert wrapper.predicts > 0  # no warmup file: made-up inputs went through the wrapper
    loader.unload()
    assert wrapper.closed


def test_thread_settings_after_tf_started_are_logged_not_raised(half_plus_two):
    from servable.tf import loaders

    loaders.configure_threading(0, 0)  # zeros: TensorFlow's defaults, nothing to do
    loaders.configure_threading(1, 1)  # the runtime already runs: a warning, no exception
    make_loader_factory(options=LoaderOptions(intra_op=2, inter_op=2))  # differs from the first: ignored
