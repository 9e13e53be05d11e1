//! The LibreTranslate-compatible API, so existing clients work unchanged: `POST /translate`,
//! `GET /languages`, `POST /detect`, `GET /frontend/settings`. Parameters arrive as JSON or as
//! form data, URL-encoded or multipart (LibreTranslate reads all three, and the query string; its
//! own web page sends `FormData`, which browsers encode as multipart); answers, error messages and status
//! codes follow LibreTranslate 1.9 (`libretranslate/app.py`).

use crate::app::{AppState, Shared, body_error, unreadable};
use crate::error::ApiError;
use crate::html::HtmlDoc;
use crate::languages;
use crate::split::{self, Segment};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use rosetta::search::BeamConfig;
use rosetta::translate::TranslateOptions;
use serde_json::{Value, json};

/// `q`: one text or a list (JSON only).
#[derive(Debug, Clone, PartialEq)]
enum Query {
    One(String),
    Many(Vec<String>),
}

/// The parameters of a LibreTranslate request, from either encoding.
#[derive(Debug, Clone, Default, PartialEq)]
struct Params {
    q: Option<Query>,
    source: Option<String>,
    target: Option<String>,
    format: Option<String>,
    alternatives: Option<String>,
    api_key: Option<String>,
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            let v = v
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            v == "application/json" || v.ends_with("+json")
        })
}

/// Reads the parameters as LibreTranslate does: a JSON object when the body is JSON, otherwise
/// form fields (URL-encoded or multipart) and the query string.
async fn params(
    headers: &HeaderMap,
    query: Option<&str>,
    body: &Bytes,
) -> Result<Params, ApiError> {
    let mut p = Params::default();
    if is_json(headers) {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(p);
        }
        let value: Value = serde_json::from_slice(body).map_err(|_| {
            ApiError::bad_request(
                "The browser (or proxy) sent a request that this server could not understand.",
            )
        })?;
        let Value::Object(map) = value else {
            return Err(ApiError::bad_request("Invalid JSON format"));
        };
        let text = |key: &str| -> Result<Option<String>, ApiError> {
            match map.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                // LibreTranslate reads JSON `alternatives` with Python's `int()`: 2.0 is 2, true 1.
                Some(Value::Number(n)) if key == "alternatives" => Ok(Some(
                    n.as_i64()
                        .or_else(|| {
                            n.as_f64()
                                .filter(|f| f.is_finite())
                                .map(|f| f.trunc() as i64)
                        })
                        .map_or_else(|| n.to_string(), |i| i.to_string()),
                )),
                Some(Value::Bool(b)) if key == "alternatives" => Ok(Some(u8::from(*b).to_string())),
                Some(_) => Err(ApiError::bad_request(format!(
                    "Invalid request: {key} must be a string"
                ))),
            }
        };
        p.q = match map.get("q") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(Query::One(s.clone())),
            Some(Value::Array(items)) => Some(Query::Many(
                items
                    .iter()
                    .map(|v| v.as_str().map(str::to_owned))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| {
                        ApiError::bad_request(
                            "Invalid request: q must be a string or a list of strings",
                        )
                    })?,
            )),
            Some(_) => {
                return Err(ApiError::bad_request(
                    "Invalid request: q must be a string or a list of strings",
                ));
            }
        };
        p.source = text("source")?;
        p.target = text("target")?;
        p.format = text("format")?;
        p.alternatives = text("alternatives")?;
        p.api_key = text("api_key")?;
        return Ok(p);
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    // The query string's fields first: of repeated fields the first counts, as in LibreTranslate.
    let from_query = form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()));
    if content_type
        .trim_start()
        .to_ascii_lowercase()
        .starts_with("multipart/form-data")
    {
        let fields = multipart_fields(content_type, body.clone()).await?;
        assign(&mut p, from_query.chain(fields));
        return Ok(p);
    }
    if std::str::from_utf8(body).is_err() {
        return Err(ApiError::bad_request(
            "Invalid request: the body is not valid UTF-8",
        ));
    }
    let from_body = form_urlencoded::parse(body).map(|(k, v)| (k.into_owned(), v.into_owned()));
    assign(&mut p, from_query.chain(from_body));
    Ok(p)
}

