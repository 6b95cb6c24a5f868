//! Portcullis: a sign-in sidecar.
//!
//! One binary that runs as a reverse proxy in front of an app, or as a
//! forward-auth endpoint behind nginx, Traefik or Caddy. It runs the sign-in
//! flows itself, keeps sessions in Auth.js v5 compatible sealed cookies, and
//! forwards authenticated requests with identity headers.
//!
//! The request lifecycle: [`server`] accepts connections and hands each
//! request to [`http::router`], which answers the sign-in surface
//! ([`authn`]), the forward-auth endpoints ([`authz::forward`]) or proxies
//! ([`proxy`]) after [`authz`] decided on the [`session`] it found.

#![recursion_limit = "256"]

pub mod authn;
pub mod authz;
pub mod clock;
pub mod config;
pub mod crypto;
pub mod http;
pub mod identity;
pub mod jwt;
pub mod metrics;
#[cfg(feature = "otel")]
pub mod otel;
pub mod providers;
pub mod proxy;
pub mod reload;
pub mod server;
pub mod session;
pub mod slots;
pub mod state;
pub mod store;
pub mod tls;
pub mod tokens;
pub mod users;
pub mod whoami;
