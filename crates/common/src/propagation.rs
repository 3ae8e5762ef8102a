//! W3C trace context over gRPC: injected by callers, extracted by every server, so one
//! trace follows a lease through delegator, fetcher, detector and results.

use opentelemetry::propagation::{Extractor, Injector};
pub use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Links `batch` to the span of every request it serves (a batch has many parents).
pub fn link_all<'a>(batch: &tracing::Span, parts: impl IntoIterator<Item = &'a tracing::Span>) {
    use opentelemetry::trace::TraceContextExt;
    for p in parts {
        let cx = p.context();
        let sc = cx.span().span_context().clone();
        if sc.is_valid() {
            batch.add_link(sc);
        }
    }
}

struct MetadataInjector<'a>(&'a mut tonic::metadata::MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(k), Ok(v)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            tonic::metadata::MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(k, v);
        }
    }
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Installs the W3C `traceparent`/`tracestate` propagator (once per process).
pub fn install() {
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
}

/// A request carrying the current span's trace context.
pub fn traced<T>(message: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(message);
    let cx = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&cx, &mut MetadataInjector(req.metadata_mut()))
    });
    req
}

/// The server span of one gRPC call, child of the caller's span when it sent one
/// (used as tonic's `trace_fn`, so handlers run inside it).
pub fn server_span(req: &http::Request<()>) -> tracing::Span {
    let parent =
        opentelemetry::global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(req.headers())));
    let span =
        tracing::info_span!("grpc", otel.name = %req.uri().path(), otel.kind = "server", rpc.system = "grpc");
    let _ = span.set_parent(parent);
    span
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn trace_context_survives_a_round_trip_through_grpc_metadata() {
        install();
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("t")));
        tracing::subscriber::with_default(subscriber, || {
            let caller = tracing::info_span!("caller");
            let want = caller.context().span().span_context().clone();
            assert!(want.is_valid());
            let req = caller.in_scope(|| traced(()));
            let header = req
                .metadata()
                .get("traceparent")
                .expect("traceparent injected")
                .to_str()
                .unwrap()
                .to_string();
            assert!(header.contains(&want.trace_id().to_string()), "{header}");
            // The server side sees the same trace, with the caller's span as parent.
            let mut http_req = http::Request::new(());
            *http_req.headers_mut() = req.metadata().clone().into_headers();
            *http_req.uri_mut() = "/facesweep.v1.ResultsService/Record".parse().unwrap();
            let server = server_span(&http_req);
            let got = server.context().span().span_context().clone();
            assert_eq!(got.trace_id(), want.trace_id());
            assert_ne!(got.span_id(), want.span_id());
        });
    }
}
