//! The `portcullis` command: parses the CLI, loads the config, starts the
//! server. Everything else lives in the library.

use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use portcullis::clock::Clock;
use portcullis::config::{self, Config, LogFormat, ProcessEnv, Upstream};
use portcullis::providers::credentials;
use portcullis::state::App;
use portcullis::{server, whoami};

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod token_cli;

#[derive(Parser)]
#[command(
    name = "portcullis",
    version,
    about = "Sign-in sidecar: reverse proxy and forward-auth endpoint with Auth.js-compatible sessions"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the server (the default). Without --config: the embedded demo.
    Serve {
        #[arg(long, short, env = "PORTCULLIS_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Validate a config and print the effective one, secrets redacted.
    Check {
        #[arg(long, short, env = "PORTCULLIS_CONFIG")]
        config: PathBuf,
    },
    /// Hash a password (argon2id) for a users file; reads it from stdin.
    HashPassword,
    /// Print a new random secret for `secrets:`.
    GenSecret,
    /// Create or upgrade the SQL store's schema (a no-op when up to date).
    Migrate {
        #[arg(long, short, env = "PORTCULLIS_CONFIG")]
        config: PathBuf,
    },
    /// Inspect or end users' sessions (`database` strategy).
    Sessions {
        #[command(subcommand)]
        cmd: SessionsCmd,
    },
    /// Biscuit API tokens: mint, attenuate, inspect, revoke.
    Token {
        #[command(subcommand)]
        cmd: token_cli::TokenCmd,
    },
    /// Route policies: see what they decide.
    Policy {
        #[command(subcommand)]
        cmd: PolicyCmd,
    },
}

#[derive(Subcommand)]
enum PolicyCmd {
    /// Decide on one request and print the route and rule that decided.
    /// Exit status: 0 passes, 1 forbidden, 3 sign-in needed, 2 bad config
    /// or arguments.
    Test {
        #[arg(long, short, env = "PORTCULLIS_CONFIG")]
        config: PathBuf,
        /// The signed-in user's e-mail (none: a request without a session).
        #[arg(long = "as")]
        email: Option<String>,
        /// The user's groups, comma-separated.
        #[arg(long, value_delimiter = ',')]
        groups: Vec<String>,
        /// How the request is proven: session, token or bearer.
        #[arg(long, default_value = "session")]
        via: String,
        /// The client's IP address.
        #[arg(long, default_value = "127.0.0.1")]
        ip: std::net::IpAddr,
        /// GET, POST, ...
        method: String,
        /// The full URL, like https://app.example.com/admin.
        url: String,
    },
}

#[derive(Subcommand)]
enum SessionsCmd {
    /// List a user's sessions (no ids or tokens are printed).
    List {
        #[arg(long, short, env = "PORTCULLIS_CONFIG")]
        config: PathBuf,
        /// The user's e-mail address.
        #[arg(long)]
        user: String,
    },
    /// End every session of a user (sign out everywhere).
    Revoke {
        #[arg(long, short, env = "PORTCULLIS_CONFIG")]
        config: PathBuf,
        #[arg(long)]
        user: String,
    },
}

/// Logs to stderr (text or JSON), plus OpenTelemetry export when built
/// with `otel` and configured; returns what must be flushed at exit.
fn init_logs(
    log: &config::LogConfig,
    runtime: &tokio::runtime::Handle,
) -> Option<Box<dyn FnOnce() + Send>> {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = std::env::var("PORTCULLIS_LOG").unwrap_or_else(|_| log.level.clone());
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false);
    let fmt = match log.format {
        LogFormat::Json => fmt.json().boxed(),
        LogFormat::Text => fmt.boxed(),
    };
    let registry = tracing_subscriber::registry().with(filter).with(fmt);
    #[cfg(feature = "otel")]
    if let Some(endpoint) = &log.otlp_endpoint {
        match portcullis::otel::layer(endpoint.as_str(), runtime.clone()) {
            Ok((layer, provider)) => {
                registry.with(layer).init();
                return Some(Box::new(move || {
                    let _ = provider.shutdown();
                }));
            }
            Err(e) => eprintln!("OpenTelemetry export disabled: {e}"),
        }
    }
    let _ = runtime;
    registry.init();
    None
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.cmd.unwrap_or(Cmd::Serve { config: None }) {
        Cmd::Serve { config } => serve(config),
        Cmd::Check { config } => check(&config),
        Cmd::HashPassword => {
            let mut input = String::new();
            std::io::stdin()
                .read_to_string(&mut input)
                .context("reading the password from stdin")?;
            let password = input.trim_end_matches(['\n', '\r']);
            anyhow::ensure!(
                !password.is_empty(),
                "no password on stdin: echo -n 'pw' | portcullis hash-password"
            );
            println!(
                "{}",
                credentials::hash_password(password).map_err(anyhow::Error::msg)?
            );
            Ok(())
        }
        Cmd::GenSecret => {
            println!("{}", config::secret::generate());
            Ok(())
        }
        Cmd::Sessions { cmd } => sessions(cmd),
        Cmd::Migrate { config } => migrate(&config),
        Cmd::Policy { cmd } => policy(cmd),
        Cmd::Token { cmd } => token_cli::run(cmd),
    }
}

