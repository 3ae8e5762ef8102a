//! gRPC surface of the results service: validation, then the store.

use std::pin::Pin;
use std::sync::Arc;

use facesweep_common::auth::{Access, Authorizer, FETCHER};
use facesweep_common::error::ServiceError;
use facesweep_common::{url_id, Shutdown, MAX_ORDINAL};
use facesweep_proto::results_service_server::ResultsService;
use facesweep_proto::{
    ExportResultsRequest, ExportResultsResponse, GetUrlResultRequest, GetUrlResultResponse, RecordRequest,
    RecordResponse, UrlResult, UrlStatus, WatchResultsRequest, WatchResultsResponse,
};
use futures::Stream;
use tonic::{Request, Response, Status};

use crate::metrics::Metrics;
use crate::store::{ExportRow, Store};

/// Largest batch one `Record` call may carry.
pub const MAX_BATCH: usize = 10_000;
const EXPORT_PAGE: i64 = 1_000;

pub struct ResultsSvc {
    store: Store,
    auth: Authorizer,
    /// Ends watch streams on shutdown (they would hold the drain open otherwise).
    shutdown: Shutdown,
    metrics: Arc<Metrics>,
}

impl ResultsSvc {
    pub fn new(store: Store, auth: Authorizer, shutdown: Shutdown, metrics: Arc<Metrics>) -> Self {
        ResultsSvc { store, auth, shutdown, metrics }
    }
}

/// Rejects a batch that is too large to take at all.
pub fn validate(results: &[UrlResult]) -> Result<(), ServiceError> {
    if results.len() > MAX_BATCH {
        return Err(ServiceError::InvalidArgument(format!(
            "{} results in one batch (max {MAX_BATCH})",
            results.len()
        )));
    }
    if let Some(r) = results.iter().find(|r| r.url_id <= 0) {
        return Err(ServiceError::InvalidArgument(format!("url {}: url_id must be positive", r.url_id)));
    }
    Ok(())
}

/// Why one result cannot be stored as sent; `None` when it can.
pub fn check_row(r: &UrlResult) -> Option<&'static str> {
    match UrlStatus::try_from(r.status) {
        Ok(UrlStatus::Unspecified) | Err(_) => return Some("status must be terminal"),
        Ok(UrlStatus::Ok) => {}
        Ok(_) if !r.faces.is_empty() => return Some("a failed URL cannot carry faces"),
        Ok(_) if r.reason.is_empty() => return Some("a failure needs a reason"),
        Ok(_) => {}
    }
    for f in &r.faces {
        let nums = [f.x1, f.y1, f.x2, f.y2, f.score];
        if nums.iter().chain(&f.landmarks).any(|v| !v.is_finite()) {
            return Some("face with a non-finite number");
        }
        if !(f.landmarks.is_empty() || f.landmarks.len() == 10) {
            return Some("landmarks must be 0 or 10 numbers");
        }
    }
    None
}

/// One bad row does not cost the batch: it is stored as `detect_error` with the reason, so
/// its URL is not retried forever. Returns how many rows were replaced.
pub fn replace_bad_rows(results: &mut [UrlResult]) -> u32 {
    let mut replaced = 0;
    for r in results.iter_mut() {
        if let Some(why) = check_row(r) {
            tracing::warn!(url_id = r.url_id, why, "result refused; storing detect_error");
            *r = UrlResult {
                url_id: r.url_id,
                job_id: r.job_id,
                status: UrlStatus::DetectError as i32,
                reason: format!("result refused by the results service: {why}"),
                model_id: std::mem::take(&mut r.model_id),
                ..Default::default()
            };
            replaced += 1;
        }
    }
    replaced
}

#[tonic::async_trait]
impl ResultsService for ResultsSvc {
    async fn record(&self, req: Request<RecordRequest>) -> Result<Response<RecordResponse>, Status> {
        // A certificate naming a fetcher records only under that fetcher's leases.
        let holder = req.get_ref().lease.as_ref().map_or("", |l| l.fetcher_id.as_str());
        self.auth.check_as(&req, FETCHER, holder)?;
        let RecordRequest { mut results, lease } = req.into_inner();
        validate(&results)?;
        // Only the holder of a live lease writes results, and only for the URLs it holds.
        let lease = lease.ok_or_else(|| ServiceError::InvalidArgument("lease is required".into()))?;
        facesweep_store::lease::check_presented(&lease)?;
        let rejected = replace_bad_rows(&mut results);
        let m = &self.metrics;
        let timer = m.persist_seconds.start_timer();
        let out = self.store.record(&lease, &results).await?;
        timer.observe_duration();
        m.persisted.inc_by(out.inserted as u64);
        m.duplicates.inc_by(out.duplicates as u64);
        tracing::debug!(inserted = out.inserted, duplicates = out.duplicates, "recorded");
        Ok(Response::new(RecordResponse {
            inserted: out.inserted,
            duplicates: out.duplicates,
            unknown: out.unknown,
            rejected,
        }))
    }

    async fn get_url_result(
        &self,
        req: Request<GetUrlResultRequest>,
    ) -> Result<Response<GetUrlResultResponse>, Status> {
        self.auth.check(&req, Access::Admin)?;
        let id = req.into_inner().url_id;
        if id <= 0 {
            return Err(ServiceError::InvalidArgument("url_id must be positive".into()).into());
        }
        let row = self.store.get(id).await?;
        Ok(Response::new(GetUrlResultResponse { url: row.url, result: row.result }))
    }

