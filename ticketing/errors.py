"""Refusals that carry their HTTP status, raised by the order service and the routes alike; the API
renders every one in the contract's error shape {"errors": [{"message", "field"}]}."""

from __future__ import annotations


class ServiceError(Exception):
    def __init__(self, status_code: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.field = field


class BadRequest(ServiceError):
    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(400, message, field)


class NotFound(ServiceError):
    def __init__(self, message: str = "Not found") -> None:
        super().__init__(404, message)


class NotAuthorized(ServiceError):
    def __init__(self, message: str = "Not authorized") -> None:
        super().__init__(401, message)
