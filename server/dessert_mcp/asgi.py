"""ASGI helpers the HTTP and auth wings share: watching what an app sends, without changing it."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from starlette.types import Message, Send

__all__ = ["WatchedSend"]


class WatchedSend:
    """One request's `send`, passed through untouched, noting the response's status and when its last part went out.

    `status` is 0 until the response starts; `finished` turns true once the final body part has been sent.
    """

    __slots__ = ("_send", "finished", "status")

    def __init__(self, send: Send) -> None:
        self._send = send
        self.status = 0
        self.finished = False

    async def __call__(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            self.status = message["status"]
        await self._send(message)
        if kind == "http.response.body" and not message.get("more_body", False):
            self.finished = True
