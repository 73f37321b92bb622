//! `lodestar api`, `lodestar tokens …` and `lodestar bench api`: the prediction API as its own
//! service, its tokens from the command line, and its benchmark (exec to ready, a 1,000-row
//! batch, single-row throughput with wrk) against this very binary on loopback.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use lodestar_api::Api;
use lodestar_api::auth::SCOPES;
use lodestar_domain::FeatureKind;
use lodestar_model::Artifact;
use lodestar_store::{CHAMPION, Store};
use serde_json::{Value, json};

use crate::cli::{BenchApiArgs, ServeArgs, TokensCommand};
use crate::config::Config;
use crate::models::{artifacts, connect};
use crate::pipeline::{runtime, shutdown_signal};

/// The routes `lodestar api`, `up` and `demo` print.
pub(crate) fn print_routes(base: &str) {
    println!("  {base}/readyz             readiness (champion loaded, store reachable)");
    println!("  {base}/openapi.json       the API's OpenAPI 3.1 document");
    println!("  {base}/metrics            Prometheus metrics");
    println!(
        "  {base}/v1/...             predictions, cohorts, models, pipeline runs (bearer token)"
    );
    println!("  {base}/v2/models/...      KServe v2 inference protocol");
}

/// `lodestar api`.
pub(crate) fn run(config: &Config, args: &ServeArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let store = connect(config).await?;
        let api = Api::new(store, artifacts(config)?, config.api.value.clone(), None).await?;
        let listener = tokio::net::TcpListener::bind(&args.listen)
            .await
            .with_context(|| format!("listening on {} (--listen, LODESTAR_LISTEN)", args.listen))?;
        let base = format!("http://{}", listener.local_addr()?);
        println!("serving the prediction API on {base}");
        println!("  {base}/healthz            liveness");
        print_routes(&base);
        api.serve(listener, async {
            shutdown_signal().await;
            eprintln!("shutting down: finishing in-flight requests");
        })
        .await
        .context("the HTTP server")
    })
}

async fn create_token(
    store: &Store,
    name: &str,
    scopes: &[String],
) -> anyhow::Result<(i64, String)> {
    if name.trim().is_empty() {
        bail!("--name: say who or what uses the token");
    }
    for s in scopes {
        if !SCOPES.contains(&s.as_str()) {
            bail!("--scope {s:?}: use {}", SCOPES.join(", "));
        }
    }
    let token = crate::accounts::new_token();
    let scopes: Vec<&str> = scopes.iter().map(String::as_str).collect();
    let id = store.create_token(name, &token, &scopes).await?;
    Ok((id, token))
}

/// The demo's token: every scope but admin, new each demo run.
pub(crate) async fn demo_token(store: &Store) -> anyhow::Result<()> {
    let scopes = ["predictions:read", "predictions:write", "pipeline:run"].map(String::from);
    let (id, token) = create_token(store, "demo", &scopes).await?;
    println!(
        "demo API token {id} ({}): {token}\n  try: curl -H 'Authorization: Bearer {token}' http://HOST:PORT/v1/models",
        scopes.join(" ")
    );
    Ok(())
}

/// `lodestar tokens …`.
pub(crate) fn tokens(config: &Config, command: &TokensCommand) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let store = connect(config).await?;
        match command {
            TokensCommand::Create { name, scopes } => {
                let (id, token) = create_token(&store, name, scopes).await?;
                println!("token {id} ({name}, {}); shown once, stored only as a hash:", scopes.join(" "));
                println!("{token}");
            }
            TokensCommand::List { json: as_json } => {
                let all = store.tokens().await?;
                if *as_json {
                    let rows: Vec<Value> = all
                        .iter()
                        .map(|t| json!({"id": t.token.id, "name": t.token.name, "scopes": t.token.scopes, "created_at": t.created_at, "last_used_at": t.last_used_at, "revoked_at": t.revoked_at}))
                        .collect();
                    println!("{}", serde_json::to_string_pretty(&rows)?);
                } else {
                    println!("{:>4}  {:<16} {:<45} {:<25} {:<25} revoked", "id", "name", "scopes", "created", "last used");
                    for t in &all {
                        println!(
                            "{:>4}  {:<16} {:<45} {:<25} {:<25} {}",
                            t.token.id,
                            t.token.name,
                            t.token.scopes.join(" "),
                            t.created_at,
                            t.last_used_at.as_deref().unwrap_or("-"),
                            t.revoked_at.as_deref().unwrap_or("-")
                        );
                    }
                }
            }
            TokensCommand::Revoke { id } => {
                if !store.revoke_token(*id).await? {
                    bail!("no live token {id} (see `lodestar tokens list`)");
                }
                println!(
                    "token {id} revoked; API processes refuse it within their token cache period ({} s)",
                    config.api.value.token_cache_seconds
                );
            }
        }
        Ok(())
    })
}

