//! Shared helpers for the end-to-end tests: paths, fixtures, an ephemeral Postgres.

use std::path::PathBuf;

use facesweep_pgembed::{Durability, PgEmbed};

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// The exported model; set-up (`make test`) creates it.
pub fn model_path() -> PathBuf {
    let p = repo_root().join("models/retinaface_mnet025.pt");
    assert!(p.exists(), "{} missing: run scripts/setup.sh (make test does)", p.display());
    p
}

pub fn samples_dir() -> PathBuf {
    let d = facesweep_cli::default_samples_dir();
    assert!(d.join(".done").exists(), "{} missing: run scripts/setup.sh (make test does)", d.display());
    d
}

/// A throwaway Postgres in /tmp (readable by the unprivileged user when we are root).
pub struct TestDb {
    pub pg: PgEmbed,
    _dir: tempfile::TempDir,
}

impl TestDb {
    pub fn start() -> TestDb {
        let dir = tempfile::Builder::new().prefix("facesweep-test").tempdir_in("/tmp").unwrap();
        let pg = PgEmbed::start(dir.path(), Durability::Ephemeral).expect("start embedded postgres");
        TestDb { pg, _dir: dir }
    }

    pub async fn pool(&self) -> sqlx::PgPool {
        facesweep_common::db::connect(&self.pg.url(), 8).await.expect("connect and migrate")
    }
}

/// Intersection over union of two x1,y1,x2,y2 boxes.
pub fn iou(a: &[f64], b: &[f64]) -> f64 {
    let ix = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let iy = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = ix * iy;
    let area = |r: &[f64]| (r[2] - r[0]) * (r[3] - r[1]);
    inter / (area(a) + area(b) - inter)
}

pub fn tmp_dir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("facesweep-e2e").tempdir_in("/tmp").unwrap()
}
