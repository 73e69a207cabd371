//! Certificates made at test time with rcgen: a private CA, a server certificate for the given
//! names, a client certificate, and a second, unrelated CA; written as PEM files.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// The PEM files of one test PKI.
pub struct Pki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// A CA that signed nothing here: trusting it must fail.
    pub other_ca: PathBuf,
}

fn ca(name: &str) -> (rcgen::Certificate, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let cert = params.self_signed(&key).unwrap();
    (cert, Issuer::new(params, key))
}

fn leaf(
    names: &[&str],
    usage: ExtendedKeyUsagePurpose,
    issuer: &Issuer<'_, KeyPair>,
) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let mut params = CertificateParams::new(names).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "latentsweep test");
    params.extended_key_usages = vec![usage];
    let cert = params.signed_by(&key, issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

impl Pki {
    /// A PKI whose server certificate names `server_names` (DNS names or IP addresses).
    pub fn new(dir: &Path, server_names: &[&str]) -> Pki {
        let (ca_cert, issuer) = ca("latentsweep test CA");
        let (other_cert, _) = ca("unrelated CA");
        let (server_pem, server_key) =
            leaf(server_names, ExtendedKeyUsagePurpose::ServerAuth, &issuer);
        let (client_pem, client_key) =
            leaf(&["worker"], ExtendedKeyUsagePurpose::ClientAuth, &issuer);
        let write = |name: &str, text: &str| {
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        Pki {
            ca: write("ca.pem", &ca_cert.pem()),
            server_cert: write("server.pem", &server_pem),
            server_key: write("server.key", &server_key),
            client_cert: write("client.pem", &client_pem),
            client_key: write("client.key", &client_key),
            other_ca: write("other-ca.pem", &other_cert.pem()),
        }
    }

    /// The coordinator's TLS files (`client_ca`: require client certificates from this CA).
    pub fn server_files(&self, mutual: bool) -> coordinator::tls::TlsFiles {
        coordinator::tls::TlsFiles {
            cert: self.server_cert.clone(),
            key: self.server_key.clone(),
            client_ca: mutual.then(|| self.ca.clone()),
        }
    }
}