fn policy(cmd: PolicyCmd) -> anyhow::Result<()> {
    use portcullis::authz::policy::explain::{Question, exit_code, explain};
    use portcullis::session::Via;
    let PolicyCmd::Test {
        config: path,
        email,
        groups,
        via,
        ip,
        method,
        url,
    } = cmd;
    let usage = |msg: String| -> ! {
        eprintln!("{msg}");
        std::process::exit(2);
    };
    let via = match via.as_str() {
        "session" => Via::Cookie,
        "token" => Via::ApiToken,
        "bearer" => Via::IdpBearer,
        other => usage(format!("--via {other}: use session, token or bearer")),
    };
    let parsed = match url::Url::parse(&url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => u,
        _ => usage(format!(
            "{url:?} is not an http(s) URL, like https://app.example.com/path"
        )),
    };
    if portcullis::http::forwarded::has_dot_segment(&url) {
        usage(format!(
            "{url:?} has dot segments: the server refuses such requests (400)"
        ));
    }
    let cfg = match config::load(&path, &ProcessEnv) {
        Ok(c) => c,
        Err(e) => usage(format!("{}: {e}", path.display())),
    };
    let q = Question {
        email,
        groups: groups.into_iter().filter(|g| !g.is_empty()).collect(),
        via,
        method: method.to_ascii_uppercase(),
        url: parsed,
        client_ip: ip,
        now: Clock::System.now(),
    };
    let (decision, report) = explain(&cfg, &q);
    print!("{report}");
    std::process::exit(exit_code(decision));
}

fn sessions(cmd: SessionsCmd) -> anyhow::Result<()> {
    let (SessionsCmd::List { config: path, user } | SessionsCmd::Revoke { config: path, user }) =
        &cmd;
    let cfg =
        config::load(path, &ProcessEnv).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let app = App::new(cfg, Clock::System, None)?;
        if let Some(store) = &app.store {
            store.prepare().await.map_err(anyhow::Error::msg)?;
        }
        let db = app
            .sessions
            .database()
            .context("sessions are kept server-side only with session.strategy: database")?;
        let email = portcullis::providers::credentials::normalize_email(user);
        match cmd {
            SessionsCmd::List { .. } => {
                let list = db.list_user(&email).await?;
                for s in &list {
                    println!("{}", serde_json::to_string(s)?);
                }
                eprintln!("{} session(s) for {email}", list.len());
            }
            SessionsCmd::Revoke { .. } => {
                let n = db.destroy_user(Some(&email), &email).await?;
                eprintln!("ended {n} session(s) of {email}");
            }
        }
        Ok(())
    })
}

fn migrate(path: &std::path::Path) -> anyhow::Result<()> {
    let cfg =
        config::load(path, &ProcessEnv).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let Some(store_cfg) = &cfg.store else {
        anyhow::bail!(
            "no store is configured: set store.url (or session.strategy: database for the embedded SQLite)"
        );
    };
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let store = portcullis::store::Store::new(store_cfg).map_err(anyhow::Error::msg)?;
        let portcullis::store::Store::Sql(sql) = store else {
            println!("the store is Redis: it has no schema to migrate");
            return Ok(());
        };
        let applied = sql.migrate().await?;
        let kind = sql.kind().as_str();
        if applied.is_empty() {
            println!(
                "{kind} schema up to date at version {}",
                portcullis::store::sql::schema::LATEST
            );
        } else {
            for v in &applied {
                println!("{kind} schema: applied version {v}");
            }
        }
        Ok(())
    })
}

fn check(path: &std::path::Path) -> anyhow::Result<()> {
    match config::load(path, &ProcessEnv) {
        Ok(cfg) => {
            println!("{}", config::effective(&cfg));
            eprintln!("{}: OK", path.display());
            Ok(())
        }
        Err(e) => {
            eprint!("{}: {e}", path.display());
            std::process::exit(2);
        }
    }
}

/// The allocator's options for a server. mimalloc replaced glibc's malloc
/// (a `database` session read allocates on one worker thread and frees on
/// another, where glibc's arenas took locks: 25 -> 20 us of CPU a request).
/// Two of its defaults cost resident memory at idle: an argon2id password
/// check's 19 MiB working block would come from a reserved arena and stay
/// resident until later allocations purge it, and arenas are committed
/// eagerly (idle RSS 45 MB instead of 15). Blocks over 8 MiB are therefore
/// mapped on their own (returned when freed) and arena memory is committed
/// as it is used. mimalloc reads its `MIMALLOC_*` options once, when the
/// process starts, so the server re-executes itself once with them set,
/// unless the environment sets any of them (then it is respected as is).
const ALLOCATOR_ENV: [(&str, &str); 2] = [
    ("MIMALLOC_ARENA_MAX_OBJECT_SIZE", "8192"),
    ("MIMALLOC_ARENA_EAGER_COMMIT", "0"),
];

