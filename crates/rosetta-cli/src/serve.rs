//! `rosetta serve --model de-en=DIR`: the HTTP server (native API, LibreTranslate-compatible API,
//! metrics, web page). All of it lives in the `rosetta-serve` library; this file only maps flags.

use anyhow::{Context, Result};
use rosetta::device::{DeviceChoice, Job, resolve, run_on};
use rosetta_serve::{ModelSpec, ServerConfig};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A model to serve as NAME=DIR (NAME=DIR1,DIR2 for an ensemble). A name like `de-en` serves
    /// requests from de to en. Repeat for several models.
    #[arg(long, short = 'm', value_name = "NAME=DIR")]
    model: Vec<String>,
    /// A TOML file with the server settings and `[[model]]` tables; flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address to listen on (default 127.0.0.1:8080).
    #[arg(long)]
    addr: Option<SocketAddr>,
    /// Decoding threads (default: one per CPU core).
    #[arg(long)]
    workers: Option<usize>,
    /// A file of API keys, one per line; requests must then carry one.
    #[arg(long)]
    api_keys: Option<PathBuf>,
    /// Allow browsers on this origin to call the API (repeatable; `*` for any).
    #[arg(long)]
    cors: Vec<String>,
    /// Source tokens per batch, padding included.
    #[arg(long)]
    max_batch_tokens: Option<usize>,
    /// Texts per batch (1 = no batching across requests).
    #[arg(long)]
    max_batch_texts: Option<usize>,
    /// Milliseconds a request waits for others to share its batch.
    #[arg(long)]
    max_wait_ms: Option<u64>,
    /// In-flight batching for greedy Transformer search: texts join a running batch as others
    /// end, and each request is answered when its own texts are done.
    #[arg(long)]
    in_flight: bool,
    /// Characters per text.
    #[arg(long)]
    max_chars: Option<usize>,
    /// Texts per request.
    #[arg(long)]
    max_texts: Option<usize>,
    /// Texts the queue holds before answering 429.
    #[arg(long)]
    queue: Option<usize>,
    /// Seconds a request may wait for its answer.
    #[arg(long)]
    timeout: Option<f64>,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    device: DeviceChoice,
}

impl Args {
    fn server_config(&self) -> Result<ServerConfig> {
        let mut c = match &self.config {
            Some(path) => ServerConfig::load(path)?,
            None => ServerConfig::default(),
        };
        for m in &self.model {
            c.models.push(ModelSpec::parse(m)?);
        }
        if let Some(a) = self.addr {
            c.addr = a;
        }
        if let Some(w) = self.workers {
            c.workers = w;
        }
        if let Some(k) = &self.api_keys {
            c.api_keys_file = Some(k.clone());
        }
        if !self.cors.is_empty() {
            c.cors_origins = self.cors.clone();
        }
        let b = &mut c.batch;
        b.max_tokens = self.max_batch_tokens.unwrap_or(b.max_tokens);
        b.max_texts = self.max_batch_texts.unwrap_or(b.max_texts);
        b.max_wait_ms = self.max_wait_ms.unwrap_or(b.max_wait_ms);
        b.in_flight |= self.in_flight;
        let l = &mut c.limits;
        l.max_chars = self.max_chars.unwrap_or(l.max_chars);
        l.max_texts = self.max_texts.unwrap_or(l.max_texts);
        l.queue_texts = self.queue.unwrap_or(l.queue_texts);
        l.timeout_s = self.timeout.unwrap_or(l.timeout_s);
        c.validate()?;
        Ok(c)
    }
}

struct ServeJob {
    config: ServerConfig,
}

impl Job for ServeJob {
    type Output = Result<()>;
    fn run<B: rosetta::burn::tensor::backend::AutodiffBackend>(
        self,
        device: B::Device,
    ) -> Result<()> {
        let models = rosetta_serve::load_models::<B::InnerBackend>(&self.config, &device)?;
        for m in &models {
            let pair = m
                .pair
                .as_ref()
                .map_or_else(String::new, |(s, t)| format!(" ({s} → {t})"));
            eprintln!(
                "model {}{pair}: {} from {}",
                m.name,
                m.engine.arch(),
                m.paths
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(" + ")
            );
        }
        let workers = self.config.worker_count();
        rosetta_serve::run_until_signal(self.config, models, |addr| {
            eprintln!("listening on http://{addr} ({workers} decoding threads); Ctrl-C to stop");
        })
        .context("the server stopped with an error")?;
        eprintln!("stopped");
        Ok(())
    }
}

pub fn run(args: Args) -> Result<()> {
    let config = args.server_config()?;
    let device = resolve(args.device)?;
    run_on(device, ServeJob { config })
}
