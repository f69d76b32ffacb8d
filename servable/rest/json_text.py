"""JSON text in and out, with TF Serving's (rapidjson's) quirks.

``parse_json`` accepts what TF Serving's parser accepts (standard JSON plus the ``NaN``,
``Infinity`` and ``-Infinity`` tokens) and reports errors in rapidjson's words;
``dumps`` writes with orjson (numpy arrays natively) and can splice in pre-rendered
fragments for the non-finite floats orjson would print as ``null``;
``json_value_to_string`` renders a value for an error message the way TF Serving's
``JsonValueToString`` does (rapidjson's pretty writer, 4-space indent).

Pure functions with no I/O; called on request worker threads.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import numpy as np
import orjson

from servable.core.status import invalid_argument

DUMPS_OPTIONS = orjson.OPT_SERIALIZE_NUMPY
MAX_ERROR_VALUE_CHARS = 4096  # TF Serving prints whole documents; we cap error texts.

# Python's json messages -> rapidjson's (rapidjson/error/en.h), best effort.
_RAPIDJSON_MESSAGES = (
    ("Expecting value", "Invalid value."),
    ("Expecting property name enclosed in double quotes", "Missing a name for object member."),
    ("Expecting ':' delimiter", "Missing a colon after a name of object member."),
    ("Extra data", "The document root must not be followed by other values."),
    ("Unterminated string", "Missing a closing quotation mark in string."),
    ("Invalid control character", "Invalid encoding in string."),
    ("Invalid \\escape", "Invalid escape character in string."),
    ("Invalid \\uXXXX escape", "Incorrect hex digit after \\u escape in string."),
)


def _rapidjson_message(error: json.JSONDecodeError) -> str:
    if error.msg == "Expecting ',' delimiter":
        # rapidjson distinguishes arrays and objects; find the innermost open bracket.
        depth_char = _innermost_open(error.doc, error.pos)
        if depth_char == "{":
            return "Missing a comma or '}' after an object member."
        return "Missing a comma or ']' after an array element."
    for prefix, message in _RAPIDJSON_MESSAGES:
        if error.msg.startswith(prefix):
            return message
    return error.msg


def _innermost_open(doc: str, pos: int) -> str:
    stack: list[str] = []
    in_string = escaped = False
    for ch in doc[:pos]:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            stack.append(ch)
        elif ch in "]}" and stack:
            stack.pop()
    return stack[-1] if stack else ""


def parse_json(body: bytes) -> Any:
    """Parse a request body; raises INVALID_ARGUMENT "JSON Parse error: ..." like TF Serving.

    orjson does the work; documents it rejects (NaN/Infinity tokens, numbers beyond
    double range, ...) are retried with the standard library parser, which accepts the
    same non-standard tokens as rapidjson's ``kParseNanAndInfFlag``.
    """
    if not body:
        raise invalid_argument("JSON Parse error: The document is empty")
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    else:
        if not _may_repeat_a_request_key(body):
            return document
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise invalid_argument(f"JSON Parse error: Invalid encoding in string. at offset: {error.start}") from None
    if not text.strip():
        raise invalid_argument("JSON Parse error: The document is empty")
    _check_surrogates(text)
    try:
        return json.loads(text, object_pairs_hook=_first_key_wins)
    except json.JSONDecodeError as error:
        offset = len(text[: error.pos].encode("utf-8"))
        raise invalid_argument(f"JSON Parse error: {_rapidjson_message(error)} at offset: {offset}") from None
    except RecursionError:
        raise invalid_argument("JSON Parse error: Terminate parsing due to Handler error. at offset: 0") from None


_REQUEST_KEYS = (b'"instances"', b'"inputs"', b'"signature_name"', b'"examples"', b'"context"')


def _may_repeat_a_request_key(body: bytes) -> bool:
    """Whether a request key appears twice in ``body`` (then it is parsed again, first wins).

    Why: rapidjson's ``FindMember`` finds the first of repeated members, orjson keeps
    the last; a cheap count over the raw bytes keeps the exact reading off the common path.
    """
    return any(body.count(key) > 1 for key in _REQUEST_KEYS)


def _first_key_wins(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook``: of repeated keys, keep the first value (rapidjson's lookup)."""
    document: dict[str, Any] = {}
    for key, value in pairs:
        document.setdefault(key, value)
    return document


