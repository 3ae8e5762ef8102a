"""facesweep-client: jobs, imports, progress, watch and export over facesweep's gRPC APIs."""

from .client import Client
from .errors import (
    AuthError,
    Conflict,
    FacesweepError,
    InvalidArgument,
    NotFound,
    Overloaded,
    Timeout,
    Unavailable,
)
from .types import Face, Imported, Job, Progress, Result

__all__ = [
    "Client", "Face", "Imported", "Job", "Progress", "Result", "FacesweepError", "Unavailable",
    "AuthError", "NotFound", "Conflict", "InvalidArgument", "Timeout", "Overloaded",
]
