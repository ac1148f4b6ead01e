"""An SLS error answer: HTTP status, ``errorCode`` and ``errorMessage`` as the service sends them."""

from __future__ import annotations


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.operation = ""  # set by the API once the request is routed
