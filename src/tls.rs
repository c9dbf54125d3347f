//! TLS to PostgreSQL, RabbitMQ and Redis: one stack and one trust setting for all three.
//!
//! The stack is native-tls (OpenSSL on Linux), the only one amiquip offers, so the three
//! connections share one trust store, one library and one way of failing.
//!
//! Whether a connection uses TLS is its URL's business: `amqps://`, `rediss://`, and
//! `sslmode` in `postgres.url` (`disable`; `prefer`, the default: TLS when the server
//! offers it; `require`). What is trusted is `tls.ca_file`'s: empty, the system's CA
//! certificates; a PEM file, exactly the certificates in it, for all three (the Redis
//! client only replaces the system's, so the others do likewise). A connection that
//! asks for TLS verifies the server's certificate chain and that it names the URL's
//! host: `sslmode=require` is libpq's `verify-full`.
//!
//! `sslmode=prefer` encrypts without verifying, as libpq does: whoever sits in the
//! middle can turn it to plain text by answering that the server has no TLS, so a check
//! there would protect nothing, and would refuse the self-signed certificate a server
//! ships with (Debian's PostgreSQL, for one) where the user never asked for TLS.

use anyhow::{anyhow, Context};
use deadpool_redis::redis;
use native_tls::{Certificate, TlsConnector, TlsConnectorBuilder};
use postgres_native_tls::MakeTlsConnector;
use tokio_postgres::config::SslMode;

use crate::config::TlsConfig;

/// The certificates TLS connections trust, read from `tls.ca_file`.
#[derive(Clone)]
pub struct Trust {
    /// None: the system's CA certificates.
    roots: Option<Roots>,
}

#[derive(Clone)]
struct Roots {
    /// The file's text, which the Redis client reads itself.
    pem: Vec<u8>,
    certificates: Vec<Certificate>,
}

impl Trust {
    /// Reads `tls.ca_file`; the error names the key and the file.
    pub fn load(config: &TlsConfig) -> anyhow::Result<Self> {
        if config.ca_file.is_empty() {
            return Ok(Self { roots: None });
        }
        let path = &config.ca_file;
        let pem =
            std::fs::read(path).with_context(|| format!("tls.ca_file: cannot read {path}"))?;
        let certificates = Certificate::stack_from_pem(&pem)
            .with_context(|| format!("tls.ca_file: {path} is not a PEM certificate bundle"))?;
        if certificates.is_empty() {
            anyhow::bail!("tls.ca_file: {path} holds no PEM certificate");
        }
        Ok(Self {
            roots: Some(Roots { pem, certificates }),
        })
    }

    /// A connector that verifies the server's certificate and host name against this
    /// trust.
    pub fn connector(&self) -> anyhow::Result<TlsConnector> {
        build(&mut self.builder())
    }

    /// The connector for `postgres.url`'s `sslmode` (see the module's documentation).
    pub fn postgres(&self, config: &tokio_postgres::Config) -> anyhow::Result<MakeTlsConnector> {
        let mut builder = self.builder();
        if config.get_ssl_mode() == SslMode::Prefer {
            builder
                .danger_accept_invalid_certs(true)
                .danger_accept_invalid_hostnames(true);
        }
        Ok(MakeTlsConnector::new(build(&mut builder)?))
    }

    /// The Redis client for `url`; a `rediss://` one trusts these certificates.
    pub fn redis(&self, url: &str) -> anyhow::Result<redis::Client> {
        let client = match &self.roots {
            Some(roots) if url.starts_with("rediss://") => redis::Client::build_with_tls(
                url,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(roots.pem.clone()),
                },
            ),
            _ => redis::Client::open(url),
        };
        client.map_err(|e| anyhow!("redis.url: {e}"))
    }

    fn builder(&self) -> TlsConnectorBuilder {
        let mut builder = TlsConnector::builder();
        if let Some(roots) = &self.roots {
            builder.disable_built_in_roots(true);
            for certificate in &roots.certificates {
                builder.add_root_certificate(certificate.clone());
            }
        }
        builder
    }
}

fn build(builder: &mut TlsConnectorBuilder) -> anyhow::Result<TlsConnector> {
    builder
        .build()
        .context("cannot set up TLS (OpenSSL's libssl is needed)")
}

/// What to do about a connection to `dependency`, set by the key `url`, that failed
/// with `cause`, when the cause is a TLS failure a user can fix; None otherwise.
pub fn advice(dependency: &dyn std::fmt::Display, url: &str, cause: &str) -> Option<String> {
    // OpenSSL's words, which every error of the three clients carries along.
    if cause.contains("certificate verify failed") {
        Some(format!(
            "{dependency}'s certificate is not trusted: check that tls.ca_file holds the CA \
             that signed it (empty: the system's CAs) and that the host in {url} is one the \
             certificate names"
        ))
    } else if cause.contains("wrong version number") || cause.contains("packet length too long") {
        Some(format!(
            "{dependency} did not answer in TLS: check that the port in {url} is its TLS port"
        ))
    } else if cause.contains("server does not support TLS") {
        Some(format!(
            "{dependency} does not offer TLS: turn on ssl in the server, or leave \
             sslmode=require out of {url}"
        ))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_ca_file_means_the_system_roots() {
        let trust = Trust::load(&TlsConfig::default()).unwrap();
        assert!(trust.roots.is_none());
        trust.connector().unwrap();
    }

    #[test]
    fn a_missing_or_empty_ca_file_names_the_key() {
        let missing = TlsConfig {
            ca_file: "/nonexistent/ca.pem".into(),
        };
        let err = format!("{:#}", Trust::load(&missing).err().unwrap());
        assert!(
            err.starts_with("tls.ca_file: cannot read /nonexistent/ca.pem"),
            "{err}"
        );

        let empty = std::env::temp_dir().join(format!("sumsvc-empty-{}.pem", uuid::Uuid::new_v4()));
        std::fs::write(&empty, "no certificate here\n").unwrap();
        let config = TlsConfig {
            ca_file: empty.display().to_string(),
        };
        let err = format!("{:#}", Trust::load(&config).err().unwrap());
        std::fs::remove_file(&empty).unwrap();
        assert!(err.starts_with("tls.ca_file: "), "{err}");
        assert!(err.contains("holds no PEM certificate"), "{err}");
    }

    #[test]
    fn certificate_failures_get_advice_that_names_the_key() {
        let cause = "error performing TLS handshake: error:0A000086:SSL routines:\
                     tls_post_process_server_certificate:certificate verify failed";
        let said = advice(&"Redis", "redis.url", cause).unwrap();
        assert!(
            said.starts_with("Redis's certificate is not trusted"),
            "{said}"
        );
        assert!(said.contains("tls.ca_file"), "{said}");
        assert!(said.contains("redis.url"), "{said}");
        assert_eq!(
            advice(&"PostgreSQL", "postgres.url", "connection refused"),
            None
        );
    }
}
