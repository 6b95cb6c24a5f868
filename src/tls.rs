//! Client TLS for outbound calls (upstream, identity providers): rustls
//! with the aws-lc-rs provider only, the platform's roots plus an optional
//! CA bundle (in-cluster IdPs and upstreams with a private CA).

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// A client config trusting the platform's roots and `ca_file`'s certificates.
/// With `identity` (certificate and key files), the client presents it:
/// mTLS to an upstream that asks for one.
pub fn client_config(
    ca_file: Option<&Path>,
    identity: Option<(&Path, &Path)>,
) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = ca_file {
        let certs =
            CertificateDer::pem_file_iter(path).map_err(|e| format!("{}: {e}", path.display()))?;
        for cert in certs {
            let cert = cert.map_err(|e| format!("{}: {e}", path.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    match identity {
        None => Ok(builder.with_no_client_auth()),
        Some((cert, key)) => {
            use rustls_pki_types::PrivateKeyDer;
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                .map_err(|e| format!("{}: {e}", cert.display()))?
                .collect::<Result<_, _>>()
                .map_err(|e| format!("{}: {e}", cert.display()))?;
            let key =
                PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("client certificate: {e}"))
        }
    }
}

/// The listener's certificate, reloaded when its files change: new
/// handshakes get the new one, open connections keep theirs.
#[derive(Debug)]
pub struct ReloadingCert {
    current: arc_swap::ArcSwap<rustls::sign::CertifiedKey>,
    cert_file: std::path::PathBuf,
    key_file: std::path::PathBuf,
}

fn load_certified_key(cert: &Path, key: &Path) -> Result<rustls::sign::CertifiedKey, String> {
    use rustls_pki_types::PrivateKeyDer;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("{}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("{}: no certificate in it", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    rustls::sign::CertifiedKey::from_der(chain, key, &provider)
        .map_err(|e| format!("certificate and key do not match: {e}"))
}

impl ReloadingCert {
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<Arc<Self>, String> {
        let ck = load_certified_key(cert_file, key_file)?;
        Ok(Arc::new(ReloadingCert {
            current: arc_swap::ArcSwap::from_pointee(ck),
            cert_file: cert_file.into(),
            key_file: key_file.into(),
        }))
    }

    /// Polls the files every 2 s; a change that loads replaces the
    /// certificate, one that does not is logged and the old one stays.
    pub fn spawn_watch(self: &Arc<Self>) {
        let me = self.clone();
        tokio::spawn(async move {
            let stamp = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
            let mut last = (stamp(&me.cert_file), stamp(&me.key_file));
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                let now = (stamp(&me.cert_file), stamp(&me.key_file));
                if now == last {
                    continue;
                }
                last = now;
                match load_certified_key(&me.cert_file, &me.key_file) {
                    Ok(ck) => {
                        me.current.store(Arc::new(ck));
                        tracing::info!(cert = %me.cert_file.display(), "TLS certificate reloaded");
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "TLS certificate reload refused; the current one stays")
                    }
                }
            }
        });
    }

    /// A server config with HTTP/2 and HTTP/1.1 offered by ALPN.
    pub fn server_config(self: &Arc<Self>) -> Result<rustls::ServerConfig, String> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(cfg)
    }
}

impl rustls::server::ResolvesServerCert for ReloadingCert {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.current.load_full())
    }
}
