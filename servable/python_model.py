"""Serve any Python model: ``model_platform: "python"``.

A version folder holds ``servable.py`` (plus whatever files it needs). That file defines
``load(path) -> model``, where the model implements the servable protocol
(``servable.serving.model.ModelServable``). The easiest way is to subclass
``PythonModel`` and declare the tensors::

    # /models/doubler/1/servable.py
    import numpy as np
    from servable.python_model import PythonModel, tensor

    class Doubler(PythonModel):
        inputs = {"x": tensor("float32", [-1])}
        outputs = {"y": tensor("float32", [-1])}

        def run(self, inputs):
            return {"y": inputs["x"] * 2}

    def load(path):
        return Doubler(path)

Such a model is served over gRPC and REST exactly like a SavedModel (routing, version
policies, hot swaps, batching, metrics), and its signature is reported by
GetModelMetadata as a ``tensorflow/serving/predict`` SignatureDef. Nothing here imports
TensorFlow.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import sys
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from servable.core.loader import Loader, close_wrapped
from servable.core.status import ServingError, invalid_argument, unimplemented
from servable.tf.signatures import SignatureInfo, TensorInfo

PREDICT_METHOD = "tensorflow/serving/predict"
ENTRY_FILE = "servable.py"

_DTYPES = {
    "float32": 1, "float": 1, "float64": 2, "double": 2, "int32": 3, "uint8": 4, "int16": 5, "int8": 6,
    "string": 7, "bytes": 7, "int64": 9, "bool": 10, "uint16": 17, "float16": 19, "half": 19, "uint32": 22, "uint64": 23,
}
_NUMPY_KIND = {1: np.float32, 2: np.float64, 3: np.int32, 4: np.uint8, 5: np.int16, 6: np.int8, 9: np.int64,
               10: np.bool_, 17: np.uint16, 19: np.float16, 22: np.uint32, 23: np.uint64}


def tensor(dtype: str, shape: Sequence[int] | None = None) -> TensorInfo:
    """Declare an input or output: numpy-style dtype name and shape (-1 = any size)."""
    if dtype not in _DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(_DTYPES)}")
    return TensorInfo(name="", dtype=_DTYPES[dtype], shape=None if shape is None else tuple(shape))


class PythonModel:
    """Base class for Python servables with one ``serving_default`` predict signature.

    Subclasses set ``inputs``/``outputs`` (alias -> ``tensor(...)``) and implement
    ``run(inputs) -> outputs``. ``run`` is called concurrently from request threads;
    inputs are already checked against the declared dtypes (never cast).
    """

    inputs: Mapping[str, TensorInfo] = {}
    outputs: Mapping[str, TensorInfo] = {}
    signature_name: str = "serving_default"

    def __init__(self, path: str = "") -> None:
        self.path = path
        named_in = {alias: TensorInfo(f"{alias}:0", t.dtype, t.shape) for alias, t in self.inputs.items()}
        named_out = {alias: TensorInfo(f"{alias}:0", t.dtype, t.shape) for alias, t in self.outputs.items()}
        self.signatures = {self.signature_name: SignatureInfo(self.signature_name, PREDICT_METHOD, named_in, named_out)}

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def signature_defs(self) -> dict[str, bytes]:
        from servable._proto.tensorflow.core.protobuf import meta_graph_pb2

        result = {}
        for key, info in self.signatures.items():
            proto = meta_graph_pb2.SignatureDef(method_name=info.method_name)
            for target, tensors in ((proto.inputs, info.inputs), (proto.outputs, info.outputs)):
                for alias, t in tensors.items():
                    target[alias].name = t.name
                    target[alias].dtype = t.dtype
                    if t.shape is None:
                        target[alias].tensor_shape.unknown_rank = True
                    else:
                        for size in t.shape:
                            target[alias].tensor_shape.dim.add().size = size
            result[key] = proto.SerializeToString()
        return result

    def predict(self, signature_key: str, inputs: dict[str, np.ndarray], output_filter: Sequence[str] = ()) -> dict[str, np.ndarray]:
        signature = self.signatures.get(signature_key)
        if signature is None:
            raise ServingError(9, f'Serving signature key "{signature_key}" not found.')  # FAILED_PRECONDITION
        missing = set(signature.inputs) - set(inputs)
        extra = set(inputs) - set(signature.inputs)
        if missing or extra:
            raise invalid_argument(
                f"input size does not match signature: {len(inputs)}!={len(signature.inputs)} "
                f"len({sorted(inputs)}) != len({sorted(signature.inputs)}). "
                f"Sent extra: {sorted(extra)}. Missing but required: {sorted(missing)}."
            )
        for position, (alias, info) in enumerate(signature.inputs.items()):
            array = inputs[alias]
            if not _dtype_matches(array, info.dtype):
                from servable.tf.signatures import dtype_name

                raise invalid_argument(
                    f"Expects arg[{position}] to be {dtype_name(info.dtype)} but {_array_dtype_name(array)} is provided"
                )
        for alias in output_filter:
            if alias not in signature.outputs:
                raise invalid_argument(
                    f"output tensor alias not found in signature: {alias} Outputs expected to be in the set "
                    f"{{{','.join(sorted(signature.outputs))}}}."
                )
        outputs = self.run(dict(inputs))
        wanted = list(output_filter) or list(signature.outputs)
        result = {}
        for alias in wanted:
            value = outputs[alias]
            info = signature.outputs[alias]
            kind = _NUMPY_KIND.get(info.dtype)
            result[alias] = np.asarray(value, dtype=kind) if kind is not None else np.asarray(value, dtype=object)
        return result

    def classify(self, signature_key: str, examples: list[bytes]) -> tuple[np.ndarray | None, np.ndarray | None]:
        raise unimplemented(f"{type(self).__name__} does not implement classify")

    def regress(self, signature_key: str, examples: list[bytes]) -> np.ndarray:
        raise unimplemented(f"{type(self).__name__} does not implement regress")


def _dtype_matches(array: np.ndarray, dtype: int) -> bool:
    if dtype == 7:
        return array.dtype == object or array.dtype.kind in "SU"
    kind = _NUMPY_KIND.get(dtype)
    return kind is not None and array.dtype == np.dtype(kind)


def _array_dtype_name(array: np.ndarray) -> str:
    if array.dtype == object or array.dtype.kind in "SU":
        return "string"
    return _name_of(array.dtype)


def _name_of(dtype: np.dtype) -> str:
    from servable.tf.signatures import dtype_name

    for enum, kind in _NUMPY_KIND.items():
        if np.dtype(kind) == dtype:
            return dtype_name(enum)
    return str(dtype)


_module_ids = itertools.count()


class PythonModelLoader(Loader):
    """Imports ``<version folder>/servable.py`` and calls its ``load(path)``.

    Each version gets its own module object, so two versions of the same file coexist.
    Load errors (a missing file, an exception in ``load``) fail the version with their
    message; the previous version keeps serving. ``wrap(model, path, name)``, when given
    (``LoaderOptions.wrap_servable``: batching with ``--enable_batching``), returns the
    object to serve instead, as for a SavedModel; ``unload`` closes it before the model.
    """

    def __init__(
        self, path: str, name: str = "", version: int = 0, wrap: Callable[[Any, str, str], Any] | None = None
    ) -> None:
        self.path = path
        self.name = name
        self.version = version
        self.wrap = wrap
        self._model: Any = None
        self._servable: Any = None

    def estimate_resources(self) -> int:
        total = 0
        for root, _dirs, files in os.walk(self.path):
            for file in files:
                try:
                    total += os.path.getsize(os.path.join(root, file))
                except OSError:
                    pass
        return total

    def load(self) -> None:
        entry = os.path.join(self.path, ENTRY_FILE)
        if not os.path.isfile(entry):
            raise ServingError(5, f"{entry} not found: a python model version holds a {ENTRY_FILE}")
        module_name = f"servable_user_model_{next(_module_ids)}"
        spec = importlib.util.spec_from_file_location(module_name, entry)
        if spec is None or spec.loader is None:
            raise invalid_argument(f"cannot import {entry}")
        module = importlib.util.module_from_spec(spec)
        sys.path.insert(0, self.path)
        try:
            spec.loader.exec_module(module)
        finally:
            try:
                sys.path.remove(self.path)
            except ValueError:
                pass
        load: Callable[[str], Any] | None = getattr(module, "load", None)
        if load is None:
            raise invalid_argument(f"{entry} defines no load(path) function")
        model = load(self.path)
        if not hasattr(model, "signatures") or not hasattr(model, "predict"):
            raise invalid_argument(f"load() in {entry} returned {type(model).__name__}, which lacks signatures/predict")
        try:
            servable = self.wrap(model, self.path, self.name) if self.wrap is not None else model
        except BaseException:
            close_wrapped(model, model)
            raise
        self._model, self._servable = model, servable

    def unload(self) -> None:
        servable, model = self._servable, self._model
        self._servable = self._model = None
        close_wrapped(servable, model)

    def servable(self) -> Any:
        return self._servable


def make_python_loader_factory(options: Any = None) -> Callable[[str, int, str], Loader]:
    """A ``(name, version, path) -> PythonModelLoader`` factory.

    ``options`` is the server's ``LoaderOptions``: its ``wrap_servable`` is read when
    each loader is made (``servable.settings`` sets it after building the options).
    """

    def factory(name: str, version: int, path: str) -> Loader:
        return PythonModelLoader(path, name, version, wrap=getattr(options, "wrap_servable", None))

    return factory