#[cfg(unix)]
fn tune_allocator() {
    use std::os::unix::process::CommandExt;
    if ALLOCATOR_ENV
        .iter()
        .any(|(k, _)| std::env::var_os(k).is_some())
    {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    // exec only returns on failure; then go on as we are.
    let err = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .envs(ALLOCATOR_ENV)
        .exec();
    eprintln!("note: running with mimalloc's default options ({err})");
}

#[cfg(not(unix))]
fn tune_allocator() {}

fn serve(path: Option<PathBuf>) -> anyhow::Result<()> {
    tune_allocator();
    let cfg = match &path {
        Some(p) => config::load(p, &ProcessEnv),
        None => config::demo(&ProcessEnv),
    };
    let cfg = match cfg {
        Ok(c) => c,
        Err(e) => {
            eprint!("{e}");
            std::process::exit(2);
        }
    };
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    // The background work's (reload, stores, the admin listener); the
    // connections have runtimes of their own (`server::run`).
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let flush = init_logs(&cfg.log, rt.handle());
    let result = rt.block_on(run(cfg, path));
    if let Some(flush) = flush {
        // The batch exporter's own thread sends through the runtime.
        let _ = std::thread::spawn(flush).join();
    }
    result
}

async fn run(cfg: Config, path: Option<PathBuf>) -> anyhow::Result<()> {
    for w in cfg.insecure_settings() {
        tracing::warn!("insecure setting: {w}");
    }
    let upstream_override = match &cfg.upstream {
        Some(Upstream::Whoami { .. }) => {
            let addr = whoami::start(format!("{}/signout", cfg.base_path))
                .await
                .context("starting the whoami app")?;
            Some(url::Url::parse(&format!("http://{addr}")).context("whoami address")?)
        }
        _ => None,
    };
    let listen = cfg.listen;
    let cfg_tls = cfg.tls.is_some();
    let workers = server::worker_count(cfg.workers);
    let demo = cfg.demo.clone();
    let public = cfg.public_url.clone();
    let app = Arc::new(App::new(cfg, Clock::System, upstream_override.clone())?);
    if let Some(portcullis::store::Store::Sql(sql)) = &app.store {
        use portcullis::store::sql::SchemaError;
        match sql.prepare().await {
            Ok(()) => {}
            Err(e @ (SchemaError::Newer { .. } | SchemaError::Older { .. })) => {
                anyhow::bail!("store: {e}")
            }
            Err(SchemaError::Store(e)) => tracing::warn!(
                error = %e,
                "the store is unavailable at start: answering 503 until it returns"
            ),
        }
    }
    app.start_background();
    app.spawn_session_count();
    let apps: server::Apps = Arc::new(arc_swap::ArcSwap::new(app.clone()));
    if let Some(path) = path {
        tokio::spawn(portcullis::reload::watch(
            apps.clone(),
            path,
            upstream_override,
        ));
    }
    let listener = server::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    if let Some(admin) = app.config.metrics.listen {
        let l = server::bind(admin)
            .await
            .with_context(|| format!("binding the metrics listener {admin}"))?;
        tracing::info!("metrics on http://{}/metrics", l.local_addr()?);
        tokio::spawn(server::run_admin(apps.clone(), l));
    }
    let addr = listener.local_addr()?;
    let scheme = if cfg_tls { "https" } else { "http" };
    tracing::info!("listening on {scheme}://{addr}");
    if let Some(d) = demo {
        let open = if listen.port() == 0 {
            format!("http://{addr}/")
        } else {
            public.to_string()
        };
        eprintln!(
            "\n  Portcullis demo is running. Open {open} and sign in with\n    e-mail:   {}\n    password: {}\n  (a fresh password and secret at every start; sessions do not survive a restart)\n",
            d.email, d.password
        );
    }
    let tls = match &app.config.tls {
        Some(files) => {
            let cert = portcullis::tls::ReloadingCert::load(&files.cert_file, &files.key_file)
                .map_err(anyhow::Error::msg)?;
            cert.spawn_watch();
            Some(tokio_rustls::TlsAcceptor::from(Arc::new(
                cert.server_config().map_err(anyhow::Error::msg)?,
            )))
        }
        None => None,
    };
    drop(app);
    server::run(apps, listener, tls, workers, server::shutdown_signal())
        .await
        .context("starting the workers")
}