    type ExportResultsStream =
        Pin<Box<dyn Stream<Item = Result<ExportResultsResponse, Status>> + Send + 'static>>;

    type WatchResultsStream =
        Pin<Box<dyn Stream<Item = Result<WatchResultsResponse, Status>> + Send + 'static>>;

    async fn watch_results(
        &self,
        req: Request<WatchResultsRequest>,
    ) -> Result<Response<Self::WatchResultsStream>, Status> {
        self.auth.check(&req, Access::Admin)?;
        let msg = req.into_inner();
        if msg.job.is_empty() {
            return Err(ServiceError::InvalidArgument("job name is empty".into()).into());
        }
        let after = crate::watch::Cursor::parse(&msg.after)?;
        let job_id = self.store.job_id(&msg.job).await?;
        let (tx, rx) = crate::watch::channel();
        let lag = self.metrics.watch_lag_seconds.clone();
        tokio::spawn(crate::watch::pump(self.store.clone(), job_id, after, tx, self.shutdown.clone(), lag));
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn export_results(
        &self,
        req: Request<ExportResultsRequest>,
    ) -> Result<Response<Self::ExportResultsStream>, Status> {
        self.auth.check(&req, Access::Admin)?;
        let ExportResultsRequest { job, model_id } = req.into_inner();
        if job.is_empty() {
            return Err(ServiceError::InvalidArgument("job name is empty".into()).into());
        }
        if !facesweep_common::ab::valid_model_id(&model_id) {
            return Err(ServiceError::InvalidArgument(format!("{model_id:?} is not a model id")).into());
        }
        let job_id = self.store.job_id(&job).await?;
        let store = self.store.clone();
        // A model filter drops rows after paging, so pages (and memory) stay the same size.
        let wanted = move |r: &ExportRow| {
            model_id.is_empty() || r.result.as_ref().is_some_and(|x| x.model_id == model_id)
        };
        let (first, last) = (url_id(job_id, 0), url_id(job_id, MAX_ORDINAL));
        // Keyset pagination: memory stays bounded whatever the job size.
        let stream = futures::stream::try_unfold(Some(first), move |next| {
            let (store, wanted) = (store.clone(), wanted.clone());
            async move {
                let Some(from) = next else { return Ok(None) };
                let page = store.page(from, last, EXPORT_PAGE).await?;
                let cont = (page.len() as i64 == EXPORT_PAGE).then(|| page.last().unwrap().url_id + 1);
                let items: Vec<Result<ExportResultsResponse, Status>> =
                    page.into_iter().filter(wanted).map(|r| Ok(to_export(r))).collect();
                Ok::<_, Status>(Some((futures::stream::iter(items), cont)))
            }
        });
        use futures::TryStreamExt;
        Ok(Response::new(Box::pin(stream.try_flatten())))
    }
}

fn to_export(row: ExportRow) -> ExportResultsResponse {
    let pending_url_id = if row.result.is_none() { row.url_id } else { 0 };
    ExportResultsResponse {
        url: row.url,
        result: row.result,
        pending_url_id,
        extra: row.extra.unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use facesweep_proto::Face;

    fn ok(id: i64) -> UrlResult {
        UrlResult { url_id: id, status: UrlStatus::Ok as i32, ..Default::default() }
    }

    #[test]
    fn validation_rejects_what_cannot_be_stored() {
        assert!(validate(&[ok(1)]).is_ok());
        assert!(validate(&[ok(0)]).is_err());
        assert!(validate(&vec![ok(1); MAX_BATCH + 1]).is_err());
        assert!(check_row(&ok(1)).is_none());
        assert!(check_row(&UrlResult { status: 0, ..ok(1) }).is_some());
        assert!(check_row(&UrlResult { status: 999, ..ok(1) }).is_some());
        let failed = UrlResult { status: UrlStatus::Timeout as i32, ..ok(1) };
        assert!(check_row(&failed).is_some(), "failure without reason");
        assert!(check_row(&UrlResult { reason: "slow".into(), ..failed }).is_none());
        let nan = Face { x1: f32::NAN, ..Default::default() };
        assert!(check_row(&UrlResult { faces: vec![nan], ..ok(1) }).is_some());
        let lm = Face { landmarks: vec![1.0; 3], ..Default::default() };
        assert!(check_row(&UrlResult { faces: vec![lm], ..ok(1) }).is_some());
    }

    #[test]
    fn one_bad_row_is_replaced_and_the_rest_kept() {
        let nan = Face { landmarks: vec![f32::NAN; 10], ..Default::default() };
        let mut batch = vec![ok(1), UrlResult { faces: vec![nan], model_id: "m".into(), ..ok(2) }, ok(3)];
        assert_eq!(replace_bad_rows(&mut batch), 1);
        assert_eq!(batch[0], ok(1));
        assert_eq!(batch[2], ok(3));
        assert_eq!(batch[1].status(), UrlStatus::DetectError);
        assert!(batch[1].faces.is_empty() && batch[1].reason.contains("non-finite"), "{:?}", batch[1]);
    }
}