/// A plausible feature row for the champion: each numeric feature near what passing students
/// had by `week` (counts jittered by a seeded generator), categories drawn from training's.
fn bench_row(a: &Artifact, week: f64, seed: u64) -> serde_json::Map<String, Value> {
    let typical = a
        .reference
        .at(week)
        .map(<[f64]>::to_vec)
        .unwrap_or_default();
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % 1000) as f64 / 1000.0
    };
    let mut row = serde_json::Map::new();
    for (i, c) in a.encoder.columns.iter().enumerate() {
        let t = typical
            .get(i)
            .copied()
            .filter(|v| v.is_finite())
            .unwrap_or(0.0);
        let v = match c.kind {
            FeatureKind::Categorical => {
                let k = c.categories.len().max(1);
                c.categories
                    .get((next() * k as f64) as usize % k)
                    .map_or(Value::Null, |s| json!(s))
            }
            FeatureKind::Binary => json!(if next() < 0.5 { 0.0 } else { 1.0 }),
            FeatureKind::Count | FeatureKind::Ordinal => {
                json!((t * (0.5 + next())).round().max(0.0))
            }
            _ if c.name == "as_of_week" => json!(week),
            _ => json!(t * (0.5 + next())),
        };
        row.insert(c.name.clone(), v);
    }
    row
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `lodestar api` and returns it with the time from exec to `/readyz` 200.
fn start_api(
    exe: &Path,
    data: &Path,
    config: &Path,
    addr: &str,
) -> anyhow::Result<(Server, Duration)> {
    let started = Instant::now();
    let socket: std::net::SocketAddr = addr.parse().context("the API's address")?;
    let child = Command::new(exe)
        .args(["--data-dir"])
        .arg(data)
        .args(["--config"])
        .arg(config)
        .args(["--log", "warn", "api", "--listen", addr])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting lodestar api")?;
    let mut server = Server(child);
    loop {
        if crate::health::get_status(socket, "/readyz", Duration::from_secs(2)).ok() == Some(200) {
            return Ok((server, started.elapsed()));
        }
        if let Some(status) = server.0.try_wait()? {
            bail!("lodestar api exited ({status}) before it was ready");
        }
        if started.elapsed() > Duration::from_secs(30) {
            bail!("lodestar api not ready after 30 s");
        }
        std::thread::sleep(Duration::from_micros(500));
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// `lodestar bench api`.
pub(crate) fn bench(config: &Config, args: &BenchApiArgs) -> anyhow::Result<()> {
    let exe = std::env::current_exe()?;
    let dir = tempfile_dir()?;
    let data = dir.join("data");
    let export = Path::new("data-samples/oulad");
    if !export.is_dir() {
        bail!(
            "run `lodestar bench api` from the repository root (it trains on data-samples/oulad)"
        );
    }
    println!(
        "build: {}; data in {}",
        if cfg!(debug_assertions) {
            "debug (figures are only meaningful on a release build)"
        } else {
            "release"
        },
        dir.display()
    );
    let status = Command::new(&exe)
        .arg("--data-dir")
        .arg(&data)
        .args(["--log", "warn", "demo", "--no-serve"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    if !status.success() {
        bail!("the demo pipeline failed ({status})");
    }
    // The benchmark measures serving, not the limiter: no rate limit.
    let config_file = dir.join("bench.toml");
    std::fs::write(
        &config_file,
        format!(
            "[api]\nmodel = {:?}\nrate_per_second = 0\n",
            config.api.value.model
        ),
    )?;
    let (token, rows) = runtime()?.block_on(async {
        let url = format!("sqlite://{}?mode=rwc", data.join("lodestar.db").display());
        let store = Store::connect(&url).await?;
        let (_, token) = create_token(&store, "bench", &["predictions:write".to_owned()]).await?;
        let model = &config.api.value.model;
        let v = store
            .alias(model, CHAMPION)
            .await?
            .context("the demo left no champion")?;
        let version = store.version(model, v).await?;
        let store_dir = data.join("artifacts");
        let a = Artifact::from_bytes(
            &lodestar_store::ArtifactStore::local(store_dir)?
                .load(&version.artifact)
                .await?,
        )?;
        let rows: Vec<_> = (0..1000u64)
            .map(|i| bench_row(&a, 5.0 + (i % 10) as f64, i))
            .collect();
        anyhow::Ok((token, rows))
    })?;

    let addr = format!("127.0.0.1:{}", free_port()?);
    let mut starts = Vec::new();
    for _ in 0..args.starts.max(1) {
        let (server, took) = start_api(&exe, &data, &config_file, &addr)?;
        starts.push(took.as_secs_f64() * 1e3);
        drop(server);
    }
    starts.sort_by(f64::total_cmp);
    println!(
        "exec to /readyz 200: median {:.1} ms, min {:.1}, max {:.1} ({} starts)",
        percentile(&starts, 0.5),
        starts[0],
        starts[starts.len() - 1],
        starts.len()
    );

    let (_server, _) = start_api(&exe, &data, &config_file, &addr)?;
    let base = format!("http://{addr}");
    let batch = serde_json::to_vec(&json!({"rows": rows}))?;
    let single = serde_json::to_vec(&Value::Object(rows[0].clone()))?;
    for (label, path) in [
        ("", "/v1/predictions"),
        (" with explanations", "/v1/predictions?explain=true"),
    ] {
        let mut times = runtime()?.block_on(async {
            let client = reqwest::Client::new();
            let mut times = Vec::new();
            for i in 0..args.batches.max(1) + 3 {
                let t = Instant::now();
                let r = client
                    .post(format!("{base}{path}"))
                    .bearer_auth(&token)
                    .header("content-type", "application/json")
                    .body(batch.clone())
                    .send()
                    .await?;
                let status = r.status();
                let body = r.bytes().await?;
                if !status.is_success() {
                    bail!(
                        "batch answered {status}: {}",
                        String::from_utf8_lossy(&body)
                    );
                }
                // The first few warm the connection and caches.
                if i >= 3 {
                    times.push(t.elapsed().as_secs_f64() * 1e3);
                }
            }
            anyhow::Ok(times)
        })?;
        times.sort_by(f64::total_cmp);
        println!(
            "1,000-row batch{label}: median {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} batches)",
            percentile(&times, 0.5),
            percentile(&times, 0.99),
            times[times.len() - 1],
            times.len()
        );
    }

    let Ok(wrk) = which("wrk") else {
        println!(
            "wrk is not installed (Debian: apt-get install wrk): single-row throughput not measured"
        );
        return Ok(());
    };
    let script = dir.join("post.lua");
    let body = String::from_utf8(single)?;
    std::fs::write(
        &script,
        format!(
            "wrk.method = \"POST\"\nwrk.body = [[{body}]]\nwrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.headers[\"Authorization\"] = \"Bearer {token}\"\n"
        ),
    )?;
    println!(
        "wrk: {} threads, {} connections, {} s of single-row POST /v1/predictions, on the same machine:",
        args.threads, args.connections, args.seconds
    );
    let out = Command::new(wrk)
        .args([
            "--latency",
            "-t",
            &args.threads.to_string(),
            "-c",
            &args.connections.to_string(),
        ])
        .args(["-d", &format!("{}s", args.seconds), "-s"])
        .arg(&script)
        .arg(format!("{base}/v1/predictions"))
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    print!("{text}");
    let errors = text.contains("Non-2xx") || text.contains("Socket errors");
    println!(
        "errors: {}",
        if errors { "some (see above)" } else { "none" }
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn which(name: &str) -> anyhow::Result<std::path::PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .with_context(|| format!("{name} not found on PATH"))
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("lodestar-bench-api-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
