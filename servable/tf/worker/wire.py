"""Framed messages between the server and its model worker process, over a socket pair.

A message is any picklable object; numpy arrays travel as pickle protocol 5 out-of-band
buffers, so a ``[32, 784]`` float batch is written from its own memory and read into one
``bytearray`` the received array then uses (no copy through an intermediate ``bytes``).
Frame: ``<payload length u32><buffer count u16>``, the buffer lengths (u64 each), the
pickle payload, then the raw buffers.

Both ends trust each other: the sockets are a private ``socketpair`` between the server
and the child it started, never a listening address, so unpickling is not an exposure.

A ``Channel`` is used by one thread at a time (the worker serves each channel on its own
thread; the server's ``ModelProcess`` lends each calling thread a channel of its own).
Blocking reads and writes release the GIL.
"""

from __future__ import annotations

import pickle
import socket
import struct
from typing import Any

_HEADER = struct.Struct("<IH")
_SMALL = 64 * 1024  # frames up to this size go out in one sendall
_READ_CHUNK = 256 * 1024
SOCKET_BUFFER_BYTES = 4 * 1024 * 1024


class ChannelClosed(EOFError):
    """The other end closed the channel (or died) before a whole frame arrived."""


class Channel:
    """One end of a socket pair carrying framed messages; see the module docstring."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
            try:
                sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER_BYTES)
            except OSError:  # the kernel's cap applies; only throughput changes
                pass
        self._buffer = bytearray(_READ_CHUNK)
        self._view = memoryview(self._buffer)
        self._start = 0
        self._end = 0

    def send(self, message: Any) -> None:
        """Write one message; raises ``ChannelClosed`` when the other end is gone."""
        buffers: list[pickle.PickleBuffer] = []
        payload = pickle.dumps(message, protocol=5, buffer_callback=buffers.append)
        raws = [buffer.raw() for buffer in buffers]
        head = _HEADER.pack(len(payload), len(raws)) + struct.pack(f"<{len(raws)}Q", *(raw.nbytes for raw in raws))
        try:
            if len(payload) + sum(raw.nbytes for raw in raws) <= _SMALL:
                self.sock.sendall(b"".join([head, payload, *raws]))
            else:
                self.sock.sendall(head + payload)
                for raw in raws:
                    self.sock.sendall(raw)
        except (BrokenPipeError, ConnectionResetError) as error:
            raise ChannelClosed(str(error)) from None

    def recv(self) -> Any:
        """Read one message, blocking; raises ``ChannelClosed`` on end of stream."""
        length, count = _HEADER.unpack(self._read(_HEADER.size))
        sizes = struct.unpack(f"<{count}Q", self._read(8 * count)) if count else ()
        payload = self._read(length)
        buffers = [self._read_owned(size) for size in sizes]
        return pickle.loads(payload, buffers=buffers)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    # -- reading ----------------------------------------------------------------------

    def _fill(self) -> None:
        if self._start == self._end:
            self._start = self._end = 0
        elif self._end == len(self._buffer):  # keep the unread tail at the front
            tail = self._end - self._start
            self._buffer[:tail] = self._buffer[self._start:self._end]
            self._start, self._end = 0, tail
        try:
            received = self.sock.recv_into(self._view[self._end:])
        except ConnectionResetError:
            received = 0
        if received == 0:
            raise ChannelClosed("the other end closed the channel")
        self._end += received

    def _read(self, size: int) -> bytes:
        """``size`` bytes of the stream (small parts: header, sizes, pickle payload)."""
        if size > len(self._buffer):
            return bytes(self._read_owned(size))
        while self._end - self._start < size:
            if len(self._buffer) - self._start < size:  # not enough room after the start
                tail = self._end - self._start
                self._buffer[:tail] = self._buffer[self._start:self._end]
                self._start, self._end = 0, tail
            self._fill()
        data = bytes(self._view[self._start:self._start + size])
        self._start += size
        return data

    def _read_owned(self, size: int) -> bytearray:
        """``size`` bytes in a buffer of their own (an array's memory after unpickling)."""
        out = bytearray(size)
        view = memoryview(out)
        buffered = min(self._end - self._start, size)
        view[:buffered] = self._view[self._start:self._start + buffered]
        self._start += buffered
        position = buffered
        while position < size:
            try:
                received = self.sock.recv_into(view[position:])
            except ConnectionResetError:
                received = 0
            if received == 0:
                raise ChannelClosed("the other end closed the channel")
            position += received
        return out