/// Sets the parameters from form fields, the first of each name counting.
fn assign(p: &mut Params, fields: impl Iterator<Item = (String, String)>) {
    for (key, value) in fields {
        match key.as_str() {
            // A browser's form sends a textarea's line breaks as CRLF; LibreTranslate reads them
            // as LF (before counting characters against its limit), and so does this server.
            "q" => p.q = p.q.take().or(Some(Query::One(value.replace("\r\n", "\n")))),
            "source" => p.source = p.source.take().or(Some(value)),
            "target" => p.target = p.target.take().or(Some(value)),
            "format" => p.format = p.format.take().or(Some(value)),
            "alternatives" => p.alternatives = p.alternatives.take().or(Some(value)),
            "api_key" => p.api_key = p.api_key.take().or(Some(value)),
            _ => {}
        }
    }
}

/// The fields of a `multipart/form-data` body, as text (a field that is not UTF-8 is a 400, as
/// elsewhere; file parts are read like any field: `/translate` takes no files).
async fn multipart_fields(
    content_type: &str,
    body: Bytes,
) -> Result<Vec<(String, String)>, ApiError> {
    let malformed = |e: multer::Error| {
        ApiError::bad_request(format!("Invalid request: malformed multipart body: {e}"))
    };
    let boundary = multer::parse_boundary(content_type).map_err(malformed)?;
    let stream = futures_util::stream::once(async move { Ok::<_, std::convert::Infallible>(body) });
    let mut multipart = multer::Multipart::new(stream, boundary);
    let mut fields = Vec::new();
    while let Some(field) = multipart.next_field().await.map_err(malformed)? {
        let name = field.name().map(str::to_owned);
        let bytes = field.bytes().await.map_err(malformed)?;
        let Some(name) = name else { continue };
        let value = String::from_utf8(bytes.to_vec()).map_err(|_| {
            ApiError::bad_request(format!(
                "Invalid request: the {name} field is not valid UTF-8"
            ))
        })?;
        fields.push((name, value));
    }
    Ok(fields)
}

/// LibreTranslate's access check: 400 for a missing key, 403 for a wrong one.
fn check_key(state: &AppState, key: Option<&str>) -> Result<(), ApiError> {
    match state.check_key(key) {
        Ok(()) => Ok(()),
        Err(true) => Err(ApiError::bad_request(
            "Please contact the server operator to get an API key",
        )),
        Err(false) => Err(ApiError::new(StatusCode::FORBIDDEN, "Invalid API key")),
    }
}

fn missing(name: &str) -> ApiError {
    ApiError::bad_request(format!("Invalid request: missing {name} parameter"))
}

/// Distinct language codes of the served pairs, in configuration order: sources and targets, or
/// sources only.
fn codes(state: &AppState, targets_too: bool) -> Vec<String> {
    let mut codes: Vec<String> = Vec::new();
    for (s, t) in state.models.iter().filter_map(|m| m.pair.as_ref()) {
        for c in std::iter::once(s).chain(targets_too.then_some(t)) {
            if !codes.contains(c) {
                codes.push(c.clone());
            }
        }
    }
    codes
}

