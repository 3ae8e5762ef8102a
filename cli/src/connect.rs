//! Connections to a mesh's services, with the admin token (if any) on every call.

use anyhow::Context;
use facesweep_common::grpc::channel;
use facesweep_proto::delegator_service_client::DelegatorServiceClient;
use facesweep_proto::results_service_client::ResultsServiceClient;

/// Adds `authorization: Bearer $FACESWEEP_ADMIN_TOKEN` to every call when the variable is
/// set (the CLI's `--admin-token` sets it): the services' admin calls need it off loopback.
#[derive(Clone)]
pub struct AdminToken(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl AdminToken {
    pub fn from_env() -> anyhow::Result<Self> {
        match std::env::var("FACESWEEP_ADMIN_TOKEN").ok().filter(|t| !t.is_empty()) {
            Some(t) => Ok(AdminToken(Some(
                format!("Bearer {t}").parse().context("admin token is not a header value")?,
            ))),
            None => Ok(AdminToken(None)),
        }
    }
}

impl tonic::service::Interceptor for AdminToken {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

pub type AdminChannel =
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, AdminToken>;

pub async fn delegator(addr: &str) -> anyhow::Result<DelegatorServiceClient<AdminChannel>> {
    Ok(DelegatorServiceClient::with_interceptor(channel(addr)?, AdminToken::from_env()?)
        .max_decoding_message_size(64 << 20))
}

pub fn results(addr: &str) -> anyhow::Result<ResultsServiceClient<AdminChannel>> {
    Ok(ResultsServiceClient::with_interceptor(channel(addr)?, AdminToken::from_env()?)
        .max_decoding_message_size(64 << 20))
}
