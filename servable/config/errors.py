"""``ConfigError`` and the shared text-proto file reader for every config file.

A config file that cannot be read or parsed is an operator error with TF Serving's code
(INVALID_ARGUMENT for a malformed file, NOT_FOUND for a missing one), so ``ConfigError``
is a ``ServingError``: the gRPC reload path and the startup path report it the same way.
"""

from __future__ import annotations

import errno
from typing import TypeVar

from google.protobuf import text_format
from google.protobuf.message import Message

from servable.core.status import Code, ServingError

M = TypeVar("M", bound=Message)


class ConfigError(ServingError):
    """A config file that cannot be used; ``path``, ``line`` and ``column`` say where (1-based)."""

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        line: int | None = None,
        column: int | None = None,
        code: Code = Code.INVALID_ARGUMENT,
    ) -> None:
        super().__init__(code, message)
        self.path = path
        self.line = line
        self.column = column


def parse_text_proto(text: str, message: M, *, source: str = "<text>") -> M:
    """Parse protobuf text format into ``message``; errors name the source, line and column.

    The message starts with TF Serving's two diagnostics ("Invalid protobuf file: '<path>'"
    and "Error parsing text-format <type>: <line>:<col>: ...") so scripts that grep for
    either keep working.
    """
    type_name = message.DESCRIPTOR.full_name
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as error:
        line, column = error.GetLine(), error.GetColumn()
        detail = str(error)
        if line is not None and detail.startswith(f"{line}:{column} : "):
            detail = detail[len(f"{line}:{column} : "):]
        where = f"{source}:{line}:{column}" if line is not None else source
        raise ConfigError(
            f"Invalid protobuf file: '{source}': Error parsing text-format {type_name}: "
            f"{line}:{column}: {detail} (at {where})",
            path=source,
            line=line,
            column=column,
        ) from None
    return message


def read_text_file(path: str, what: str) -> str:
    """Read a UTF-8 config file; ``what`` names it in errors ("model config file")."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as error:
        code = Code.NOT_FOUND if error.errno == errno.ENOENT else Code.INVALID_ARGUMENT
        raise ConfigError(f"Could not read {what} '{path}': {error.strerror}", path=path, code=code) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"Invalid protobuf file: '{path}': {what} is not UTF-8 text ({error.reason} "
                          f"at byte {error.start})", path=path) from None


def load_text_proto(path: str, message: M, what: str) -> M:
    """``read_text_file`` then ``parse_text_proto``."""
    return parse_text_proto(read_text_file(path, what), message, source=path)
