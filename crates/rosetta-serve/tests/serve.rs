//! The server end to end on loopback: both APIs, every error status, queue-full behaviour, graceful
//! shutdown, and concurrent requests each getting their own answer. The model is the quickstart's
//! date normalizer ("3. März 2021" → "2021-03-03"), committed as a small fixture (made with
//! `rosetta quickstart -o DIR`; see tests/fixtures/README.md).

mod support;

use rosetta::burn::backend::Flex;
use rosetta::translate::{TranslateOptions, Translator};
use rosetta_serve::{ModelSpec, Server, ServerConfig};
use serde_json::json;
use std::net::SocketAddr;
use std::path::PathBuf;
use support::{get, post_json, send};

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dates-model")
}

const DATES: [&str; 12] = [
    "3. März 2021",
    "Tuesday, 3 March 2021",
    "03.03.21",
    "12 January 1999",
    "1. Januar 2000",
    "Friday, 24 December 2010",
    "7 July 2007",
    "29.02.24",
    "Montag, 15. August 1988",
    "31 October 2031",
    "9. September 1909",
    "Sunday, 1 May 2022",
];

fn config(names: &[&str]) -> ServerConfig {
    ServerConfig {
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        workers: 2,
        models: names
            .iter()
            .map(|n| ModelSpec {
                name: (*n).to_owned(),
                paths: vec![fixture()],
                source: None,
                target: None,
            })
            .collect(),
        ..ServerConfig::default()
    }
}

struct Running {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    handle: tokio::task::JoinHandle<Result<(), rosetta_serve::ServeError>>,
}

impl Running {
    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.handle.await.unwrap().unwrap();
    }
}

async fn start(config: ServerConfig) -> Running {
    let models = rosetta_serve::load_models::<Flex>(&config, &Default::default()).unwrap();
    let server = Server::bind(config, models).await.unwrap();
    let addr = server.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));
    Running {
        addr,
        stop: Some(stop),
        handle,
    }
}