/// Reads a request's parameters, checks its API key, and takes its texts (`q`, which must not be
/// empty): what `/translate` and `/detect` share. `true` when `q` was a list.
async fn read_request(
    state: &AppState,
    headers: &HeaderMap,
    query: Option<&str>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(Params, Vec<String>, bool), ApiError> {
    let body = body.map_err(|r| body_error(r, state.config.limits.max_body_bytes))?;
    let mut p = params(headers, query, &body).await?;
    check_key(state, p.api_key.as_deref())?;
    let (texts, many) = match p.q.take() {
        Some(Query::One(s)) if !s.is_empty() => (vec![s], false),
        Some(Query::Many(v)) if !v.is_empty() => (v, true),
        _ => return Err(missing("q")),
    };
    Ok((p, texts, many))
}

/// `POST /translate`.
pub async fn translate(
    State(state): State<Shared>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let (p, texts, many) = read_request(&state, &headers, query.as_deref(), body).await?;
    let source = p
        .source
        .filter(|s| !s.is_empty())
        .ok_or_else(|| missing("source"))?
        .to_lowercase();
    let target = p
        .target
        .filter(|s| !s.is_empty())
        .ok_or_else(|| missing("target"))?
        .to_lowercase();
    // As LibreTranslate: an integer, negative ones read as 0.
    let alternatives: usize = match p.alternatives.as_deref().map(str::trim) {
        None | Some("") => 0,
        Some(a) => a
            .parse::<i64>()
            .map(|n| usize::try_from(n.max(0)).unwrap_or(usize::MAX))
            .map_err(|_| {
                ApiError::bad_request("Invalid request: alternatives parameter is not a number")
            })?,
    };
    let max_beam = state.config.limits.max_beam;
    if alternatives >= max_beam {
        return Err(ApiError::bad_request(format!(
            "Invalid request: alternatives parameter must be <= {}",
            max_beam - 1
        )));
    }
    state.check_texts(&texts)?;
    let codes = codes(&state, true);
    let (index, detected) = if source == "auto" {
        let candidates: Vec<usize> = (0..state.models.len())
            .filter(|&i| {
                state.models[i]
                    .pair
                    .as_ref()
                    .is_some_and(|(_, t)| *t == target)
            })
            .collect();
        match candidates.as_slice() {
            [i] => (*i, state.models[*i].pair.as_ref().map(|p| p.0.clone())),
            [] => return Err(ApiError::bad_request(format!("{target} is not supported"))),
            several => {
                let from: Vec<&str> = several
                    .iter()
                    .filter_map(|&i| state.models[i].pair.as_ref().map(|p| p.0.as_str()))
                    .collect();
                return Err(ApiError::bad_request(format!(
                    "source \"auto\" needs language detection, which this server does not do: \
                     {} models translate into {target} (from {}); name the source language",
                    several.len(),
                    from.join(", ")
                )));
            }
        }
    } else {
        if !codes.contains(&source) {
            return Err(ApiError::bad_request(format!("{source} is not supported")));
        }
        if !codes.contains(&target) {
            return Err(ApiError::bad_request(format!("{target} is not supported")));
        }
        let index = state.model_for_pair(&source, &target).ok_or_else(|| {
            ApiError::bad_request(format!(
                "{} ({target}) is not available as a target language from {} ({source})",
                languages::name(&target),
                languages::name(&source)
            ))
        })?;
        (index, None)
    };
    let html = match p.format.as_deref().unwrap_or("text") {
        "text" | "" => false,
        "html" => true,
        other => {
            return Err(ApiError::bad_request(format!(
                "{other} format is not supported"
            )));
        }
    };
    // HTML: every document's text nodes, all in one batch.
    let docs: Vec<HtmlDoc> = if html {
        texts.iter().map(|t| HtmlDoc::parse(t)).collect()
    } else {
        Vec::new()
    };
    let inputs: Vec<String> = if html {
        docs.iter()
            .flat_map(|d| d.texts().into_iter().map(str::to_owned))
            .collect()
    } else {
        texts.clone()
    };
    // A text the model would cut (longer than its maximum source length) goes in segments it
    // reads whole, as LibreTranslate translates sentence by sentence (see `split`).
    // Read here once, as the model reads them, and queued so.
    let engine = state.models[index].engine.as_ref();
    let mut plans: Vec<Vec<Segment>> = Vec::with_capacity(inputs.len());
    let mut sources = Vec::with_capacity(inputs.len());
    for text in &inputs {
        let (plan, read): (Vec<Segment>, Vec<_>) = split::segments(engine, text)
            .map_err(unreadable)?
            .into_iter()
            .unzip();
        plans.push(plan);
        sources.extend(read);
    }
    drop(inputs);
    // Each text node of an HTML document, and each segment of a long text, is one text in the
    // queue.
    if sources.len() > state.config.limits.queue_texts {
        return Err(ApiError::bad_request(format!(
            "Invalid request: the texts make {} segments to translate (text nodes, long texts' sentences), more than this server queues ({})",
            sources.len(),
            state.config.limits.queue_texts
        )));
    }
    let n_best = alternatives + 1;
    let defaults = state.models[index].engine.search_defaults();
    let options = TranslateOptions {
        search: BeamConfig {
            n_best,
            beam: defaults.beam.max(n_best).min(max_beam),
            ..defaults
        },
        ..TranslateOptions::default()
    };
    let translations = if sources.is_empty() {
        Vec::new()
    } else {
        split::merge(
            &plans,
            state
                .translate_sources(index, sources, options)
                .await?
                .translations,
        )
    };
    let (outputs, alts): (Vec<String>, Vec<Vec<String>>) = if html {
        let mut next = translations.iter();
        docs.iter()
            .map(|d| {
                let own: Vec<String> = next
                    .by_ref()
                    .take(d.texts().len())
                    .map(|t| t.text().to_owned())
                    .collect();
                (d.render(&own), Vec::new())
            })
            .unzip()
    } else {
        translations
            .iter()
            .map(|t| {
                let best = t.text().to_owned();
                let mut alts: Vec<String> = Vec::new();
                for c in t.candidates.iter().skip(1) {
                    if alts.len() < alternatives
                        && !c.text.is_empty()
                        && c.text != best
                        && !alts.contains(&c.text)
                    {
                        alts.push(c.text.clone());
                    }
                }
                (best, alts)
            })
            .unzip()
    };
    let mut answer = serde_json::Map::new();
    let detected_value =
        detected.map(|language| json!({ "confidence": 100.0, "language": language }));
    if many {
        answer.insert("translatedText".into(), json!(outputs));
        if alternatives > 0 {
            answer.insert("alternatives".into(), json!(alts));
        }
        if let Some(d) = detected_value {
            answer.insert(
                "detectedLanguage".into(),
                Value::Array(vec![d; outputs.len()]),
            );
        }
    } else {
        answer.insert(
            "translatedText".into(),
            json!(outputs.into_iter().next().unwrap_or_default()),
        );
        if alternatives > 0 {
            answer.insert(
                "alternatives".into(),
                json!(alts.into_iter().next().unwrap_or_default()),
            );
        }
        if let Some(d) = detected_value {
            answer.insert("detectedLanguage".into(), d);
        }
    }
    Ok(Json(Value::Object(answer)))
}

/// `GET /languages` (also POST; clients send either, some with a body, which is ignored): every
/// language the server knows, with the languages it translates into.
pub async fn languages(State(state): State<Shared>) -> Json<Value> {
    let list: Vec<Value> = codes(&state, true)
        .into_iter()
        .map(|code| {
            let targets: Vec<&str> = state
                .models
                .iter()
                .filter_map(|m| m.pair.as_ref())
                .filter(|(s, _)| *s == code)
                .map(|(_, t)| t.as_str())
                .collect();
            json!({ "code": code, "name": languages::name(&code), "targets": targets })
        })
        .collect();
    Json(Value::Array(list))
}

/// `POST /detect`. Rosetta does no language identification: a server whose models all read one
/// language answers with it; otherwise the request is refused with a message saying so.
pub async fn detect(
    State(state): State<Shared>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    read_request(&state, &headers, query.as_deref(), body).await?;
    match codes(&state, false).as_slice() {
        [only] => Ok(Json(json!([{ "confidence": 100.0, "language": only }]))),
        codes => Err(ApiError::bad_request(format!(
            "language detection is not available on this server (it reads {}); name the source language",
            if codes.is_empty() {
                "no language codes".to_owned()
            } else {
                codes.join(", ")
            }
        ))),
    }
}

/// `GET /frontend/settings`, which LibreTranslate's web front end and some clients read.
pub async fn settings(State(state): State<Shared>) -> Json<Value> {
    let keys = state.api_keys.is_some();
    let pair = state.models.iter().find_map(|m| m.pair.clone());
    let lang = |code: Option<String>| {
        code.map_or(
            Value::Null,
            |c| json!({ "code": c, "name": languages::name(&c) }),
        )
    };
    Json(json!({
        "charLimit": state.config.limits.max_chars,
        "frontendTimeout": 500,
        "apiKeys": keys,
        "keyRequired": keys,
        "suggestions": false,
        "filesTranslation": false,
        "supportedFilesFormat": [],
        "language": {
            "source": lang(pair.as_ref().map(|p| p.0.clone())),
            "target": lang(pair.map(|p| p.1)),
        },
    }))
}
