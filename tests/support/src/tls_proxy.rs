//! TLS in front of the real services: a certificate authority made in the test, server
//! certificates it signs, and a proxy that ends TLS and forwards plain text to the
//! real PostgreSQL, RabbitMQ or Redis.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
    SubjectKeyIdentifier,
};
use openssl::x509::{X509Builder, X509Name, X509};
use tokio::io::{copy_bidirectional, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_native_tls::native_tls;

/// A certificate authority that exists only in this test, with its certificate in a
/// PEM file for `tls.ca_file`; the file is removed when it is dropped.
pub struct Ca {
    cert: X509,
    key: PKey<Private>,
    pub file: PathBuf,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let key = new_key();
        let subject = x509_name(name);
        let mut builder = certificate(&subject, &key);
        builder.set_issuer_name(&subject).unwrap();
        builder
            .append_extension(BasicConstraints::new().critical().ca().build().unwrap())
            .unwrap();
        builder
            .append_extension(
                KeyUsage::new()
                    .critical()
                    .key_cert_sign()
                    .crl_sign()
                    .build()
                    .unwrap(),
            )
            .unwrap();
        let ski = SubjectKeyIdentifier::new()
            .build(&builder.x509v3_context(None, None))
            .unwrap();
        builder.append_extension(ski).unwrap();
        builder.sign(&key, MessageDigest::sha256()).unwrap();
        let cert = builder.build();
        let file = std::env::temp_dir().join(format!("sumsvc-ca-{}.pem", uuid::Uuid::new_v4()));
        std::fs::write(&file, cert.to_pem().unwrap()).unwrap();
        Ca { cert, key, file }
    }

    /// The file's path, as `tls.ca_file` takes it.
    pub fn ca_file(&self) -> String {
        self.file.display().to_string()
    }

    /// A server certificate and key for `localhost` and 127.0.0.1, signed by this CA.
    pub fn server_identity(&self) -> native_tls::Identity {
        let key = new_key();
        let mut builder = certificate(&x509_name("localhost"), &key);
        builder.set_issuer_name(self.cert.subject_name()).unwrap();
        builder
            .append_extension(
                KeyUsage::new()
                    .critical()
                    .digital_signature()
                    .build()
                    .unwrap(),
            )
            .unwrap();
        builder
            .append_extension(ExtendedKeyUsage::new().server_auth().build().unwrap())
            .unwrap();
        let context = builder.x509v3_context(Some(&self.cert), None);
        let san = SubjectAlternativeName::new()
            .dns("localhost")
            .ip("127.0.0.1")
            .build(&context)
            .unwrap();
        let aki = AuthorityKeyIdentifier::new()
            .keyid(true)
            .build(&context)
            .unwrap();
        builder.append_extension(san).unwrap();
        builder.append_extension(aki).unwrap();
        builder.sign(&self.key, MessageDigest::sha256()).unwrap();
        let cert = builder.build();
        native_tls::Identity::from_pkcs8(
            &cert.to_pem().unwrap(),
            &key.private_key_to_pem_pkcs8().unwrap(),
        )
        .unwrap()
    }
}

impl Drop for Ca {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.file);
    }
}

fn new_key() -> PKey<Private> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap()
}

fn x509_name(common_name: &str) -> X509Name {
    let mut name = X509Name::builder().unwrap();
    name.append_entry_by_nid(Nid::COMMONNAME, common_name)
        .unwrap();
    name.build()
}

/// A certificate for `subject`'s `key`, valid from an hour ago for a day, yet to be
/// given its issuer and extensions and signed.
fn certificate(subject: &X509Name, key: &PKey<Private>) -> X509Builder {
    let mut builder = X509Builder::new().unwrap();
    builder.set_version(2).unwrap();
    let mut serial = BigNum::new().unwrap();
    serial.rand(127, MsbOption::MAYBE_ZERO, false).unwrap();
    builder
        .set_serial_number(&serial.to_asn1_integer().unwrap())
        .unwrap();
    builder.set_subject_name(subject).unwrap();
    builder.set_pubkey(key).unwrap();
    let an_hour_ago = Asn1Time::from_unix(time_now() - 3600).unwrap();
    builder.set_not_before(&an_hour_ago).unwrap();
    builder
        .set_not_after(&Asn1Time::days_from_now(1).unwrap())
        .unwrap();
    builder
}

fn time_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// How a client asks for TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// TLS from the first byte: AMQP and Redis.
    Tls,
    /// PostgreSQL's way: an 8-byte SSLRequest, answered `S` before the handshake.
    Postgres,
    /// A PostgreSQL server without TLS: it answers an SSLRequest with `N` and goes on
    /// in plain text.
    PostgresWithoutTls,
}

/// PostgreSQL's SSLRequest: length 8, then the code 80877103.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

/// A proxy that ends TLS with its own certificate and forwards to `upstream`.
pub struct TlsProxy {
    pub addr: SocketAddr,
    handshakes: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl TlsProxy {
    pub async fn start(upstream: &str, identity: native_tls::Identity, start: Start) -> TlsProxy {
        let upstream: SocketAddr = upstream.parse().unwrap();
        let acceptor =
            tokio_native_tls::TlsAcceptor::from(native_tls::TlsAcceptor::new(identity).unwrap());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handshakes = Arc::new(AtomicUsize::new(0));
        let counted = handshakes.clone();
        let task = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let (acceptor, counted) = (acceptor.clone(), counted.clone());
                tokio::spawn(async move {
                    let _ = relay(inbound, upstream, &acceptor, start, &counted).await;
                });
            }
        });
        TlsProxy {
            addr,
            handshakes,
            task,
        }
    }

    /// TLS handshakes completed so far.
    pub fn handshakes(&self) -> usize {
        self.handshakes.load(Ordering::SeqCst)
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay(
    mut inbound: TcpStream,
    upstream: SocketAddr,
    acceptor: &tokio_native_tls::TlsAcceptor,
    start: Start,
    handshakes: &AtomicUsize,
) -> std::io::Result<()> {
    inbound.set_nodelay(true)?;
    let mut outbound = TcpStream::connect(upstream).await?;
    outbound.set_nodelay(true)?;
    if start != Start::Tls {
        let mut first = [0u8; 8];
        inbound.read_exact(&mut first).await?;
        if first != SSL_REQUEST {
            // A client that does not ask for TLS: plain text from its first message on.
            outbound.write_all(&first).await?;
            copy_bidirectional(&mut inbound, &mut outbound).await?;
            return Ok(());
        }
        if start == Start::PostgresWithoutTls {
            inbound.write_all(b"N").await?;
            copy_bidirectional(&mut inbound, &mut outbound).await?;
            return Ok(());
        }
        inbound.write_all(b"S").await?;
    }
    let mut tls = acceptor
        .accept(inbound)
        .await
        .map_err(std::io::Error::other)?;
    handshakes.fetch_add(1, Ordering::SeqCst);
    copy_bidirectional(&mut tls, &mut outbound).await?;
    Ok(())
}
