//! Which detectors take a model's images. The default model is the one `--detector` answers
//! with (ModelInfo). Through Consul every model's pool is the `--detector` service's instances
//! tagged `model-<id>` (the default's too: detectors of several models may share the service);
//! a static `--detector` list serves the default model, and `--model-detector MODEL=TARGET`
//! names any other pool. Each pool's input size and wire come from its own ModelInfo.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use facesweep_common::ab::consul_tag;
use facesweep_common::discovery::{Balanced, Target, TargetError};
use facesweep_proto::detector_service_client::DetectorServiceClient;
use facesweep_proto::{Lease, ModelInfoRequest, ModelInfoResponse};
use tokio::sync::{Mutex, OnceCell};

use crate::detect_client::DetectStream;
use crate::WireChoice;
use facesweep_imagefetch::decode::Shape;

/// Longest a pool's ModelInfo may take before the lease goes on without it.
const INFO_TIMEOUT: Duration = Duration::from_secs(5);

/// Makes a balanced detector client for a target (discovery lives in the fetcher's `spawn`).
pub type Connect = Box<dyn Fn(&Target) -> anyhow::Result<DetectorServiceClient<Balanced>> + Send + Sync>;

/// One model's detectors.
pub struct Pool {
    target: Target,
    client: DetectorServiceClient<Balanced>,
    shape: OnceCell<Shape>,
}

