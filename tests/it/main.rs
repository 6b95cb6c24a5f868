//! Integration tests: the real binary, real upstreams, real edge proxies.
//! One binary, modules by feature; `support` holds the launchers.

#![allow(unreachable_pub, clippy::unwrap_used, clippy::disallowed_types)]

mod support;

mod accounts;
mod browser;
mod config_check;
mod connections;
mod database;
mod database_topologies;
mod edge;
mod email;
mod forward_auth;
mod idp_fixture;
mod jwt_assertion;
mod jwt_bearer;
mod observability;
mod oidc;
mod oidc_forged;
mod oidc_provider_io;
mod presets;
mod proxy;
mod redirects;
mod redis_cache;
mod redis_fixture;
mod refresh;
mod regulation;
mod routes;
mod sessions;
mod signin;
mod signin_rules;
mod store_conformance;
mod tls;
mod tokens;
mod tokens_golden;
