//! TLS for the APNs stand-in: a CA of the sandbox's own (its PEM written for senders to trust),
//! a server certificate it signs for the hosts the sandbox answers on, and a server that
//! speaks only HTTP/2 over TLS (ALPN `h2`), as APNs does.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

/// Longest a TLS handshake may take before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The CA's PEM and the server's TLS config.
pub(crate) struct TlsIdentity {
    pub(crate) ca_pem: String,
    pub(crate) server_config: Arc<rustls::ServerConfig>,
}

impl TlsIdentity {
    /// A fresh CA and a server certificate for `hosts` (names or IP addresses), ALPN `h2` only.
    pub(crate) fn generate(hosts: &[String]) -> anyhow::Result<Self> {
        let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .context("generating the sandbox CA key")?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).context("sandbox CA")?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "Switchyard sandbox CA");
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params
            .self_signed(&ca_key)
            .context("self-signing the sandbox CA")?;
        let issuer = Issuer::new(ca_params, ca_key);

        let server_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .context("generating the APNs server key")?;
        let mut names = vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
            "::1".to_owned(),
        ];
        for host in hosts {
            let unspecified = host.parse::<IpAddr>().is_ok_and(|ip| ip.is_unspecified());
            if !unspecified && !names.contains(host) {
                names.push(host.clone());
            }
        }
        let mut params = CertificateParams::new(names).context("APNs server certificate")?;
        params.distinguished_name.push(
            DnType::CommonName,
            "api.push.apple.com (Switchyard sandbox)",
        );
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let server_cert = params
            .signed_by(&server_key, &issuer)
            .context("signing the APNs server certificate")?;

        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS versions")?
            .with_no_client_auth()
            .with_single_cert(
                vec![server_cert.der().clone(), ca_cert.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der())),
            )
            .context("the APNs server's TLS config")?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Self {
            ca_pem: ca_cert.pem(),
            server_config: Arc::new(config),
        })
    }
}

/// Serves `router` over HTTP/2 over TLS on `listener` until `shutdown` flips; each connection
/// gets its own `Extension` made by `per_connection` (APNs tracks provider tokens per
/// connection). Open connections are asked to finish (GOAWAY) at shutdown.
pub(crate) fn spawn_h2<E>(
    name: &'static str,
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    router: Router,
    per_connection: impl Fn() -> E + Send + 'static,
    mut shutdown: watch::Receiver<bool>,
) -> JoinHandle<()>
where
    E: Clone + Send + Sync + 'static,
{
    let acceptor = TlsAcceptor::from(config);
    tokio::spawn(async move {
        let mut connections = JoinSet::new();
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = shutdown.wait_for(|stop| *stop) => break,
            };
            let stream = match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(server = name, %error, "sandbox TLS accept failed");
                    continue;
                }
            };
            let acceptor = acceptor.clone();
            let service =
                TowerToHyperService::new(router.clone().layer(axum::Extension(per_connection())));
            let mut stop = shutdown.clone();
            connections.spawn(async move {
                let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(error)) => {
                        tracing::debug!(server = name, %error, "sandbox TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
                let connection = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service);
                tokio::pin!(connection);
                tokio::select! {
                    result = connection.as_mut() => {
                        if let Err(error) = result {
                            tracing::debug!(server = name, %error, "sandbox HTTP/2 connection ended");
                        }
                    }
                    () = stopped(&mut stop) => {
                        connection.as_mut().graceful_shutdown();
                        let _ = connection.await;
                    }
                }
            });
            // Reap finished connections as we go.
            while connections.try_join_next().is_some() {}
        }
        while connections.join_next().await.is_some() {}
    })
}

/// Completes once the sandbox stops (the guard `wait_for` returns must not live across an
/// `.await`).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}