/// What `rosetta translate` gives for each line (same library call, same default options).
fn reference(lines: &[&str]) -> Vec<String> {
    let translator = Translator::<Flex>::load(&fixture(), &Default::default()).unwrap();
    translator
        .translate(lines, &TranslateOptions::default())
        .unwrap()
        .iter()
        .map(|t| t.text().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_each_get_their_own_answer() {
    let expected = reference(&DATES);
    // The model really normalizes dates, so a mix-up would show.
    assert_eq!(expected[0], "2021-03-03");
    let server = start(config(&["de-en"])).await;
    let addr = server.addr;
    let mut tasks = Vec::new();
    for round in 0..4 {
        for (i, line) in DATES.iter().enumerate() {
            let line = (*line).to_owned();
            tasks.push(tokio::spawn(async move {
                let reply = if (i + round) % 3 == 0 {
                    post_json(addr, "/v1/translate", &json!({ "text": line })).await
                } else if (i + round) % 3 == 2 {
                    // Multipart form data, as a browser's `FormData` (LibreTranslate's own page).
                    let b = "----rosetta-test-7d1f";
                    let body = ["q", "source", "target"]
                        .iter()
                        .zip([line.as_str(), "de", "en"])
                        .map(|(name, value)| {
                            format!(
                                "--{b}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
                            )
                        })
                        .collect::<String>()
                        + &format!("--{b}--\r\n");
                    let content_type = format!("multipart/form-data; boundary={b}");
                    send(
                        addr,
                        "POST",
                        "/translate",
                        &[("Content-Type", content_type.as_str())],
                        body.as_bytes(),
                    )
                    .await
                    .unwrap()
                } else {
                    let body = format!(
                        "q={}&source=de&target=en",
                        form_urlencoded::byte_serialize(line.as_bytes()).collect::<String>()
                    );
                    send(
                        addr,
                        "POST",
                        "/translate",
                        &[("Content-Type", "application/x-www-form-urlencoded")],
                        body.as_bytes(),
                    )
                    .await
                    .unwrap()
                };
                assert_eq!(reply.status, 200, "{}", reply.text());
                let v = reply.json();
                let text = v["translatedText"]
                    .as_str()
                    .or_else(|| v["translations"][0]["text"].as_str())
                    .unwrap()
                    .to_owned();
                (i, text)
            }));
        }
    }
    for task in tasks {
        let (i, text) = task.await.unwrap();
        assert_eq!(text, expected[i], "request for {:?}", DATES[i]);
    }
    // An array is one batch, answered in order.
    let reply = post_json(
        server.addr,
        "/translate",
        &json!({ "q": DATES, "source": "de", "target": "en" }),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["translatedText"], json!(expected));
    let reply = post_json(server.addr, "/v1/translate", &json!({ "texts": DATES })).await;
    assert_eq!(reply.json()["timing"]["batch_texts"], json!(DATES.len()));
    server.stop().await;
}

/// In-flight batching (greedy search with a Transformer: an OPUS-MT-shaped model imported from the
/// `marian-tiny` fixture): concurrent requests of one to three texts of mixed lengths, through
/// batches of four rows that texts join as others end, each get exactly what `rosetta translate`
/// gives their lines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_batching_answers_each_request_as_translate_does() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m");
    let hf =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../rosetta/tests/fixtures/marian-tiny");
    rosetta::marian::import_marian(&hf, &model).unwrap();
    let lines: Vec<String> = (0..24)
        .map(|i| {
            let words = [
                "Ein", "Mann", "fährt", "Fahrrad", "auf", "der", "Straße", "im", "Regen",
            ];
            (0..1 + (i * 5) % 9)
                .map(|j| words[(i + j * 2) % words.len()])
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    let translator = Translator::<Flex>::load(&model, &Default::default()).unwrap();
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    let expected: Vec<String> = translator
        .translate(&refs, &TranslateOptions::greedy())
        .unwrap()
        .iter()
        .map(|t| t.text().to_owned())
        .collect();
    let mut c = config(&[]);
    c.models = vec![ModelSpec {
        name: "tiny".to_owned(),
        paths: vec![model.clone()],
        source: None,
        target: None,
    }];
    c.batch.in_flight = true;
    c.batch.max_texts = 4;
    let server = start(c).await;
    let addr = server.addr;
    let mut tasks = Vec::new();
    for round in 0..3 {
        for start in 0..lines.len() {
            let texts: Vec<String> = (start..lines.len())
                .take(1 + (start + round) % 3)
                .map(|i| lines[i].clone())
                .collect();
            let first = start;
            tasks.push(tokio::spawn(async move {
                let reply = post_json(
                    addr,
                    "/v1/translate",
                    &json!({ "model": "tiny", "texts": texts, "beam": 1 }),
                )
                .await;
                assert_eq!(reply.status, 200, "{}", reply.text());
                let v = reply.json();
                let got: Vec<String> = v["translations"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|t| t["text"].as_str().unwrap().to_owned())
                    .collect();
                (first, got)
            }));
        }
    }
    for task in tasks {
        let (first, got) = task.await.unwrap();
        for (k, text) in got.iter().enumerate() {
            assert_eq!(text, &expected[first + k], "line {}", first + k);
        }
    }
    let metrics = get(addr, "/metrics").await.text();
    let joined: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("rosetta_joined_texts_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    assert!(joined > 0.0, "texts joined running batches:\n{metrics}");
    server.stop().await;
}

/// Regression: the output-length limit was checked against the longest source the model can read
/// (`max_len_a · 511 + max_len_b` = 1,032 pieces for a trained OPUS-MT-shaped model), so under the
/// default limit of 1,024 that model refused every request. It is the request's own longest text
/// that counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_output_limit_reads_the_request_not_the_longest_source_the_model_takes() {
    let mut c = config(&["de-en"]);
    // 1.5 · 64 + 10 = 106 pieces for the model's longest source; 1.5 · 13 + 10 = 29 for this date.
    c.limits.max_output_len = 50;
    let server = start(c).await;
    let short = post_json(
        server.addr,
        "/v1/translate",
        &json!({ "text": "3. März 2021" }),
    )
    .await;
    assert_eq!(short.status, 200, "{}", short.text());
    assert_eq!(short.json()["translations"][0]["text"], "2021-03-03");
    let long = post_json(
        server.addr,
        "/v1/translate",
        &json!({ "text": "3. März 2021, 4. März 2021, 5. März 2021, 6. März 2021" }),
    )
    .await;
    assert_eq!(long.status, 400);
    assert!(
        long.text().contains("limit of 50 pieces"),
        "{}",
        long.text()
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_api_returns_candidates_alignments_attention_and_timing() {
    let mut c = config(&["de-en", "en-de"]);
    // An ensemble of two (here identical) members.
    c.models.push(ModelSpec {
        name: "ensemble".into(),
        paths: vec![fixture(), fixture()],
        source: None,
        target: None,
    });
    let server = start(c).await;
    let ensemble = post_json(
        server.addr,
        "/v1/translate",
        &json!({ "model": "ensemble", "text": "3. März 2021" }),
    )
    .await
    .json();
    assert_eq!(ensemble["translations"][0]["text"], "2021-03-03");
    let reply = post_json(
        server.addr,
        "/v1/translate",
        &json!({
            "model": "de-en", "texts": ["3. März 2021", ""], "beam": 4, "n_best": 3,
            "alignments": true, "attention": true
        }),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let v = reply.json();
    assert_eq!(v["model"], "de-en");
    let first = &v["translations"][0];
    assert_eq!(first["text"], "2021-03-03");
    assert_eq!(first["candidates"].as_array().unwrap().len(), 3);
    let best = &first["candidates"][0];
    let pieces = best["target_tokens"].as_array().unwrap().len();
    // One attention row and one alignment pair per output piece.
    assert_eq!(best["attention"].as_array().unwrap().len(), pieces);
    assert_eq!(
        best["alignment"].as_str().unwrap().split(' ').count(),
        pieces
    );
    assert!(first["source_tokens"].as_array().unwrap().len() >= 10);
    // An empty line translates to an empty line.
    assert_eq!(v["translations"][1]["text"], "");
    assert!(v["timing"]["total_ms"].as_f64().unwrap() > 0.0);
    // By language pair; sampling is reproducible from its seed.
    let sampled = json!({ "source": "de", "target": "en", "text": "7 July 2007",
                          "sampling": { "seed": 7, "temperature": 1.5 } });
    let a = post_json(server.addr, "/v1/translate", &sampled)
        .await
        .json();
    let b = post_json(server.addr, "/v1/translate", &sampled)
        .await
        .json();
    assert_eq!(a["translations"], b["translations"]);
    let models = get(server.addr, "/v1/models").await.json();
    assert_eq!(models[0]["name"], "de-en");
    assert_eq!(models[0]["arch"], "rnn");
    assert_eq!(models[1]["source"], "en");
    assert_eq!(models[2]["ensemble"], 2);
    // What a request that names no search gets: the library's beam 5, length penalty 1.
    assert_eq!(models[0]["beam"], 5);
    assert_eq!(models[0]["length_penalty"], 1.0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libretranslate_api_speaks_its_shapes() {
    let server = start(config(&["de-en", "fr-en"])).await;
    let addr = server.addr;
    let v = post_json(
        addr,
        "/translate",
        &json!({ "q": "3. März 2021", "source": "de", "target": "en", "alternatives": 2,
                 "api_key": null, "apiKey": "" }),
    )
    .await
    .json();
    assert_eq!(v["translatedText"], "2021-03-03");
    let alts = v["alternatives"].as_array().unwrap();
    assert!(alts.len() <= 2 && alts.iter().all(|a| a != "2021-03-03"));
    let v = post_json(
        addr,
        "/translate",
        &json!({ "q": ["3. März 2021", "7 July 2007"], "source": "de", "target": "en", "alternatives": 1 }),
    )
    .await
    .json();
    assert_eq!(v["translatedText"].as_array().unwrap().len(), 2);
    assert_eq!(v["alternatives"].as_array().unwrap().len(), 2);
    // HTML: text nodes translated, markup kept.
    let v = post_json(
        addr,
        "/translate",
        &json!({ "q": "<p class=\"d\">3. März 2021</p><!-- x --><b>7 July 2007</b>",
                 "source": "de", "target": "en", "format": "html" }),
    )
    .await
    .json();
    assert_eq!(
        v["translatedText"],
        format!(
            "<p class=\"d\">2021-03-03</p><!-- x --><b>{}</b>",
            reference(&["7 July 2007"])[0]
        )
    );
    // `auto` is ambiguous with two models into English, fine with one into German... there is none.
    let r = post_json(
        addr,
        "/translate",
        &json!({ "q": "x", "source": "auto", "target": "en" }),
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(r.json()["error"].as_str().unwrap().contains("detection"));
    let languages = send(
        addr,
        "GET",
        "/languages",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        b"",
    )
    .await
    .unwrap()
    .json();
    assert_eq!(
        languages,
        json!([
            { "code": "de", "name": "German", "targets": ["en"] },
            { "code": "en", "name": "English", "targets": [] },
            { "code": "fr", "name": "French", "targets": ["en"] },
        ])
    );
    assert_eq!(
        get(addr, "/frontend/settings").await.json()["charLimit"],
        5000
    );
    server.stop().await;

    let server = start(config(&["de-en"])).await;
    let v = post_json(
        server.addr,
        "/translate",
        &json!({ "q": ["3. März 2021"], "source": "auto", "target": "en" }),
    )
    .await
    .json();
    assert_eq!(
        v["detectedLanguage"],
        json!([{ "confidence": 100.0, "language": "de" }])
    );
    let v = post_json(server.addr, "/detect", &json!({ "q": "3. März 2021" }))
        .await
        .json();
    assert_eq!(v, json!([{ "confidence": 100.0, "language": "de" }]));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_request_gets_a_4xx_with_a_json_message() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.txt");
    std::fs::write(&keys, "# keys\nsecret-1\n\nsecret-2\n").unwrap();
    let mut c = config(&["de-en"]);
    c.api_keys_file = Some(keys);
    c.limits.max_chars = 50;
    c.limits.max_texts = 3;
    c.limits.max_body_bytes = 2000;
    let server = start(c).await;
    let addr = server.addr;
    let json_ct = [("Content-Type", "application/json")];
    let form_ct = [("Content-Type", "application/x-www-form-urlencoded")];
    // (method, path, headers, body, expected status, part of the expected message)
    type Case<'a> = (
        &'a str,
        &'a str,
        Vec<(&'a str, &'a str)>,
        Vec<u8>,
        u16,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        ("POST", "/translate", json_ct.to_vec(), br#"{"q": "x", "#.to_vec(), 400, "could not understand"),
        ("POST", "/translate", json_ct.to_vec(), b"[1, 2]".to_vec(), 400, "Invalid JSON format"),
        ("POST", "/translate", json_ct.to_vec(), br#"{"q": 5, "source": "de", "target": "en", "api_key": "secret-1"}"#.to_vec(), 400, "q must be"),
        ("POST", "/translate", json_ct.to_vec(), br#"{"q": "", "source": "de", "target": "en", "api_key": "secret-1"}"#.to_vec(), 400, "missing q parameter"),
        ("POST", "/translate", json_ct.to_vec(), br#"{"q": "x", "target": "en", "api_key": "secret-1"}"#.to_vec(), 400, "missing source parameter"),
        ("POST", "/translate", json_ct.to_vec(), br#"{"q": "x", "source": "zz", "target": "en", "api_key": "secret-1"}"#.to_vec(), 400, "zz is not supported"),
        ("POST", "/translate", json_ct.to_vec(), br#"{"q": "x", "source": "en", "target": "de", "api_key": "secret-1"}"#.to_vec(), 400, "is not available as a target language"),
        ("POST", "/translate", json_ct.to_vec(), br#"{"q": "x", "source": "de", "target": "en", "format": "xml", "api_key": "secret-1"}"#.to_vec(), 400, "xml format is not supported"),
        ("POST", "/translate", json_ct.to_vec(), br#"{"q": "x", "source": "de", "target": "en", "alternatives": "many", "api_key": "secret-1"}"#.to_vec(), 400, "not a number"),
        ("POST", "/translate", json_ct.to_vec(), br#"{"q": ["a", "b", "c", "d"], "source": "de", "target": "en", "api_key": "secret-1"}"#.to_vec(), 400, "exceeds text limit (3)"),
        ("POST", "/translate", json_ct.to_vec(), format!(r#"{{"q": "{}", "source": "de", "target": "en", "api_key": "secret-1"}}"#, "ü".repeat(51)).into_bytes(), 400, "(51) exceeds text limit (50)"),
        ("POST", "/translate", json_ct.to_vec(), br#"{"q": "x", "source": "de", "target": "en"}"#.to_vec(), 400, "API key"),
        ("POST", "/translate", json_ct.to_vec(), br#"{"q": "x", "source": "de", "target": "en", "api_key": "nope"}"#.to_vec(), 403, "Invalid API key"),
        ("POST", "/translate", form_ct.to_vec(), b"q=\xff\xfe&source=de&target=en&api_key=secret-1".to_vec(), 400, "UTF-8"),
        ("POST", "/translate", json_ct.to_vec(), b"{\"q\": \"\xff\", \"source\": \"de\", \"target\": \"en\"}".to_vec(), 400, "could not understand"),
        ("POST", "/translate", json_ct.to_vec(), vec![b' '; 3000], 413, "limit of 2000 bytes"),
        ("POST", "/translate", vec![("Content-Type", "multipart/form-data; boundary=zz")], b"--zz\r\nContent-Disposition: form-data; name=\"q\"\r\n\r\nx".to_vec(), 400, "malformed multipart body"),
        ("POST", "/translate", vec![("Content-Type", "multipart/form-data")], b"q=x".to_vec(), 400, "malformed multipart body"),
        ("POST", "/translate", vec![("Content-Type", "multipart/form-data; boundary=zz")], b"--zz\r\nContent-Disposition: form-data; name=\"q\"\r\n\r\n\xff\r\n--zz--\r\n".to_vec(), 400, "q field is not valid UTF-8"),
        ("POST", "/v1/translate", json_ct.to_vec(), br#"{"text": "x", "api_key": "secret-2", "beem": 3}"#.to_vec(), 400, "unknown field `beem`"),
        ("POST", "/v1/translate", json_ct.to_vec(), br#"{"text": 3, "api_key": "secret-2"}"#.to_vec(), 400, "invalid type"),
        ("POST", "/v1/translate", json_ct.to_vec(), br#"{"texts": [], "api_key": "secret-2"}"#.to_vec(), 400, "empty"),
        ("POST", "/v1/translate", json_ct.to_vec(), br#"{"text": "x", "model": "xx", "api_key": "secret-2"}"#.to_vec(), 400, "unknown model"),
        ("POST", "/v1/translate", json_ct.to_vec(), br#"{"text": "x", "beam": 0, "api_key": "secret-2"}"#.to_vec(), 400, "beam"),
        ("POST", "/v1/translate", json_ct.to_vec(), br#"{"text": "x", "beam": 100, "api_key": "secret-2"}"#.to_vec(), 400, "limit of 16"),
        ("POST", "/v1/translate", json_ct.to_vec(), br#"{"text": "x", "max_len_b": 1000000000, "api_key": "secret-2"}"#.to_vec(), 400, "limit of 1024 pieces"),
        ("POST", "/v1/translate", json_ct.to_vec(), br#"{"text": "x", "min_len": 5000, "api_key": "secret-2"}"#.to_vec(), 400, "limit of 1024 pieces"),
        ("POST", "/translate", json_ct.to_vec(), br#"{"q": "x", "source": "de", "target": "en", "alternatives": 18446744073709551615, "api_key": "secret-1"}"#.to_vec(), 400, "alternatives parameter must be <= 15"),
        ("POST", "/v1/translate", json_ct.to_vec(), br#"{"text": "x"}"#.to_vec(), 403, "requires an API key"),
        ("POST", "/v1/translate", vec![("Content-Type", "application/json"), ("Authorization", "Bearer wrong")], br#"{"text": "x"}"#.to_vec(), 403, "Invalid API key"),
        ("GET", "/v1/translate", vec![], vec![], 405, "method not allowed"),
        ("GET", "/nowhere", vec![], vec![], 404, "no such endpoint"),
    ];
    for (method, path, headers, body, status, message) in cases {
        let reply = send(addr, method, path, &headers, &body).await.unwrap();
        let shown = String::from_utf8_lossy(&body)
            .chars()
            .take(80)
            .collect::<String>();
        assert_eq!(
            reply.status,
            status,
            "{method} {path} {shown}: {}",
            reply.text()
        );
        let error = reply.json()["error"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(
            error.contains(message),
            "{method} {path} {shown}: {error:?} lacks {message:?}"
        );
    }
    // A right key in the header works, also beside an empty `api_key` in the body (regression:
    // that hid the header's key, 403).
    for body in [
        &br#"{"text": "3. M\u00e4rz 2021"}"#[..],
        br#"{"text": "3. M\u00e4rz 2021", "api_key": ""}"#,
    ] {
        let reply = send(
            addr,
            "POST",
            "/v1/translate",
            &[
                ("Content-Type", "application/json"),
                ("Authorization", "Bearer secret-2"),
            ],
            body,
        )
        .await
        .unwrap();
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_429_with_retry_after_and_a_slow_one_503() {
    let mut c = config(&["de-en"]);
    c.workers = 1;
    c.limits.max_texts = 2;
    c.limits.queue_texts = 2;
    // The first request waits in the queue for others to join its batch.
    c.batch.max_wait_ms = 1500;
    let server = start(c).await;
    let addr = server.addr;
    let first = tokio::spawn(async move {
        post_json(
            addr,
            "/v1/translate",
            &json!({ "texts": ["3. März 2021", "7 July 2007"] }),
        )
        .await
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let rejected = post_json(addr, "/v1/translate", &json!({ "text": "7 July 2007" })).await;
    assert_eq!(rejected.status, 429, "{}", rejected.text());
    assert_eq!(rejected.header("retry-after"), Some("1"));
    assert!(
        rejected.json()["error"]
            .as_str()
            .unwrap()
            .contains("queue is full")
    );
    let first = first.await.unwrap();
    assert_eq!(first.status, 200, "{}", first.text());
    let metrics = get(addr, "/metrics").await.text();
    assert!(
        metrics.contains("rosetta_requests_total{endpoint=\"/v1/translate\",status=\"429\"} 1"),
        "{metrics}"
    );
    server.stop().await;

    let mut c = config(&["de-en"]);
    c.batch.max_wait_ms = 2000;
    c.limits.timeout_s = 0.3;
    let server = start(c).await;
    let slow = post_json(
        server.addr,
        "/v1/translate",
        &json!({ "text": "7 July 2007" }),
    )
    .await;
    assert_eq!(slow.status, 503, "{}", slow.text());
    assert!(
        slow.json()["error"]
            .as_str()
            .unwrap()
            .contains("0.3 s limit")
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_answers_every_accepted_request() {
    let mut c = config(&["de-en"]);
    // Requests sit in the queue when shutdown begins.
    c.batch.max_wait_ms = 400;
    c.workers = 1;
    let server = start(c).await;
    let addr = server.addr;
    let expected = reference(&DATES);
    let tasks: Vec<_> = DATES
        .iter()
        .map(|line| {
            let line = (*line).to_owned();
            tokio::spawn(
                async move { post_json(addr, "/v1/translate", &json!({ "text": line })).await },
            )
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    let health = get(addr, "/health").await;
    assert_eq!(health.json()["status"], "ok");
    server.stop().await;
    for (i, task) in tasks.into_iter().enumerate() {
        let reply = task.await.unwrap();
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(reply.json()["translations"][0]["text"], expected[i]);
    }
    // Nothing listens any more.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_metrics_health_and_readiness() {
    let mut c = config(&["de-en"]);
    c.cors_origins = vec!["https://example.org".into()];
    let server = start(c).await;
    let addr = server.addr;
    let page = get(addr, "/").await;
    assert_eq!(page.status, 200);
    assert!(page.text().contains("<title>Rosetta</title>"));
    assert_eq!(get(addr, "/ready").await.json()["status"], "ready");
    let reply = send(
        addr,
        "POST",
        "/v1/translate",
        &[
            ("Content-Type", "application/json"),
            ("Origin", "https://example.org"),
        ],
        br#"{"texts": ["3. M\u00e4rz 2021", "7 July 2007"]}"#,
    )
    .await
    .unwrap();
    assert_eq!(
        reply.header("access-control-allow-origin"),
        Some("https://example.org")
    );
    let metrics = get(addr, "/metrics").await.text();
    for needle in [
        "rosetta_requests_total{endpoint=\"/v1/translate\",status=\"200\"} 1",
        "rosetta_request_duration_seconds_bucket{",
        "rosetta_batch_texts_count 1",
        "rosetta_translated_texts_total 2",
        "rosetta_queue_texts 0",
        "rosetta_output_tokens_total ",
    ] {
        assert!(
            metrics.contains(needle),
            "{needle:?} missing from\n{metrics}"
        );
    }
    server.stop().await;
}

#[test]
fn configs_are_checked_before_anything_starts() {
    assert!(ModelSpec::parse("no-equals-sign").is_err());
    let spec = ModelSpec::parse("de-en=a,b").unwrap();
    assert_eq!(spec.paths.len(), 2);
    assert_eq!(spec.pair(), Some(("de".into(), "en".into())));
    assert_eq!(ModelSpec::parse("dates=a").unwrap().pair(), None);
    let mut c = config(&["de-en", "de-en"]);
    assert!(c.validate().unwrap_err().to_string().contains("used twice"));
    c = config(&[]);
    assert!(c.validate().unwrap_err().to_string().contains("no model"));
    c = config(&["de-en"]);
    c.limits.queue_texts = 1;
    assert!(
        c.validate()
            .unwrap_err()
            .to_string()
            .contains("queue_texts")
    );
    c = config(&["de-en"]);
    c.limits.max_beam = 4;
    assert!(
        c.validate()
            .unwrap_err()
            .to_string()
            .contains("default beam size")
    );
    let err = toml::from_str::<ServerConfig>("adress = \"x\"").unwrap_err();
    assert!(err.to_string().contains("unknown field"));
    let file: ServerConfig = toml::from_str(
        "addr = \"127.0.0.1:9000\"\n[batch]\nmax_wait_ms = 2\n[[model]]\nname = \"dates\"\npaths = [\"m\"]\nsource = \"de\"\ntarget = \"iso\"\n",
    )
    .unwrap();
    assert_eq!(file.models[0].pair(), Some(("de".into(), "iso".into())));
    file.validate().unwrap();
    // A model directory that is not one: a clear error naming it.
    let mut c = config(&["de-en"]);
    c.models[0].paths = vec![PathBuf::from("/nonexistent/model")];
    let err = rosetta_serve::load_models::<Flex>(&c, &Default::default()).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/model"), "{err}");
}

/// The server config shown in README.md (a TOML block with `[[model]]` tables) parses and validates.
#[test]
fn readme_server_config_loads() {
    let readme =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../README.md"))
            .unwrap();
    let mut count = 0;
    for block in readme.split("```toml\n").skip(1) {
        let Some((text, _)) = block.split_once("```") else {
            continue;
        };
        if text.contains("[[model]]") {
            let config: ServerConfig =
                toml::from_str(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
            config.validate().unwrap();
            count += 1;
        }
    }
    assert_eq!(count, 1, "the README's server config is missing");
}

/// A text longer than the model reads (the fixture reads 64 pieces, one a character) came back
/// with its first part only: LibreTranslate's clients send paragraphs and expect all of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_a_libre_text_longer_than_the_model_reads_was_cut() {
    let long = DATES.join("\n");
    assert!(long.chars().count() > 64);
    let expected = reference(&DATES).join("\n");
    let server = start(config(&["de-en"])).await;
    let v = post_json(
        server.addr,
        "/translate",
        &json!({ "q": long, "source": "de", "target": "en" }),
    )
    .await
    .json();
    assert_eq!(v["translatedText"], json!(expected));
    // With alternatives, and as an HTML text node.
    let v = post_json(
        server.addr,
        "/translate",
        &json!({ "q": [long.clone()], "source": "de", "target": "en", "alternatives": 2 }),
    )
    .await
    .json();
    assert_eq!(v["translatedText"], json!([expected]));
    assert!(v["alternatives"][0].as_array().is_some(), "{v}");
    let v = post_json(
        server.addr,
        "/translate",
        &json!({ "q": format!("<p>{long}</p>"), "source": "de", "target": "en", "format": "html" }),
    )
    .await
    .json();
    assert_eq!(v["translatedText"], json!(format!("<p>{expected}</p>")));
    // A browser's form sends the line breaks as CRLF: read as LF, as LibreTranslate does.
    let body = format!(
        "q={}&source=de&target=en",
        form_urlencoded::byte_serialize(DATES.join("\r\n").as_bytes()).collect::<String>()
    );
    let reply = send(
        server.addr,
        "POST",
        "/translate",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        body.as_bytes(),
    )
    .await
    .unwrap();
    assert_eq!(reply.json()["translatedText"], json!(expected));
    // The native API translates what the model reads and says it was cut.
    let v = post_json(server.addr, "/v1/translate", &json!({ "text": long }))
        .await
        .json();
    assert_eq!(v["translations"][0]["truncated"], json!(true), "{v}");
    server.stop().await;
}

/// `alternatives` as LibreTranslate reads it (Python's `int()`, negatives as 0): `-1`, `2.0` and
/// `true` were 400s here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_libre_alternatives_read_as_libretranslate_reads_them() {
    let server = start(config(&["de-en"])).await;
    for (alternatives, listed) in [
        (json!(-1), false),
        (json!("-3"), false),
        (json!(2.0), true),
        (json!(true), true),
        (json!(" 2 "), true),
    ] {
        let reply = post_json(
            server.addr,
            "/translate",
            &json!({ "q": "3. März 2021", "source": "de", "target": "en", "alternatives": alternatives }),
        )
        .await;
        assert_eq!(reply.status, 200, "{alternatives}: {}", reply.text());
        let v = reply.json();
        assert_eq!(v["translatedText"], "2021-03-03", "{alternatives}");
        assert_eq!(
            v.get("alternatives").is_some(),
            listed,
            "{alternatives}: {v}"
        );
    }
    let reply = post_json(
        server.addr,
        "/translate",
        &json!({ "q": "x", "source": "de", "target": "en", "alternatives": "2.5" }),
    )
    .await;
    assert_eq!(reply.status, 400);
    server.stop().await;
}