# A \uXXXX escape in the UTF-16 surrogate range, preceded by an even number of backslashes.
_SURROGATE_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u([dD][89a-fA-F][0-9a-fA-F]{2})")


def _check_surrogates(text: str) -> None:
    """Refuse lone or misordered surrogate escapes as rapidjson does.

    Why: the standard library parser (the fallback) turns ``"\ud800"`` into a Python
    string that cannot be encoded as UTF-8, which would fail later, far from the input;
    rapidjson answers "The surrogate pair in string is invalid." at the escape's offset.
    """
    pending: int | None = None  # offset of a high surrogate waiting for its low half
    expected_at = -1
    for match in _SURROGATE_ESCAPE.finditer(text):
        start = match.end() - 6  # the backslash of this \uXXXX
        high = match.group(1)[1].lower() in "89ab"
        if pending is not None:
            if high or start != expected_at:
                break
            pending = None
            continue
        if not high:
            pending = start
            break
        pending, expected_at = start, match.end()
    else:
        if pending is None:
            return
    offset = len(text[:pending].encode("utf-8"))
    raise invalid_argument(f"JSON Parse error: The surrogate pair in string is invalid. at offset: {offset}")


def dumps(value: Any) -> bytes:
    """Serialize a response document (numpy arrays and scalars allowed, fragments spliced)."""
    return orjson.dumps(value, option=DUMPS_OPTIONS)


# -- rendering values for error messages ------------------------------------------------------


def format_decimal(value: float, float32: bool = False) -> str:
    """TF Serving's ``WriteDecimal``: six-digit %g if it round-trips, else max_digits10, '.0' added."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "-Infinity" if value < 0 else "Infinity"
    text = f"{value:g}"
    if float32:
        if np.float32(float(text)) != np.float32(value):
            text = f"{value:.9g}"
    elif float(text) != value:
        text = f"{value:.17g}"
    if "." not in text and "e" not in text and "n" not in text:
        text += ".0"
    return text


def json_type_string(value: Any) -> str:
    """rapidjson's type names, as TF Serving prints them in errors."""
    if value is None:
        return "Null"
    if value is True:
        return "True"
    if value is False:
        return "False"
    if isinstance(value, dict):
        return "Object"
    if isinstance(value, list):
        return "Array"
    if isinstance(value, str):
        return "String"
    return "Number"


def _escape(text: str) -> str:
    out = []
    for ch in text:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\b":
            out.append("\\b")
        elif ch == "\f":
            out.append("\\f")
        elif ord(ch) < 0x20:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


class _Budget(Exception):
    pass


def json_value_to_string(value: Any, limit: int = MAX_ERROR_VALUE_CHARS) -> str:
    """rapidjson ``PrettyWriter`` rendering of ``value`` (truncated after ``limit`` chars)."""
    parts: list[str] = []
    size = [0]

    def emit(text: str) -> None:
        parts.append(text)
        size[0] += len(text)
        if size[0] > limit:
            raise _Budget

    def write(item: Any, indent: int) -> None:
        if isinstance(item, dict):
            if not item:
                emit("{}")
                return
            emit("{")
            for i, (key, member) in enumerate(item.items()):
                emit(("," if i else "") + "\n" + " " * (indent + 4) + _escape(str(key)) + ": ")
                write(member, indent + 4)
            emit("\n" + " " * indent + "}")
        elif isinstance(item, list):
            if not item:
                emit("[]")
                return
            emit("[")
            for i, member in enumerate(item):
                emit(("," if i else "") + "\n" + " " * (indent + 4))
                write(member, indent + 4)
            emit("\n" + " " * indent + "]")
        elif item is None:
            emit("null")
        elif item is True:
            emit("true")
        elif item is False:
            emit("false")
        elif isinstance(item, str):
            emit(_escape(item))
        elif isinstance(item, float):
            emit(format_decimal(item))
        else:
            emit(str(item))

    try:
        write(value, 0)
    except _Budget:
        return "".join(parts)[:limit] + "...(truncated)"
    return "".join(parts)
