//! `serve_request`: HTTP requests to `rosetta serve` (native and LibreTranslate APIs, JSON, form
//! data and query strings, API keys, `format=html`), through the real router, with an engine that
//! echoes instead of a model; and the server's TOML config.

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use rosetta::translate::{Candidate, SourceText, TranslateOptions, Translation};
use rosetta_serve::app::{AppState, router};
use rosetta_serve::html::HtmlDoc;
use rosetta_serve::{Engine, Limits, ModelSpec, ServedModel, ServerConfig};
use std::sync::{Arc, OnceLock};
use tower::ServiceExt;

/// Source pieces an [`Echo`] reads at most.
const MAX_SOURCE: usize = 32;

/// Translates every line into itself (the n-best list numbered), in no time: the server's work
/// without a model's.
struct Echo;

impl Engine for Echo {
    fn translate(
        &self,
        sources: Vec<SourceText>,
        options: &TranslateOptions,
        _sentence_ids: &[u64],
    ) -> rosetta::Result<Vec<Translation>> {
        Ok(sources
            .into_iter()
            .map(
                |SourceText {
                     pieces: source,
                     truncated,
                 }| {
                    let candidates = (0..options.search.n_best.max(1))
                        .map(|k| {
                            let pieces = source.clone();
                            let attention = (0..pieces.len())
                                .map(|j| {
                                    let mut row = vec![0.0; source.len() + 1];
                                    row[j] = 1.0;
                                    row
                                })
                                .collect();
                            Candidate {
                                text: if k == 0 {
                                    pieces.join(" ")
                                } else {
                                    format!("{} {k}", pieces.join(" "))
                                },
                                pieces,
                                log_prob: -(k as f32),
                                score: -(k as f32),
                                attention,
                                hit_max_len: false,
                            }
                        })
                        .collect();
                    Translation {
                        truncated,
                        source_pieces: source,
                        candidates,
                    }
                },
            )
            .collect())
    }

    fn read_source(&self, line: &str) -> rosetta::Result<SourceText> {
        Ok(SourceText {
            pieces: line
                .split_whitespace()
                .take(MAX_SOURCE)
                .map(str::to_owned)
                .collect(),
            truncated: line.split_whitespace().count() > MAX_SOURCE,
        })
    }

    fn max_source_len(&self) -> usize {
        MAX_SOURCE
    }

    fn ensemble_size(&self) -> usize {
        1
    }

    fn arch(&self) -> &'static str {
        "rnn"
    }
}

/// The API key the keyed server accepts.
const KEY: &str = "fuzz-key";

struct Servers {
    runtime: tokio::runtime::Runtime,
    open: Router,
    keyed: Router,
}

fn server(keys: bool) -> Router {
    let pairs = [
        ("de-en", "de", "en"),
        ("en-de", "en", "de"),
        ("fr-en", "fr", "en"),
    ];
    let engine: Arc<dyn Engine> = Arc::new(Echo);
    let models: Vec<ServedModel> = pairs
        .iter()
        .map(|(name, s, t)| ServedModel {
            name: (*name).to_owned(),
            pair: Some(((*s).to_owned(), (*t).to_owned())),
            paths: vec![format!("runs/{name}").into()],
            engine: Arc::clone(&engine),
        })
        .collect();
    // Small limits, so that inputs of a few KB reach every one of them.
    let mut config = ServerConfig {
        workers: 1,
        cors_origins: vec!["*".into()],
        limits: Limits {
            max_chars: 200,
            max_texts: 8,
            max_body_bytes: 2048,
            queue_texts: 64,
            ..Limits::default()
        },
        models: pairs
            .iter()
            .map(|(name, _, _)| ModelSpec {
                name: (*name).to_owned(),
                paths: vec![format!("runs/{name}").into()],
                source: None,
                target: None,
            })
            .collect(),
        ..ServerConfig::default()
    };
    config.batch.max_wait_ms = 0;
    // The keys file is read once, when the state is made.
    let dir = tempfile::tempdir().expect("a temporary directory");
    if keys {
        let path = dir.path().join("keys.txt");
        std::fs::write(&path, format!("# keys\n{KEY}\n")).expect("write the keys file");
        config.api_keys_file = Some(path);
    }
    let state = AppState::new(config, models).expect("the fuzzing server starts");
    router(Arc::new(state))
}

