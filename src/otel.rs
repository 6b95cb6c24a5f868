//! OpenTelemetry trace export (cargo feature `otel`): one span per request
//! (method, path, route, decision, status, user id), sent by OTLP over
//! HTTP/protobuf through our own hyper client (rustls, no extra TLS
//! stack), batched off the request path.

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;

/// Set once export is configured: requests then open a span.
static ENABLED: AtomicBool = AtomicBool::new(false);

pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// An OTLP HTTP client over hyper. The batch processor runs on its own
/// thread, so requests are sent from a task on the Tokio runtime.
#[derive(Debug)]
struct Client {
    inner: crate::providers::outbound::RawClient,
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl HttpClient for Client {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let inner = self.inner.clone();
        let task = self.runtime.spawn(async move { inner.send(request).await });
        task.await.map_err(|e| Box::new(e) as HttpError)?
    }
}

/// The tracing layer exporting to `endpoint` (like `http://collector:4318`),
/// and the provider to shut down (flush) at exit.
pub fn layer<S>(
    endpoint: &str,
    runtime: tokio::runtime::Handle,
) -> Result<(impl tracing_subscriber::Layer<S>, SdkTracerProvider), String>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let client = Client {
        inner: crate::providers::outbound::RawClient::new(std::time::Duration::from_secs(10))?,
        runtime,
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
        .build()
        .map_err(|e| e.to_string())?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name("portcullis")
        .build();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build();
    let tracer = provider.tracer("portcullis");
    ENABLED.store(true, Ordering::Relaxed);
    Ok((tracing_opentelemetry::layer().with_tracer(tracer), provider))
}
