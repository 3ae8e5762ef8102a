"""gRPC failures as a few exceptions whose messages say what to do next."""

from __future__ import annotations

import grpc


class FacesweepError(Exception):
    """Any failed call; `code` is the gRPC status code, `details` the server's message."""

    def __init__(self, message: str, code: grpc.StatusCode | None = None, details: str = ""):
        super().__init__(message)
        self.code = code
        self.details = details


class Unavailable(FacesweepError):
    """The service did not answer (not started, wrong address, restarting)."""


class AuthError(FacesweepError):
    """An admin call refused: no token, a wrong token, or not from loopback."""


class NotFound(FacesweepError):
    """No such job (or URL)."""


class Conflict(FacesweepError):
    """The job exists in another shape (another input, other models)."""


class InvalidArgument(FacesweepError):
    """The request itself is wrong (a name, a URL over 8 KiB, a share outside 0..1)."""


class Timeout(FacesweepError):
    """The call took longer than the client's timeout."""


class Overloaded(FacesweepError):
    """The service shed the call; retry later."""


_HINTS = {
    grpc.StatusCode.UNAVAILABLE: (
        Unavailable,
        "cannot reach the {service} at {addr}: start the services (`facesweep up`) or pass "
        "the right address",
    ),
    grpc.StatusCode.UNAUTHENTICATED: (
        AuthError,
        "the {service} at {addr} wants an admin token: pass token= (the services' "
        "--admin-token) or set FACESWEEP_ADMIN_TOKEN",
    ),
    grpc.StatusCode.PERMISSION_DENIED: (
        AuthError,
        "the {service} at {addr} refused the call: admin calls come from loopback or carry "
        "the services' --admin-token (token= or FACESWEEP_ADMIN_TOKEN)",
    ),
    grpc.StatusCode.NOT_FOUND: (NotFound, "not found: check the job name (`facesweep jobs` lists them)"),
    grpc.StatusCode.FAILED_PRECONDITION: (
        Conflict,
        "refused by the {service}: use a new job name for a different input or other models",
    ),
    grpc.StatusCode.ALREADY_EXISTS: (Conflict, "already exists: choose another name"),
    grpc.StatusCode.INVALID_ARGUMENT: (InvalidArgument, "invalid request: fix the argument named below"),
    grpc.StatusCode.DEADLINE_EXCEEDED: (
        Timeout,
        "no answer from the {service} at {addr} in time: pass a larger timeout= or check its load",
    ),
    grpc.StatusCode.RESOURCE_EXHAUSTED: (Overloaded, "the {service} at {addr} is overloaded: retry later"),
}


def translate(err: grpc.RpcError, service: str, addr: str) -> FacesweepError:
    """The exception for a failed call to `service` at `addr`."""
    code = err.code() if hasattr(err, "code") else None
    details = (err.details() if hasattr(err, "details") else "") or ""
    cls, hint = _HINTS.get(code, (FacesweepError, "{service} call failed at {addr}"))
    message = hint.format(service=service, addr=addr)
    if details:
        message = f"{message} ({details})"
    return cls(message, code=code, details=details)
