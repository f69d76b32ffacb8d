"""Fixtures for servable/tf tests: exported models (once per session) and loaded servables."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def string_model_export(tmp_path_factory: pytest.TempPathFactory) -> str:
    from servable.tf.testing_models import export_string_model

    return export_string_model(str(tmp_path_factory.mktemp("exports") / "strings"))


@pytest.fixture(scope="session")
def mlp_export(tmp_path_factory: pytest.TempPathFactory) -> str:
    from servable.tf.testing_models import export_mlp

    return export_mlp(str(tmp_path_factory.mktemp("exports") / "mlp"), seed=0)


def _load(path: str):
    from servable.tf.loaders import LoaderOptions
    from servable.tf.saved_model import SavedModelLoader

    loader = SavedModelLoader(path, options=LoaderOptions(enable_model_warmup=False))
    loader.load()
    return loader


@pytest.fixture(scope="session")
def half_plus_two(half_plus_two_export: str):
    """A loaded half_plus_two SavedModelServable shared by read-only tests."""
    loader = _load(half_plus_two_export)
    yield loader.servable()
    loader.unload()


@pytest.fixture(scope="session")
def string_model(string_model_export: str):
    loader = _load(string_model_export)
    yield loader.servable()
    loader.unload()


@pytest.fixture(scope="session")
def mlp(mlp_export: str):
    loader = _load(mlp_export)
    yield loader.servable()
    loader.unload()


def example(**features: float | list[float]) -> bytes:
    """A serialized tf.Example with float features (servable's own protos)."""
    from servable._proto.tensorflow.core.example import example_pb2

    proto = example_pb2.Example()
    for name, value in features.items():
        values = value if isinstance(value, list) else [value]
        proto.features.feature[name].float_list.value.extend(values)
    return proto.SerializeToString()
