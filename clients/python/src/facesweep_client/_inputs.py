"""Which part of an input a job already holds, as the CLI decides it (cli/src/inputs.rs).

A job remembers each input as segments: lines input_from..input_from+urls stored at
ordinals base.., with the sha256 of the input's lines up to there (each followed by "\\n").
An input whose first lines hash to a segment's digest is that input (interrupted or grown):
the import resumes after it. Any other input goes whole to the job's first free ordinal. The
same hashing as the CLI, so a list imported by either is recognised by the other.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Iterable, Iterator, List, Optional


@dataclass
class Plan:
    base: int
    input_from: int
    stored: int
    resume_at: int


def clean(urls: Iterable[str]) -> Iterator[str]:
    """URLs trimmed; blank lines and `#` comments dropped (as the CLI reads files)."""
    for u in urls:
        if not isinstance(u, str):
            raise TypeError(f"import_urls takes strings, got {type(u).__name__}: {u!r}")
        u = u.strip()
        if u and not u.startswith("#"):
            yield u


def plan(urls: Iterator[str], segments, next_free: int):
    """Reads `urls` only as far as the longest segment. Returns the plan, the sha256 state
    of the lines before resume_at, and the lines read past it (to send before the rest)."""
    by_end = {}
    for s in segments:
        by_end.setdefault(s.input_from + s.urls, []).append(s)
    longest = max(by_end, default=0)
    h, n = hashlib.sha256(), 0
    best, best_hash, after_best = None, hashlib.sha256(), []
    read_past: List[str] = []
    while n < longest:
        url = next(urls, None)
        if url is None:
            break
        h.update(url.encode() + b"\n")
        n += 1
        read_past.append(url)
        matching = [s for s in by_end.get(n, []) if s.digest == h.hexdigest()]
        if matching:
            # Among equal matches the job's last segment wins: it can grow in place.
            matching.sort(key=lambda s: s.base + s.urls == next_free)
            best, best_hash, read_past = matching[-1], h.copy(), []
    after_best = read_past
    if best is None:
        p = Plan(base=next_free, input_from=0, stored=0, resume_at=0)
        return p, hashlib.sha256(), after_best
    end = best.input_from + best.urls
    if best.base + best.urls == next_free:
        p = Plan(base=best.base, input_from=best.input_from, stored=best.urls, resume_at=end)
    else:
        # Other URLs follow it: the rest of this input starts a segment of its own.
        p = Plan(base=next_free, input_from=end, stored=0, resume_at=end)
    return p, best_hash, after_best


def messages(job: str, p: Plan, h, urls: Iterator[str], chunk: int, pb, sent: List[int]):
    """AppendUrls messages of `chunk` URLs, each carrying its segment as of its last URL;
    `sent[0]` counts the URLs handed to the stream."""
    stored = p.stored
    while True:
        batch: List[str] = []
        for u in urls:
            batch.append(u)
            if len(batch) == chunk:
                break
        if not batch:
            return
        for u in batch:
            h.update(u.encode() + b"\n")
        first = p.base + stored
        stored += len(batch)
        seg = pb.InputSegment(
            base=p.base, input_from=p.input_from, urls=stored, digest=h.hexdigest(), grown_from=p.stored
        )
        sent[0] += len(batch)
        yield pb.AppendUrlsRequest(job=job, first_ordinal=first, urls=batch, segment=seg)
