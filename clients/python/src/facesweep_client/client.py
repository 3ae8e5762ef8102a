"""A small typed wrapper over the delegator's and results' gRPC APIs."""

from __future__ import annotations

import itertools
import os
from typing import Iterable, Iterator, Optional

import grpc

from . import _inputs
from ._gen.facesweep.v1 import delegator_pb2 as dpb
from ._gen.facesweep.v1 import delegator_pb2_grpc
from ._gen.facesweep.v1 import results_pb2 as rpb
from ._gen.facesweep.v1 import results_pb2_grpc
from .errors import FacesweepError, translate
from .types import Imported, Job, Progress, Result

# URLs per AppendUrls message (the CLI's size).
IMPORT_CHUNK = 5000
_MAX_MESSAGE = 64 << 20


class Client:
    """Calls a facesweep mesh: the delegator (jobs, imports, progress) and results (watch,
    export). `token` is the services' --admin-token (default: $FACESWEEP_ADMIN_TOKEN); on
    loopback without one, admin calls are accepted. `timeout` bounds each unary call.

    >>> c = Client()
    >>> c.create_job("photos"); c.import_urls("photos", open("urls.txt"))
    >>> for r in c.watch("photos"): print(r.url, r.status, len(r.faces), r.cursor)
    """

    def __init__(
        self,
        delegator: str = "127.0.0.1:50051",
        results: str = "127.0.0.1:50053",
        token: Optional[str] = None,
        timeout: float = 30.0,
    ):
        self.delegator_addr, self.results_addr, self.timeout = delegator, results, timeout
        token = token if token is not None else os.environ.get("FACESWEEP_ADMIN_TOKEN") or None
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        opts = [("grpc.max_receive_message_length", _MAX_MESSAGE)]
        self._dch = grpc.insecure_channel(delegator, options=opts)
        self._rch = grpc.insecure_channel(results, options=opts)
        self._d = delegator_pb2_grpc.DelegatorServiceStub(self._dch)
        self._r = results_pb2_grpc.ResultsServiceStub(self._rch)

    def close(self) -> None:
        self._dch.close()
        self._rch.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _call(self, method, request, service: str, addr: str, timeout: Optional[float] = None):
        try:
            return method(request, metadata=self._metadata, timeout=timeout or self.timeout)
        except grpc.RpcError as e:
            raise translate(e, service, addr) from None

    def _stream(self, method, request, service: str, addr: str, timeout: Optional[float]):
        try:
            for item in method(request, metadata=self._metadata, timeout=timeout):
                yield item
        except grpc.RpcError as e:
            raise translate(e, service, addr) from None

    def create_job(
        self,
        name: str,
        *,
        priority: int = 0,
        chunk_size: int = 0,
        model: Optional[str] = None,
        ab_model: Optional[str] = None,
        ab_share: float = 0.0,
        input_digest: str = "",
    ) -> Job:
        """Creates the job, or returns the existing one (`created` False). Models are fixed at
        creation; `ab_model` gets `ab_share` of the URLs (by URL id)."""
        models = None
        if model or ab_model:
            models = dpb.ModelSplit(model_id=model or "", alt_model_id=ab_model or "", alt_share=ab_share)
        req = dpb.CreateJobRequest(
            name=name, chunk_size=chunk_size, priority=priority, input_digest=input_digest, models=models
        )
        resp = self._call(self._d.CreateJob, req, "delegator", self.delegator_addr)
        return Job(id=resp.job.id, name=resp.job.name, priority=resp.job.priority, created=resp.created)

    def import_urls(self, job: str, urls: Iterable[str], *, chunk: int = IMPORT_CHUNK) -> Imported:
        """Streams `urls` (any iterable, read once, lazily) into `job` (created if needed) in
        numbered chunks. Importing the same URLs again adds nothing; an interrupted or grown
        input resumes after the part the job holds; a different input is appended whole."""
        if chunk < 1:
            raise ValueError("chunk must be at least 1")
        self.create_job(job)
        held = self._call(self._d.ListJobInputs, dpb.ListJobInputsRequest(job=job), "delegator",
                          self.delegator_addr)
        it = _inputs.clean(urls)
        plan, h, read_ahead = _inputs.plan(it, held.segments, held.next_free_ordinal)
        sent = [0]
        stream = _inputs.messages(job, plan, h, itertools.chain(read_ahead, it), chunk, dpb, sent)
        try:
            resp = self._d.AppendUrls(stream, metadata=self._metadata)
        except grpc.RpcError as e:
            raise translate(e, "delegator", self.delegator_addr) from None
        if resp.received != sent[0]:
            raise FacesweepError(
                f"the delegator received {resp.received} of {sent[0]} URLs: import again to resume"
            )
        skip = plan.resume_at
        return Imported(received=resp.received + skip, inserted=resp.inserted, skipped=skip)

    def progress(self, job: str) -> Progress:
        resp = self._call(self._d.GetProgress, dpb.GetProgressRequest(job=job), "delegator", self.delegator_addr)
        return Progress.from_proto(resp)

    def watch(self, job: str, after: Optional[str] = None, *, timeout: Optional[float] = None) -> Iterator[Result]:
        """Results as they are stored; each carries `cursor`: pass the last one as `after` to
        resume. Ends once every URL of the job has a result (or after `timeout` seconds)."""
        req = rpb.WatchResultsRequest(job=job, after=after or "")
        for r in self._stream(self._r.WatchResults, req, "results", self.results_addr, timeout):
            yield Result.from_proto(r.url, r.result, cursor=r.cursor)

    def export(self, job: str, *, model: Optional[str] = None, timeout: Optional[float] = None) -> Iterator[Result]:
        """Every URL of the job, one result each (`pending` for unfinished), streamed."""
        req = rpb.ExportResultsRequest(job=job, model_id=model or "")
        for r in self._stream(self._r.ExportResults, req, "results", self.results_addr, timeout):
            if r.HasField("result"):
                yield Result.from_proto(r.url, r.result)
            else:
                yield Result(url_id=r.pending_url_id, url=r.url, status="pending")

    def to_arrow(self, job: str, *, model: Optional[str] = None):
        """The export as a pyarrow Table (the CLI's Parquet columns); needs pyarrow."""
        from ._frames import to_arrow

        return to_arrow(self.export(job, model=model))

    def to_pandas(self, job: str, *, model: Optional[str] = None):
        """The export as a pandas DataFrame, one row per URL, `faces` a list of dicts; needs pandas."""
        from ._frames import to_pandas

        return to_pandas(self.export(job, model=model))
