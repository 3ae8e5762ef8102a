"""facesweep-client against a live `facesweep up` (conftest.py starts it)."""

from __future__ import annotations

import grpc
import pytest

from facesweep_client import Client, Conflict, NotFound, Unavailable
from facesweep_client import _inputs
from facesweep_client.errors import AuthError, translate

from conftest import wait_until


def test_import_watch_progress_export(mesh, photos):
    c = Client(*mesh)
    urls = [f"{photos}/astronaut.png", f"{photos}/grace_hopper.jpg", f"{photos}/missing.jpg"]
    assert c.create_job("py").created
    assert not c.create_job("py").created
    first = c.import_urls("py", iter(urls))
    assert (first.received, first.inserted, first.skipped) == (3, 3, 0)
    again = c.import_urls("py", urls)
    assert (again.received, again.inserted, again.skipped) == (3, 0, 3), "the same list resumes, adds nothing"
    grown = c.import_urls("py", urls + [f"{photos}/astronaut.png?copy=2"])
    assert (grown.received, grown.inserted, grown.skipped) == (4, 1, 3), "a grown list adds only its tail"

    p = wait_until(lambda: (lambda p: p if p.done else None)(c.progress("py")), 120, "job py done")
    assert (p.total_urls, p.by_status) == (4, {"ok": 3, "http_error": 1}), p

    watched = list(c.watch("py", timeout=60))
    assert sorted(r.url for r in watched) == sorted(urls + [f"{photos}/astronaut.png?copy=2"])
    assert all(r.cursor for r in watched), "every watched result carries a resume cursor"
    rest = list(c.watch("py", after=watched[1].cursor, timeout=60))
    assert [r.url for r in rest] == [r.url for r in watched[2:]], "resuming after a cursor"

    exported = {r.url: r for r in c.export("py")}
    astro = exported[f"{photos}/astronaut.png"]
    assert astro.status == "ok" and len(astro.faces) == 1 and astro.faces[0].score > 0.9
    assert len(astro.faces[0].landmarks) == 10 and astro.width == 512
    missing = exported[f"{photos}/missing.jpg"]
    assert (missing.status, missing.http_status, missing.faces) == ("http_error", 404, [])

    df = c.to_pandas("py")
    assert len(df) == 4 and sorted(df["status"]) == ["http_error", "ok", "ok", "ok"]
    assert df.set_index("url").loc[f"{photos}/grace_hopper.jpg", "faces"][0]["score"] > 0.9
    t = c.to_arrow("py")
    assert t.num_rows == 4 and t.schema.field("faces").type.value_type.num_fields == 6
    assert sum(len(f) for f in t.column("faces").to_pylist()) == 3


def test_an_interrupted_import_resumes_where_it_stopped(mesh):
    from facesweep_client._gen.facesweep.v1 import delegator_pb2 as dpb

    c = Client(*mesh)
    # Paused: no fetcher works on these; only the import is under test.
    c.create_job("py-resume")
    c._d.PauseJob(dpb.PauseJobRequest(job="py-resume"))
    urls = [f"http://127.0.0.1:9/{i}.jpg" for i in range(30_000)]

    def dies_after_a_stored_batch():
        yield from urls[:25_000]
        # The delegator stores 20,000 URLs at a time: die once it has stored the first batch.
        wait_until(lambda: c.progress("py-resume").total_urls == 20_000, 60, "first batch stored")
        raise RuntimeError("reader died")

    with pytest.raises(Exception):
        c.import_urls("py-resume", dies_after_a_stored_batch())
    assert c.progress("py-resume").total_urls == 20_000
    done = c.import_urls("py-resume", urls)
    assert (done.received, done.skipped, done.inserted) == (30_000, 20_000, 10_000)
    assert c.progress("py-resume").total_urls == 30_000


def test_errors_say_what_to_do(mesh):
    c = Client(*mesh)
    with pytest.raises(NotFound, match="facesweep jobs"):
        c.progress("no-such-job")
    with pytest.raises(Unavailable, match="facesweep up"):
        Client("127.0.0.1:1", "127.0.0.1:1", timeout=3).progress("x")
    c.create_job("py-models")
    with pytest.raises(Conflict, match="new job name"):
        c.create_job("py-models", model="another-model-v1")


class _Rpc(grpc.RpcError):
    def __init__(self, code):
        self._code = code

    def code(self):
        return self._code

    def details(self):
        return "admin call from 10.0.0.2"


def test_auth_errors_name_the_token():
    e = translate(_Rpc(grpc.StatusCode.PERMISSION_DENIED), "delegator", "10.0.0.1:50051")
    assert isinstance(e, AuthError) and "--admin-token" in str(e) and "10.0.0.2" in str(e)


class _Seg:
    def __init__(self, base, input_from, urls, lines):
        import hashlib

        h = hashlib.sha256()
        for u in lines:
            h.update(u.encode() + b"\n")
        self.base, self.input_from, self.urls, self.digest = base, input_from, urls, h.hexdigest()


def test_plans_match_the_clis():
    # The cases of cli/src/inputs.rs: the same input grown, another input, a grown input
    # that another input followed.
    a = _Seg(0, 0, 2, ["a1", "a2"])
    same, _, ahead = _inputs.plan(iter(["a1", "a2", "a3"]), [a], 2)
    assert (same.base, same.input_from, same.stored, same.resume_at, ahead) == (0, 0, 2, 2, [])
    other, _, ahead = _inputs.plan(iter(["b1", "b2", "b3"]), [a], 2)
    assert (other.base, other.stored, other.resume_at, ahead) == (2, 0, 0, ["b1", "b2"])
    b = _Seg(2, 0, 1, ["b1"])
    grown, _, _ = _inputs.plan(iter(["a1", "a2", "a3"]), [a, b], 3)
    assert (grown.base, grown.input_from, grown.stored, grown.resume_at) == (3, 2, 0, 2)
