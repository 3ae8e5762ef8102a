"""Plain typed values returned by the client (no protobuf types leak out)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from ._gen.facesweep.v1 import common_pb2


def status_name(value: int) -> str:
    """`ok`, `http_error`, ... as in the CLI's exports."""
    return common_pb2.UrlStatus.Name(value).removeprefix("URL_STATUS_").lower()


@dataclass(frozen=True)
class Face:
    """A face in original-image pixels; landmarks: left eye, right eye, nose, mouth corners."""

    box: Tuple[float, float, float, float]
    score: float
    landmarks: Tuple[float, ...] = ()


@dataclass(frozen=True)
class Result:
    """One URL's result as exported or watched; `status` is `pending` for unfinished URLs."""

    url_id: int
    url: str
    status: str
    reason: Optional[str] = None
    http_status: int = 0
    width: int = 0
    height: int = 0
    model_id: Optional[str] = None
    faces: List[Face] = field(default_factory=list)
    # Where a watch can resume after this result (None in exports).
    cursor: Optional[str] = None

    @classmethod
    def from_proto(cls, url: str, r, cursor: Optional[str] = None) -> "Result":
        faces = [Face((f.x1, f.y1, f.x2, f.y2), f.score, tuple(f.landmarks)) for f in r.faces]
        return cls(
            url_id=r.url_id,
            url=url,
            status=status_name(r.status),
            reason=r.reason or None,
            http_status=r.http_status,
            width=r.width,
            height=r.height,
            model_id=r.model_id or None,
            faces=faces,
            cursor=cursor,
        )


@dataclass(frozen=True)
class Job:
    id: int
    name: str
    priority: int
    # False when a job of this name already existed (and was returned unchanged).
    created: bool


@dataclass(frozen=True)
class Imported:
    """What an import did: URLs of the input (skipped included), new ones, and leading URLs
    not sent because the job already held them (a resumed import)."""

    received: int
    inserted: int
    skipped: int


@dataclass(frozen=True)
class Progress:
    total_urls: int
    done_urls: int
    by_status: Dict[str, int]
    rate_per_second: float
    # None while unknown.
    eta_seconds: Optional[float]
    chunks_pending: int
    chunks_leased: int
    chunks_done: int
    leases_reissued: int

    @property
    def done(self) -> bool:
        return self.done_urls >= self.total_urls

    @classmethod
    def from_proto(cls, p) -> "Progress":
        return cls(
            total_urls=p.total_urls,
            done_urls=p.done_urls,
            by_status={s.status: s.count for s in p.by_status},
            rate_per_second=p.rate_per_second,
            eta_seconds=None if p.eta_seconds < 0 else p.eta_seconds,
            chunks_pending=p.chunks_pending,
            chunks_leased=p.chunks_leased,
            chunks_done=p.chunks_done,
            leases_reissued=p.leases_reissued,
        )