/// Why a model's detectors cannot take a lease's images.
#[derive(Clone, Debug, thiserror::Error)]
pub enum NoLane {
    /// The pool exists but did not answer (restarting, overloaded): not the URLs' fault.
    #[error(transparent)]
    Unreachable(#[from] Unreachable),
    /// No pool is configured for the model: the URLs fail, and end abandoned with this reason.
    #[error(transparent)]
    Unserved(#[from] Unserved),
}

/// A pool that did not answer.
#[derive(Clone, Debug, thiserror::Error)]
pub enum Unreachable {
    #[error("detectors {target}: {status}")]
    Info { target: Target, status: tonic::Status },
    #[error("detectors {target}: no ModelInfo within {INFO_TIMEOUT:?}")]
    InfoTimeout { target: Target },
    #[error("detectors of model {model:?} ({target}): {source}")]
    Stream { model: String, target: Target, source: tonic::Status },
}

/// A model no pool serves.
#[derive(Clone, Debug, thiserror::Error)]
pub enum Unserved {
    #[error("no lane opened for model {0:?}")]
    NotOpened(String),
    #[error("no detector serves model {0:?}: start the fetcher with --model-detector {0}=TARGET")]
    NoPool(String),
    /// The target could not be dialled (a Consul target without an agent…).
    #[error("{target}: {reason}")]
    Connect { target: Target, reason: String },
    #[error("{target} serves model {served:?}, not {model:?}")]
    OtherModel { target: Target, served: String, model: String },
}

/// A lease's open detector streams, one per model its URLs name.
pub struct Lanes(HashMap<String, Result<(DetectStream, Shape), NoLane>>);

impl Lanes {
    /// The stream and shape for `model`, or why its detectors cannot be used.
    pub fn get(&self, model: &str) -> Result<&(DetectStream, Shape), NoLane> {
        match self.0.get(model) {
            Some(Ok(lane)) => Ok(lane),
            Some(Err(why)) => Err(why.clone()),
            None => Err(Unserved::NotOpened(model.to_string()).into()),
        }
    }

    /// Why to give the whole lease back without counting it against its URLs: no model of
    /// the lease has a detector now, and only for want of an answer (an unserved model is
    /// the URLs' failure, so they can end).
    pub fn all_unreachable(&self) -> Option<Unreachable> {
        let mut why = None;
        for lane in self.0.values() {
            match lane {
                Err(NoLane::Unreachable(w)) => why = Some(w.clone()),
                _ => return None,
            }
        }
        why
    }
}

pub struct Models {
    default_id: String,
    default: Arc<Pool>,
    /// `--detector`: a Consul target also finds other models' pools by tag.
    base: Target,
    explicit: HashMap<String, Target>,
    pools: Mutex<HashMap<String, Arc<Pool>>>,
    wire: WireChoice,
    connect: Connect,
}

impl Models {
    /// The default pool answered `info`; other pools are connected when a lease needs them.
    pub fn new(
        base: Target,
        default: DetectorServiceClient<Balanced>,
        info: &ModelInfoResponse,
        explicit: HashMap<String, Target>,
        wire: WireChoice,
        connect: Connect,
    ) -> Self {
        let pool = Pool { target: base.clone(), client: default, shape: OnceCell::new() };
        let _ = pool.shape.set(shape_of(info, wire));
        Models {
            default_id: info.model_id.clone(),
            default: Arc::new(pool),
            base,
            explicit,
            pools: Mutex::new(HashMap::new()),
            wire,
            connect,
        }
    }

    /// Opens one stream per model named by the lease's URLs ("" is the default model).
    pub async fn open_lanes(&self, lease: &Lease, deadline: Duration) -> Lanes {
        let models: BTreeSet<&str> = lease.urls.iter().map(|u| u.model_id.as_str()).collect();
        let mut lanes = HashMap::new();
        for model in models {
            lanes.insert(model.to_string(), self.open(model, deadline).await);
        }
        Lanes(lanes)
    }

    async fn open(&self, model: &str, deadline: Duration) -> Result<(DetectStream, Shape), NoLane> {
        let model = if model.is_empty() { self.default_id.as_str() } else { model };
        let pool = self.pool(model).await?;
        let shape = *pool
            .shape
            .get_or_try_init(|| async {
                let info = ask_info(&pool.client, &pool.target).await?;
                if info.model_id != model {
                    let (target, served) = (pool.target.clone(), info.model_id);
                    return Err(NoLane::from(Unserved::OtherModel {
                        target,
                        served,
                        model: model.to_string(),
                    }));
                }
                Ok(shape_of(&info, self.wire))
            })
            .await?;
        let stream = DetectStream::open(pool.client.clone(), deadline).await.map_err(|source| {
            Unreachable::Stream { model: model.to_string(), target: pool.target.clone(), source }
        })?;
        Ok((stream, shape))
    }

    /// The pool serving `model` (not empty), connected on first use and kept.
    async fn pool(&self, model: &str) -> Result<Arc<Pool>, Unserved> {
        if model == self.default_id && matches!(self.base, Target::Static(_)) {
            return Ok(self.default.clone());
        }
        let mut pools = self.pools.lock().await;
        if let Some(p) = pools.get(model) {
            return Ok(p.clone());
        }
        let target = match self.explicit.get(model) {
            Some(t) => t.clone(),
            None => {
                self.base.with_tag(&consul_tag(model)).ok_or_else(|| Unserved::NoPool(model.to_string()))?
            }
        };
        let client = (self.connect)(&target)
            .map_err(|e| Unserved::Connect { target: target.clone(), reason: e.to_string() })?;
        let pool = Arc::new(Pool { target, client, shape: OnceCell::new() });
        pools.insert(model.to_string(), pool.clone());
        Ok(pool)
    }
}

/// ModelInfo of one pool, bounded.
pub async fn ask_info(
    client: &DetectorServiceClient<Balanced>,
    target: &Target,
) -> Result<ModelInfoResponse, Unreachable> {
    let mut client = client.clone();
    let target = target.clone();
    match tokio::time::timeout(INFO_TIMEOUT, client.model_info(ModelInfoRequest {})).await {
        Ok(Ok(info)) => Ok(info.into_inner()),
        Ok(Err(status)) => Err(Unreachable::Info { target, status }),
        Err(_) => Err(Unreachable::InfoTimeout { target }),
    }
}

fn shape_of(info: &ModelInfoResponse, wire: WireChoice) -> Shape {
    Shape { width: info.input_width, height: info.input_height, wire: wire.resolve(&info.pixel_formats) }
}

/// Why a `--model-detector` value is not `MODEL=TARGET`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ModelTargetError {
    #[error("{0:?}: expected MODEL=TARGET")]
    NoEquals(String),
    #[error("{0:?} is not a model id")]
    Model(String),
    #[error(transparent)]
    Target(#[from] TargetError),
}

/// `--model-detector MODEL=TARGET`.
pub fn parse_model_target(s: &str) -> Result<(String, Target), ModelTargetError> {
    let (model, target) = s.split_once('=').ok_or_else(|| ModelTargetError::NoEquals(s.to_string()))?;
    if model.is_empty() || !facesweep_common::ab::valid_model_id(model) {
        return Err(ModelTargetError::Model(model.to_string()));
    }
    Ok((model.to_string(), target.parse()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_targets_parse() {
        let (m, t) = parse_model_target("retinaface-320=127.0.0.1:1,127.0.0.1:2").unwrap();
        assert_eq!(m, "retinaface-320");
        assert_eq!(t, Target::Static(vec!["127.0.0.1:1".into(), "127.0.0.1:2".into()]));
        assert_eq!(parse_model_target("no-equals"), Err(ModelTargetError::NoEquals("no-equals".into())));
        assert_eq!(parse_model_target("=127.0.0.1:1"), Err(ModelTargetError::Model("".into())));
        assert!(parse_model_target("a b=127.0.0.1:1").is_err());
        assert_eq!(parse_model_target("m=consul://"), Err(TargetError::Consul("consul://".into()).into()));
    }
}
