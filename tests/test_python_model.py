"""Python models (model_platform "python"): the base class and the loader, no server."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest

from servable._proto.tensorflow.core.protobuf import meta_graph_pb2
from servable.core.status import Code, ServingError
from servable.python_model import PythonModel, PythonModelLoader, tensor

DOUBLER = textwrap.dedent(
    """
    from servable.python_model import PythonModel, tensor

    class Doubler(PythonModel):
        inputs = {"x": tensor("float32", [-1])}
        outputs = {"y": tensor("float32", [-1]), "label": tensor("string", [-1])}

        def run(self, inputs):
            x = inputs["x"]
            return {"y": x * 2, "label": [b"even" if int(v) % 2 == 0 else b"odd" for v in x]}

    def load(path):
        return Doubler(path)
    """
)


def test_loader_imports_servable_py(tmp_path):
    (tmp_path / "servable.py").write_text(DOUBLER)
    loader = PythonModelLoader(str(tmp_path), "doubler", 1)
    loader.load()
    model = loader.servable()
    out = model.predict("serving_default", {"x": np.array([1.0, 2.0], dtype=np.float32)}, ())
    np.testing.assert_array_equal(out["y"], np.array([2.0, 4.0], dtype=np.float32))
    assert list(out["label"]) == [b"odd", b"even"]
    assert list(model.predict("serving_default", {"x": np.array([3.0], np.float32)}, ["y"])) == ["y"]
    signature = meta_graph_pb2.SignatureDef.FromString(model.signature_defs()["serving_default"])
    assert signature.method_name == "tensorflow/serving/predict"
    assert signature.inputs["x"].dtype == 1 and signature.outputs["label"].dtype == 7
    loader.unload()


@pytest.mark.parametrize(
    "inputs,message",
    [
        ({"x": np.array(["a"], dtype=object)}, "Expects arg[0] to be float but string is provided"),
        ({"x": np.array([1], dtype=np.int32)}, "Expects arg[0] to be float but int32 is provided"),
        ({"z": np.array([1.0], dtype=np.float32)}, "input size does not match signature"),
    ],
)
def test_inputs_are_checked_never_cast(tmp_path, inputs, message):
    (tmp_path / "servable.py").write_text(DOUBLER)
    loader = PythonModelLoader(str(tmp_path))
    loader.load()
    with pytest.raises(ServingError) as info:
        loader.servable().predict("serving_default", inputs, ())
    assert info.value.code == Code.INVALID_ARGUMENT and message in info.value.message


def test_unknown_output_filter(tmp_path):
    (tmp_path / "servable.py").write_text(DOUBLER)
    loader = PythonModelLoader(str(tmp_path))
    loader.load()
    with pytest.raises(ServingError) as info:
        loader.servable().predict("serving_default", {"x": np.ones(1, np.float32)}, ["nope"])
    assert "output tensor alias not found in signature: nope" in info.value.message


@pytest.mark.parametrize(
    "source,fragment",
    [(None, "servable.py not found"), ("x = 1\n", "defines no load(path)"), ("def load(path):\n    raise ValueError('boom')\n", "boom")],
)
def test_load_failures_raise(tmp_path, source, fragment):
    if source is not None:
        (tmp_path / "servable.py").write_text(source)
    loader = PythonModelLoader(str(tmp_path))
    with pytest.raises(Exception) as info:
        loader.load()
    assert fragment in str(info.value)


def test_two_versions_do_not_share_module_state(tmp_path):
    for version, factor in ((1, 2), (2, 3)):
        folder = tmp_path / str(version)
        folder.mkdir()
        (folder / "servable.py").write_text(DOUBLER.replace("x * 2", f"x * {factor}"))
    loaders = [PythonModelLoader(str(tmp_path / str(v))) for v in (1, 2)]
    for loader in loaders:
        loader.load()
    results = [l.servable().predict("serving_default", {"x": np.ones(1, np.float32)}, ["y"])["y"][0] for l in loaders]
    assert results == [2.0, 3.0]


def test_tensor_rejects_unknown_dtype():
    with pytest.raises(ValueError):
        tensor("float128")
    assert isinstance(PythonModel().signatures, dict)


def test_wrapper_is_served_and_closed_before_the_model(tmp_path):
    """``wrap`` (batching's hook) gives the object served; unload closes it, then the model,
    even when closing the wrapper fails."""
    (tmp_path / "servable.py").write_text(DOUBLER + "\nclosed = []\nDoubler.close = lambda self: closed.append('model')\n")
    events = []

    class Wrapper:
        def __init__(self, inner):
            self.inner = inner

        def close(self):
            events.append("wrapper")
            raise RuntimeError("wrapper close failed")

    loader = PythonModelLoader(str(tmp_path), "doubler", 1, wrap=lambda model, path, name: Wrapper(model))
    loader.load()
    served = loader.servable()
    assert isinstance(served, Wrapper)
    module_closed = type(served.inner).close.__globals__["closed"]
    loader.unload()
    assert events == ["wrapper"] and module_closed == ["model"]
