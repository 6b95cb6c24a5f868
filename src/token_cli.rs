//! `portcullis token ...`: mint API tokens with the configured root key,
//! attenuate and inspect them offline, revoke them into the deny list.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use portcullis::clock::Clock;
use portcullis::config::{self, ProcessEnv};
use portcullis::tokens::api;

#[derive(Subcommand)]
pub(crate) enum TokenCmd {
    /// Print a new API token (send it as `Authorization: Bearer <token>`).
    Mint {
        #[arg(long, short, env = "PORTCULLIS_CONFIG")]
        config: PathBuf,
        /// The machine's name: the user the token stands for.
        #[arg(long)]
        sub: String,
        /// Lifetime, like 30d, 12h, 15m.
        #[arg(long, default_value = "30d")]
        ttl: String,
        /// A group of the token (repeatable).
        #[arg(long = "group")]
        groups: Vec<String>,
        /// A Datalog check the token carries (repeatable),
        /// e.g. 'check if method("GET")'.
        #[arg(long = "check")]
        checks: Vec<String>,
    },
    /// Append a block of checks to a token (offline; it can only do less).
    Attenuate {
        #[arg(long)]
        token: String,
        #[arg(long = "check", required = true)]
        checks: Vec<String>,
    },
    /// Print a token's blocks as Datalog (signatures are not checked).
    Inspect { token: String },
    /// Deny a token (and every token attenuated from it) from now on.
    Revoke {
        #[arg(long, short, env = "PORTCULLIS_CONFIG")]
        config: PathBuf,
        token: String,
    },
}

pub(crate) fn run(cmd: TokenCmd) -> anyhow::Result<()> {
    match cmd {
        TokenCmd::Mint {
            config,
            sub,
            ttl,
            groups,
            checks,
        } => {
            let cfg = load(&config)?;
            let ttl = config::validate::parse_duration(&ttl)
                .filter(|d| d.as_secs() > 0)
                .with_context(|| format!("{ttl:?} is not a duration like 30d, 12h or 15m"))?;
            let ring = portcullis::tokens::keys::KeyRing::new(&cfg.tokens.keys, &cfg.secrets)
                .context("no root key: configure secrets or tokens.keys")?;
            let exp = Clock::System.now().saturating_add(ttl.as_secs());
            let token = api::mint(&ring, &sub, &groups, &checks, exp)
                .map_err(|e| anyhow::anyhow!("cannot mint: {e}"))?;
            println!("{}", token.to_base64()?);
            if !cfg.tokens.api_enabled {
                eprintln!("note: tokens.api.enabled is false: Portcullis ignores API tokens");
            }
            Ok(())
        }
        TokenCmd::Attenuate { token, checks } => {
            let t = api::attenuate(&token, &checks)
                .map_err(|e| anyhow::anyhow!("cannot attenuate: {e}"))?;
            println!("{t}");
            Ok(())
        }
        TokenCmd::Inspect { token } => {
            print!(
                "{}",
                api::inspect(&token).map_err(|e| anyhow::anyhow!("not a token: {e}"))?
            );
            Ok(())
        }
        TokenCmd::Revoke { config, token } => revoke(&config, &token),
    }
}

fn load(path: &std::path::Path) -> anyhow::Result<config::Config> {
    config::load(path, &ProcessEnv).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

fn revoke(path: &std::path::Path, token: &str) -> anyhow::Result<()> {
    let cfg = load(path)?;
    // Only tokens we signed: anything else cannot pass anyway.
    let ring = portcullis::tokens::keys::KeyRing::new(&cfg.tokens.keys, &cfg.secrets)
        .context("no root key: configure secrets or tokens.keys")?;
    let t = api::parse(&ring, token.trim()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let ids = api::revocation_ids(&t);
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let store = match &cfg.store {
            Some(s) => {
                let store = portcullis::store::Store::new(s).map_err(anyhow::Error::msg)?;
                store.prepare().await.map_err(anyhow::Error::msg)?;
                Some(store)
            }
            None => None,
        };
        let tokens = portcullis::tokens::Tokens::new(&cfg, store.as_ref(), Clock::System);
        tokens.revocation().add(&ids).await?;
        eprintln!("revoked {} block id(s)", ids.len());
        anyhow::Ok(())
    })
}
