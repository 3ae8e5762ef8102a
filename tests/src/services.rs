//! In-process delegators and results services on a test Postgres, and the lease calls the
//! lease and fault tests make against them.

use facesweep_common::grpc::channel;
use facesweep_common::Shutdown;
use facesweep_proto::delegator_service_client::DelegatorServiceClient;
use facesweep_proto::results_service_client::ResultsServiceClient;
use facesweep_proto::*;
use tonic::transport::Channel;

use crate::TestDb;

pub async fn delegator(
    db: &TestDb,
    index: u32,
    count: u32,
    ttl: u64,
    stop: &Shutdown,
) -> DelegatorServiceClient<Channel> {
    delegator_with(db, index, count, ttl, 3, 3, stop).await
}

#[allow(clippy::too_many_arguments)]
pub async fn delegator_with(
    db: &TestDb,
    index: u32,
    count: u32,
    ttl: u64,
    split_after: i32,
    abandon_after: i32,
    stop: &Shutdown,
) -> DelegatorServiceClient<Channel> {
    let cfg = facesweep_delegator::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        shard_index: index,
        shard_count: count,
        lease_ttl_secs: ttl,
        default_chunk_size: 10,
        db_connections: 4,
        split_after,
        abandon_after,
        // Lease tests drive failures by hand and lease again at once.
        failure_backoff_ms: 0,
        ..facesweep_delegator::Config::new(db.pg.url())
    };
    let running = facesweep_delegator::spawn(cfg, stop.clone()).await.unwrap();
    DelegatorServiceClient::new(channel(&running.addr.to_string()).unwrap())
}

/// A delegator (one shard, chunks of 1,000) for clients that dial by address; its address.
pub async fn delegator_addr(db: &TestDb, stop: &Shutdown) -> String {
    delegator_tweaked(db, |c| c.default_chunk_size = 1000, stop).await
}

/// A delegator on loopback (the binary's defaults, then `tweak`); its address.
pub async fn delegator_tweaked(
    db: &TestDb,
    tweak: impl FnOnce(&mut facesweep_delegator::Config),
    stop: &Shutdown,
) -> String {
    let mut cfg = facesweep_delegator::Config::new(db.pg.url());
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    tweak(&mut cfg);
    facesweep_delegator::spawn(cfg, stop.clone()).await.unwrap().addr.to_string()
}

/// A results service for clients that dial by address; its address.
pub async fn results_addr(db: &TestDb, stop: &Shutdown) -> String {
    let listen = "127.0.0.1:0".parse().unwrap();
    let cfg = facesweep_results::Config { listen, ..facesweep_results::Config::new(db.pg.url()) };
    facesweep_results::spawn(cfg, stop.clone()).await.unwrap().addr.to_string()
}

pub async fn import(
    d: &mut DelegatorServiceClient<Channel>,
    job: &str,
    n: usize,
    chunk: i32,
) -> AppendUrlsResponse {
    d.create_job(CreateJobRequest { name: job.into(), chunk_size: chunk, priority: 0, ..Default::default() })
        .await
        .unwrap();
    let urls: Vec<String> = (0..n).map(|i| format!("http://example.invalid/{i}.jpg")).collect();
    let msg = AppendUrlsRequest { job: job.into(), first_ordinal: 0, urls, ..Default::default() };
    d.append_urls(futures::stream::iter(vec![msg])).await.unwrap().into_inner()
}

pub fn lref(l: &Lease) -> Option<LeaseRef> {
    Some(LeaseRef {
        job_id: l.job_id,
        chunk_no: l.chunk_no,
        fencing_token: l.fencing_token,
        secret: l.secret.clone(),
        fetcher_id: l.fetcher_id.clone(),
    })
}

pub async fn acquire(d: &mut DelegatorServiceClient<Channel>, who: &str) -> Option<Lease> {
    d.acquire_lease(AcquireLeaseRequest { fetcher_id: who.into(), max_urls: 0 })
        .await
        .unwrap()
        .into_inner()
        .lease
}

pub async fn results(db: &TestDb, stop: &Shutdown) -> ResultsServiceClient<Channel> {
    let cfg = facesweep_results::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        db_connections: 4,
        ..facesweep_results::Config::new(db.pg.url())
    };
    let running = facesweep_results::spawn(cfg, stop.clone()).await.unwrap();
    ResultsServiceClient::new(channel(&running.addr.to_string()).unwrap())
}
