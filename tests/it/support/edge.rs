//! Launchers for the real edge proxies (nginx, Caddy): filled in by the
//! edge-proxy tests.
