//! Prometheus metrics (`GET /metrics`, text exposition format), through the official client crate.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// Labels of a served request.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The route, e.g. `/translate`.
    pub endpoint: String,
    /// The HTTP status code.
    pub status: String,
}

/// Labels of a latency observation.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    /// The route.
    pub endpoint: String,
}

type HistogramFamily = Family<EndpointLabels, Histogram, fn() -> Histogram>;

/// Every metric the server keeps.
pub struct Metrics {
    registry: Registry,
    /// Requests by route and status (errors are the 4xx and 5xx statuses).
    pub requests: Family<RequestLabels, Counter>,
    /// Request latency in seconds by route.
    pub latency: HistogramFamily,
    /// Texts waiting in the queue.
    pub queue_texts: Gauge,
    /// Texts per decoded batch.
    pub batch_texts: Histogram,
    /// Texts translated.
    pub translated_texts: Counter,
    /// Texts that joined a batch already decoding (in-flight batching).
    pub joined_texts: Counter,
    /// Output tokens produced (best candidates, `</s>` included); rate() gives tokens/s.
    pub output_tokens: Counter,
    /// Seconds the workers spent decoding.
    pub decode_seconds: Counter<f64, AtomicU64>,
}

fn latency_histogram() -> Histogram {
    // 1 ms to about 65 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("rosetta");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "HTTP requests by route and status",
            requests.clone(),
        );
        let latency: HistogramFamily = Family::new_with_constructor(latency_histogram);
        registry.register(
            "request_duration_seconds",
            "Request latency by route, in seconds",
            latency.clone(),
        );
        let queue_texts = Gauge::default();
        registry.register(
            "queue_texts",
            "Texts waiting to be decoded",
            queue_texts.clone(),
        );
        let batch_texts = Histogram::new(exponential_buckets(1.0, 2.0, 10));
        registry.register(
            "batch_texts",
            "Texts per decoded batch",
            batch_texts.clone(),
        );
        let translated_texts = Counter::default();
        registry.register(
            "translated_texts",
            "Texts translated",
            translated_texts.clone(),
        );
        let joined_texts = Counter::default();
        registry.register(
            "joined_texts",
            "Texts that joined a batch already decoding (in-flight batching)",
            joined_texts.clone(),
        );
        let output_tokens = Counter::default();
        registry.register(
            "output_tokens",
            "Output tokens produced (best candidates, end of sentence included)",
            output_tokens.clone(),
        );
        let decode_seconds = Counter::<f64, AtomicU64>::default();
        registry.register(
            "decode_seconds",
            "Seconds the decoding threads spent decoding",
            decode_seconds.clone(),
        );
        Metrics {
            registry,
            requests,
            latency,
            queue_texts,
            batch_texts,
            translated_texts,
            joined_texts,
            output_tokens,
            decode_seconds,
        }
    }
}

impl Metrics {
    /// Counts a finished request.
    pub fn record(&self, endpoint: &str, status: u16, seconds: f64) {
        self.requests
            .get_or_create(&RequestLabels {
                endpoint: endpoint.to_owned(),
                status: status.to_string(),
            })
            .inc();
        self.latency
            .get_or_create(&EndpointLabels {
                endpoint: endpoint.to_owned(),
            })
            .observe(seconds);
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}