fn servers() -> &'static Servers {
    static SERVERS: OnceLock<Servers> = OnceLock::new();
    SERVERS.get_or_init(|| Servers {
        runtime: tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a tokio runtime"),
        open: server(false),
        keyed: server(true),
    })
}

const ROUTES: [(&str, Method); 8] = [
    ("/translate", Method::POST),
    ("/v1/translate", Method::POST),
    ("/detect", Method::POST),
    ("/languages", Method::POST),
    ("/v1/models", Method::GET),
    ("/frontend/settings", Method::GET),
    ("/ready", Method::GET),
    ("/nowhere", Method::POST),
];

const CONTENT_TYPES: [Option<&str>; 4] = [
    Some("application/json"),
    Some("application/x-www-form-urlencoded"),
    Some("multipart/form-data; boundary=x"),
    None,
];

/// Input: one selector byte (bits 0–2: the route, of `/translate`, `/v1/translate`, `/detect`,
/// `/languages`, `/v1/models`, `/frontend/settings`, `/ready` and an unknown one; bits 3–4: the
/// content type, JSON, form, multipart or none; bit 5: a server that requires API keys; bit 6:
/// `Authorization: Bearer` with the right key; bit 7: the rest is the server's TOML config
/// instead of a request), then the body, or, when it holds a NUL byte, the query string before
/// the first NUL and the body after it.
///
/// Properties: the router answers every request, never with a panic or a 500 (the echo engine
/// cannot fail); every answer but the web page is JSON, errors as `{"error": "..."}`; the HTML
/// splitter returns a document that renders, byte for byte, when it holds no text to translate.
pub fn serve_request(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    if let Ok(text) = std::str::from_utf8(rest) {
        check_html(text);
        if selector & 0x80 != 0 {
            if let Ok(config) = toml::from_str::<ServerConfig>(text) {
                let _ = config.validate();
                let _ = config.worker_count();
            }
            return;
        }
    }
    let (path, method) = &ROUTES[usize::from(selector & 7)];
    let (query, body) = match rest.iter().position(|&b| b == 0) {
        Some(nul) => (Some(&rest[..nul]), &rest[nul + 1..]),
        None => (None, rest),
    };
    let uri = match query.and_then(|q| std::str::from_utf8(q).ok()) {
        Some(q) => format!("{path}?{q}"),
        None => (*path).to_owned(),
    };
    let mut request = Request::builder().method(method.clone()).uri(uri.as_str());
    if request.uri_ref().is_none() {
        request = Request::builder().method(method.clone()).uri(*path);
    }
    if let Some(content_type) = CONTENT_TYPES[usize::from((selector >> 3) & 3)] {
        request = request.header(header::CONTENT_TYPE, content_type);
    }
    if selector & 0x40 != 0 {
        request = request.header(header::AUTHORIZATION, format!("Bearer {KEY}"));
    }
    let Ok(request) = request.body(Body::from(body.to_vec())) else {
        return;
    };
    let servers = servers();
    let app = if selector & 0x20 != 0 {
        servers.keyed.clone()
    } else {
        servers.open.clone()
    };
    let (status, bytes) = servers.runtime.block_on(async move {
        let response = app
            .oneshot(request)
            .await
            .expect("the router is infallible");
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("a response body in memory reads");
        (status, bytes)
    });
    eprintln!(
        "STATUS {status} {}",
        String::from_utf8_lossy(&bytes)
            .chars()
            .take(150)
            .collect::<String>()
    );
    assert_ne!(
        status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        panic!(
            "{status}: not JSON ({e}): {:?}",
            String::from_utf8_lossy(&bytes)
        )
    });
    if !status.is_success() {
        assert!(
            json.get("error").is_some_and(serde_json::Value::is_string),
            "{status}: {json}"
        );
    }
}

/// The HTML splitter of `format=html` on any text.
fn check_html(text: &str) {
    let doc = HtmlDoc::parse(text);
    let texts: Vec<String> = doc.texts().into_iter().map(str::to_owned).collect();
    let rendered = doc.render(&texts);
    if texts.is_empty() {
        assert_eq!(rendered, text, "markup without text changes");
    }
}
