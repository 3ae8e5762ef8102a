//! Postgres access for results. Every write is idempotent: the first terminal result wins.

use std::collections::HashSet;

use facesweep_common::error::{ServiceError, ServiceResult};
use facesweep_proto::{Face, LeaseRef, UrlResult, UrlStatus};
use facesweep_store::terminal;
use sqlx::PgPool;

#[derive(Clone)]
pub struct Store {
    pub(crate) pool: PgPool,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct RecordOutcome {
    pub inserted: u32,
    pub duplicates: u32,
    pub unknown: u32,
}

/// One URL's row for export: the URL and its result, if any.
pub struct ExportRow {
    pub url_id: i64,
    pub url: String,
    pub result: Option<UrlResult>,
    /// The columns imported with the URL (a JSON object text), if any.
    pub extra: Option<String>,
}

impl Store {
    pub fn new(pool: PgPool) -> Self {
        Store { pool }
    }

    /// The id of the job called `name`.
    pub async fn job_id(&self, name: &str) -> ServiceResult<i64> {
        sqlx::query_scalar("SELECT id FROM jobs WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("job {name:?}")))
    }

    /// Stores a batch under `lease` in one transaction; URLs that already have a result are
    /// left untouched. The lease's chunk row is locked (FOR SHARE) in the writing transaction,
    /// so a cancel or delete that revokes the lease waits for this commit, and a Record after
    /// the revocation finds no lease: nothing is ever written under a dead lease.
    pub async fn record(&self, lease: &LeaseRef, results: &[UrlResult]) -> ServiceResult<RecordOutcome> {
        let mut seen = HashSet::new();
        // A URL twice in one batch: keep the first, like a second batch would.
        let batch: Vec<&UrlResult> = results.iter().filter(|r| seen.insert(r.url_id)).collect();
        let mut tx = self.pool.begin().await?;
        lock_lease(&mut tx, lease, &batch).await?;
        // Results and their counters together (the store owns both).
        let fresh = terminal::insert_terminal(&mut tx, &batch).await?;
        insert_faces(&mut tx, FaceColumns::from_results(batch.iter().filter(|r| fresh.contains(&r.url_id))))
            .await?;
        // Only when something was not inserted: was it a duplicate or an unknown URL? The
        // lease's lock keeps its URLs from vanishing before the commit (their delete waits on
        // the chunk), so this count is never below the rows just inserted.
        let known = if fresh.len() == batch.len() {
            batch.len() as i64
        } else {
            let ids: Vec<i64> = batch.iter().map(|r| r.url_id).collect();
            sqlx::query_scalar("SELECT count(*) FROM urls WHERE id = ANY($1)")
                .bind(&ids)
                .fetch_one(&mut *tx)
                .await?
        };
        tx.commit().await?;
        Ok(outcome(results.len(), batch.len(), known, fresh.len()))
    }

    /// The URL and its result; NotFound when the URL id does not exist.
    pub async fn get(&self, url_id: i64) -> ServiceResult<ExportRow> {
        let rows = self.page(url_id, url_id, 1).await?;
        rows.into_iter().next().ok_or_else(|| ServiceError::NotFound(format!("url {url_id}")))
    }

    /// Up to `limit` URLs with ids in `from..=to`, in id order, with results and faces.
    pub async fn page(&self, from: i64, to: i64, limit: i64) -> ServiceResult<Vec<ExportRow>> {
        let rows: Vec<PageRow> = sqlx::query_as(&format!(
            "{PAGE_SQL}
             -- The range on r too: without it the merge join reads url_results from the
             -- start for every page (export turned quadratic: 193 ms a page at 1M URLs).
             LEFT JOIN url_results r ON r.url_id = u.id AND r.url_id BETWEEN $1 AND $2
             WHERE u.id BETWEEN $1 AND $2 ORDER BY u.id LIMIT $3"
        ))
        .bind(from)
        .bind(to)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let (Some(first), Some(last)) = (rows.first(), rows.last()) else { return Ok(Vec::new()) };
        // One range scan of the BRIN index for the page, not one probe per URL: export's
        // ids are consecutive.
        let faces = self.faces(FacesOf::Range(first.url_id, last.url_id)).await?;
        Ok(with_faces(rows, faces))
    }

    /// The URLs with these ids (in any order and spread), in id order, with results and faces.
    /// Read by the id set, never by the range it spans: a watch page is ordered by
    /// transaction, so its ids can span a whole job, and reading the range read every face
    /// between them (5.7 s and +63 MB RSS for one page of a 300k-URL job).
    pub(crate) async fn rows(&self, ids: &[i64]) -> ServiceResult<Vec<ExportRow>> {
        let rows: Vec<PageRow> = sqlx::query_as(&format!(
            "{PAGE_SQL}
             LEFT JOIN url_results r ON r.url_id = u.id
             WHERE u.id = ANY($1) ORDER BY u.id"
        ))
        .bind(ids)
        .fetch_all(&self.pool)
        .await?;
        // Only URLs with a successful result have faces.
        let with: Vec<i64> =
            rows.iter().filter(|r| r.status.as_deref() == Some("ok")).map(|r| r.url_id).collect();
        if with.is_empty() {
            return Ok(with_faces(rows, Vec::new()));
        }
        // A BRIN probe per id: reads at most `ids.len()` ranges of 16 pages, returns only
        // these URLs' faces.
        let faces = self.faces(FacesOf::Ids(&with)).await?;
        Ok(with_faces(rows, faces))
    }

    /// The faces of `of`, in (URL, index) order.
    async fn faces(&self, of: FacesOf<'_>) -> ServiceResult<Vec<FaceRow>> {
        const COLUMNS: &str = "SELECT url_id, x1, y1, x2, y2, score, landmarks FROM faces";
        // A faces table autovacuum has not analysed yet (a fresh or fast-growing one) has no
        // correlation statistics, and the planner then scans all of it: 96 ms a page at 1M
        // URLs instead of 4 ms. No seq scan here.
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET LOCAL enable_seqscan = off").execute(&mut *tx).await?;
        let faces = match of {
            FacesOf::Range(from, to) => {
                sqlx::query_as(&format!("{COLUMNS} WHERE url_id BETWEEN $1 AND $2 ORDER BY url_id, idx"))
                    .bind(from)
                    .bind(to)
                    .fetch_all(&mut *tx)
                    .await?
            }
            FacesOf::Ids(ids) => {
                sqlx::query_as(&format!("{COLUMNS} WHERE url_id = ANY($1) ORDER BY url_id, idx"))
                    .bind(ids)
                    .fetch_all(&mut *tx)
                    .await?
            }
        };
        tx.commit().await?;
        Ok(faces)
    }
}

/// Whose faces `Store::faces` reads: an id range (export), or an id set (watch).
enum FacesOf<'a> {
    Range(i64, i64),
    Ids(&'a [i64]),
}

/// The columns of `PageRow`, over `urls u` and a `url_results r` the caller joins.
const PAGE_SQL: &str =
    "SELECT u.id AS url_id, u.url, u.extra, u.job_id, r.status, r.reason, r.http_status, r.width,
        r.height, r.bytes, r.model_id, r.download_ms, r.decode_ms, r.detect_ms
    FROM urls u";

/// Export rows: each URL in `rows` (id order) with its faces (`faces` in URL order).
fn with_faces(rows: Vec<PageRow>, faces: Vec<FaceRow>) -> Vec<ExportRow> {
    let mut faces = faces.into_iter().peekable();
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        while faces.next_if(|f| f.url_id < row.url_id).is_some() {}
        let mut mine = Vec::new();
        while let Some(face) = faces.next_if(|f| f.url_id == row.url_id) {
            mine.push(face.into());
        }
        out.push(row.into_export(mine));
    }
    out
}

/// Locks the lease's chunk row for the rest of `tx` if `lease` holds it now (its secret and
/// holder included) and every URL of `batch` lies in it; FAILED_PRECONDITION otherwise.
async fn lock_lease(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    lease: &LeaseRef,
    batch: &[&UrlResult],
) -> ServiceResult<()> {
    let Some((first, last)) = facesweep_store::lease::lock_held(tx, lease).await? else {
        return Err(ServiceError::FailedPrecondition(format!(
            "lease on job {} chunk {} with token {} is not held by {:?} with that secret (expired, \
             re-issued, or revoked by a cancel or delete): its results are not stored",
            lease.job_id, lease.chunk_no, lease.fencing_token, lease.fetcher_id
        )));
    };
    match batch.iter().find(|r| !(first..=last).contains(&r.url_id)) {
        Some(r) => Err(ServiceError::FailedPrecondition(format!(
            "url {} is outside the lease (urls {first}..={last})",
            r.url_id
        ))),
        None => Ok(()),
    }
}

/// What a Record did, from counts of one transaction: `sent` results, `unique` of them after
/// dropping repeats, `known` of those naming a URL, `inserted` stored now. Saturating: no
/// count can wrap whatever a caller sends.
fn outcome(sent: usize, unique: usize, known: i64, inserted: usize) -> RecordOutcome {
    let clamp = |n: i64| u32::try_from(n.max(0)).unwrap_or(u32::MAX);
    let (sent, unique, inserted) = (sent as i64, unique as i64, inserted as i64);
    let known = known.clamp(inserted, unique);
    RecordOutcome {
        inserted: clamp(inserted),
        duplicates: clamp(known - inserted + (sent - unique)),
        unknown: clamp(unique - known),
    }
}

/// A URL and, when it has one, its result (the LEFT JOIN leaves those columns NULL).
#[derive(sqlx::FromRow)]
struct PageRow {
    url_id: i64,
    url: String,
    extra: Option<String>,
    job_id: i64,
    status: Option<String>,
    reason: Option<String>,
    http_status: Option<i32>,
    width: Option<i32>,
    height: Option<i32>,
    bytes: Option<i64>,
    model_id: Option<String>,
    download_ms: Option<f32>,
    decode_ms: Option<f32>,
    detect_ms: Option<f32>,
}

impl PageRow {
    fn into_export(self, faces: Vec<Face>) -> ExportRow {
        let result = self.status.as_deref().map(|status| UrlResult {
            url_id: self.url_id,
            job_id: self.job_id,
            status: UrlStatus::from_short_name(status).unwrap_or(UrlStatus::Unspecified) as i32,
            reason: self.reason.clone().unwrap_or_default(),
            http_status: self.http_status.unwrap_or(0) as u32,
            width: self.width.unwrap_or(0) as u32,
            height: self.height.unwrap_or(0) as u32,
            bytes: self.bytes.unwrap_or(0) as u64,
            faces,
            model_id: self.model_id.clone().unwrap_or_default(),
            download_ms: self.download_ms.unwrap_or(0.0),
            decode_ms: self.decode_ms.unwrap_or(0.0),
            detect_ms: self.detect_ms.unwrap_or(0.0),
        });
        ExportRow { url_id: self.url_id, url: self.url, result, extra: self.extra }
    }
}

#[derive(sqlx::FromRow)]
struct FaceRow {
    url_id: i64,
    x1: f32,
    y1: f32,
    x2: f32,
    y2: f32,
    score: f32,
    landmarks: Vec<f32>,
}

impl From<FaceRow> for Face {
    fn from(f: FaceRow) -> Face {
        Face { x1: f.x1, y1: f.y1, x2: f.x2, y2: f.y2, score: f.score, landmarks: f.landmarks }
    }
}

/// Faces of freshly inserted results only: a second writer of a URL adds none.
async fn insert_faces(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    faces: FaceColumns,
) -> ServiceResult<()> {
    if faces.url_id.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO faces (url_id, idx, x1, y1, x2, y2, score, landmarks)
         SELECT u, i, x1, y1, x2, y2, s, ($8::real[])[(n - 1) * 10 + 1 : n * 10]
         FROM UNNEST($1::bigint[], $2::int[], $3::real[], $4::real[], $5::real[],
             $6::real[], $7::real[]) WITH ORDINALITY AS t(u, i, x1, y1, x2, y2, s, n)",
    )
    .bind(&faces.url_id)
    .bind(&faces.idx)
    .bind(&faces.x1)
    .bind(&faces.y1)
    .bind(&faces.x2)
    .bind(&faces.y2)
    .bind(&faces.score)
    .bind(&faces.landmarks)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[derive(Default)]
struct FaceColumns {
    url_id: Vec<i64>,
    idx: Vec<i32>,
    x1: Vec<f32>,
    y1: Vec<f32>,
    x2: Vec<f32>,
    y2: Vec<f32>,
    score: Vec<f32>,
    landmarks: Vec<f32>,
}

impl FaceColumns {
    fn from_results<'a>(results: impl Iterator<Item = &'a &'a UrlResult>) -> Self {
        let mut cols = FaceColumns::default();
        for r in results {
            for (i, f) in r.faces.iter().enumerate() {
                cols.url_id.push(r.url_id);
                cols.idx.push(i as i32);
                cols.x1.push(f.x1);
                cols.y1.push(f.y1);
                cols.x2.push(f.x2);
                cols.y2.push(f.y2);
                cols.score.push(f.score);
                let mut lm = [0f32; 10];
                for (d, s) in lm.iter_mut().zip(&f.landmarks) {
                    *d = *s;
                }
                cols.landmarks.extend_from_slice(&lm);
            }
        }
        cols
    }
}
