//! `muster tls ca create` and `muster tls cert create`: a CA and the certificates of a first
//! cluster, written as Consul's `consul tls` writes them (the same file names, subject
//! alternative names, key usages and output lines), with ECDSA P-256 keys, through rcgen.

use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};

use super::error::{Error, Result};
use super::help::Flag;
use crate::flags::Parsed;

pub(crate) const TLS_USAGE: &str = "
Usage: muster tls <subcommand> <subcommand> [options]

  This command has subcommands for interacting with Muster's TLS certificates.

  Create a CA

    $ muster tls ca create

  Create a server certificate

    $ muster tls cert create -server

  Create a client certificate

    $ muster tls cert create -client

  For more examples, ask for subcommand help or view the documentation.
";

pub(crate) const CA_USAGE: &str = "
Usage: muster tls ca <subcommand> [options]

  This command has subcommands for interacting with Certificate Authorities.
";

pub(crate) const CA_CREATE_USAGE: &str = "
Usage: muster tls ca create [options]

  Create a new CA:

  $ muster tls ca create
  ==> Saved consul-agent-ca.pem
  ==> Saved consul-agent-ca-key.pem
";

pub(crate) const CA_CREATE_FLAGS: &[Flag] = &[
    Flag::value(
        "days",
        "value",
        "Provide number of days the CA is valid for from now on. Defaults to 5 years.",
    ),
    Flag::value(
        "domain",
        "value",
        "Domain of the cluster; names the files. Defaults to consul.",
    ),
];

pub(crate) const CERT_USAGE: &str = "
Usage: muster tls cert <subcommand> [options]

  This command has subcommands for interacting with certificates.
";

pub(crate) const CERT_CREATE_USAGE: &str = "
Usage: muster tls cert create [options]

  Create a new certificate

  $ muster tls cert create -server
  ==> WARNING: Server Certificates grants authority to become a
      server and access all state in the cluster including root keys
      and all ACL tokens. Do not distribute them to production hosts
      that are not server nodes. Store them as securely as CA keys.
  ==> Using consul-agent-ca.pem and consul-agent-ca-key.pem
  ==> Saved dc1-server-consul-0.pem
  ==> Saved dc1-server-consul-0-key.pem
  $ muster tls cert create -client
  ==> Using consul-agent-ca.pem and consul-agent-ca-key.pem
  ==> Saved dc1-client-consul-0.pem
  ==> Saved dc1-client-consul-0-key.pem
";

pub(crate) const CERT_CREATE_FLAGS: &[Flag] = &[
    Flag::value(
        "ca",
        "value",
        "Provide path to the ca. Defaults to #DOMAIN#-agent-ca.pem.",
    ),
    Flag::value(
        "key",
        "value",
        "Provide path to the key. Defaults to #DOMAIN#-agent-ca-key.pem.",
    ),
    Flag::bool("server", "Generate server certificate."),
    Flag::bool("client", "Generate client certificate."),
    Flag::bool("cli", "Generate cli certificate."),
    Flag::value(
        "node",
        "value",
        "When generating a server cert and this is set an additional dns name is included \
         of the form <node>.server.<datacenter>.<domain>.",
    ),
    Flag::value(
        "days",
        "value",
        "Provide number of days the certificate is valid for from now on. Defaults to 1 year.",
    ),
    Flag::value(
        "dc",
        "value",
        "Provide the datacenter. Matters only for -server certificates. Defaults to dc1.",
    ),
    Flag::value(
        "domain",
        "value",
        "Provide the domain. Matters only for -server certificates.",
    ),
    Flag::multi(
        "additional-dnsname",
        "value",
        "Provide an additional dnsname for Subject Alternative Names. localhost is always \
         included. This flag may be provided multiple times.",
    ),
    Flag::multi(
        "additional-ipaddress",
        "value",
        "Provide an additional ipaddress for Subject Alternative Names. 127.0.0.1 is always \
         included. This flag may be provided multiple times.",
    ),
];

/// `-days`, or `default`; it must be positive.
fn days(p: &Parsed, default: i64) -> Result<i64> {
    match p.value("days") {
        None => Ok(default),
        Some(v) => match v.parse::<i64>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(Error::InvalidFlag {
                flag: "days",
                value: v.to_string(),
            }),
        },
    }
}

fn domain(p: &Parsed) -> String {
    p.value("domain").unwrap_or("consul").to_string()
}

/// A random positive 128-bit serial number, as Consul's `GenerateSerialNumber`.
fn serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f;
    SerialNumber::from_slice(&bytes)
}

/// Valid from a minute ago (clock skew) for `days` days.
fn validity(params: &mut CertificateParams, days: i64) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(1);
    params.not_after = now + time::Duration::days(days);
}

fn failed(e: impl std::fmt::Display) -> Error {
    Error::refused(e.to_string())
}

/// Writes `text` to the new file `name` (a key readable by its owner only) and says so.
fn save(name: &str, text: &str, private: bool) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(name)
        .map_err(|e| failed(format!("{name}: {e}")))?;
    f.write_all(text.as_bytes())
        .map_err(|e| failed(format!("{name}: {e}")))?;
    println!("==> Saved {name}");
    Ok(())
}

/// `muster tls ca create`: `<domain>-agent-ca.pem` and its key, refusing to overwrite either.
pub(crate) async fn ca_create(p: &Parsed) -> Result<i32> {
    let days = days(p, 1825)?;
    let domain = domain(p);
    let cert_file = format!("{domain}-agent-ca.pem");
    let key_file = format!("{domain}-agent-ca-key.pem");
    for f in [&cert_file, &key_file] {
        if Path::new(f).exists() {
            return Err(Error::refused(format!("{f} already exists.")));
        }
    }
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(failed)?;
    let serial = serial();
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    let sn = serial
        .as_ref()
        .iter()
        .fold(String::new(), |s, b| s + &format!("{b:02x}"));
    dn.push(DnType::CommonName, format!("Consul Agent CA {sn}"));
    dn.push(DnType::CountryName, "US");
    dn.push(DnType::StateOrProvinceName, "CA");
    dn.push(DnType::LocalityName, "San Francisco");
    dn.push(DnType::OrganizationName, "HashiCorp Inc.");
    params.distinguished_name = dn;
    params.serial_number = Some(serial);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
    ];
    validity(&mut params, days);
    let cert = params.self_signed(&key).map_err(failed)?;
    save(&cert_file, &cert.pem(), false)?;
    save(&key_file, &key.serialize_pem(), true)?;
    Ok(0)
}

/// The kind of certificate `cert create` makes.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Server,
    Client,
    Cli,
}

/// `muster tls cert create -server|-client|-cli`: the next free
/// `<dc>-<kind>-<domain>-<n>.pem` and its key, signed by the CA.
pub(crate) async fn cert_create(p: &Parsed) -> Result<i32> {
    let kind = match (p.bool("server"), p.bool("client"), p.bool("cli")) {
        (true, false, false) => Kind::Server,
        (false, true, false) => Kind::Client,
        (false, false, true) => Kind::Cli,
        _ => {
            return Err(Error::refused(
                "Please provide either -server, -client, or -cli",
            ))
        }
    };
    let node = p.value("node").filter(|n| !n.is_empty());
    if node.is_some() && kind != Kind::Server {
        return Err(Error::refused("-node requires -server"));
    }
    let days = days(p, 365)?;
    let dc = p.value("dc").unwrap_or("dc1");
    let domain = domain(p);
    let mut dns: Vec<String> = p
        .all("additional-dnsname")
        .iter()
        .map(|d| d.trim().to_string())
        .filter(|d| !d.is_empty())
        .collect();
    let mut ips = Vec::new();
    for ip in p.all("additional-ipaddress") {
        let ip = ip.trim();
        if ip.is_empty() {
            continue;
        }
        ips.push(
            ip.parse::<std::net::IpAddr>()
                .map_err(|_| Error::InvalidFlag {
                    flag: "additional-ipaddress",
                    value: ip.to_string(),
                })?,
        );
    }
    let (role, usages) = match kind {
        Kind::Server => ("server", true),
        Kind::Client => ("client", true),
        Kind::Cli => ("cli", false),
    };
    let name = format!("{role}.{dc}.{domain}");
    if let Some(node) = node {
        dns.push(format!("{node}.{name}"));
    }
    if kind == Kind::Cli {
        dns = vec![name.clone()];
    } else {
        dns.push(name.clone());
    }
    dns.push("localhost".into());
    if kind != Kind::Cli {
        ips.push([127, 0, 0, 1].into());
    }
    let prefix = format!("{dc}-{role}-{domain}");
    let Some((cert_file, key_file)) = (0..=10_000)
        .map(|i| (format!("{prefix}-{i}.pem"), format!("{prefix}-{i}-key.pem")))
        .find(|(c, k)| !Path::new(c).exists() && !Path::new(k).exists())
    else {
        return Err(Error::refused(
            "Could not find a filename that doesn't already exist",
        ));
    };
    let ca_file = p
        .value("ca")
        .unwrap_or("#DOMAIN#-agent-ca.pem")
        .replacen("#DOMAIN#", &domain, 1);
    let ca_key_file = p
        .value("key")
        .unwrap_or("#DOMAIN#-agent-ca-key.pem")
        .replacen("#DOMAIN#", &domain, 1);
    let ca_pem = std::fs::read_to_string(&ca_file)
        .map_err(|e| failed(format!("Error reading CA: open {ca_file}: {e}")))?;
    let ca_key_pem = std::fs::read_to_string(&ca_key_file)
        .map_err(|e| failed(format!("Error reading CA key: open {ca_key_file}: {e}")))?;
    if kind == Kind::Server {
        println!(
            "==> WARNING: Server Certificates grants authority to become a\n    \
             server and access all state in the cluster including root keys\n    \
             and all ACL tokens. Do not distribute them to production hosts\n    \
             that are not server nodes. Store them as securely as CA keys."
        );
    }
    println!("==> Using {ca_file} and {ca_key_file}");
    let ca_key = KeyPair::from_pem(&ca_key_pem).map_err(failed)?;
    let ca = CertificateParams::from_ca_cert_pem(&ca_pem)
        .and_then(|params| params.self_signed(&ca_key))
        .map_err(|e| failed(format!("Error reading CA: {e}")))?;

    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(failed)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    params.serial_number = Some(serial());
    params.subject_alt_names = dns
        .into_iter()
        .map(|d| d.try_into().map(SanType::DnsName))
        .chain(ips.into_iter().map(|ip| Ok(SanType::IpAddress(ip))))
        .collect::<std::result::Result<_, _>>()
        .map_err(failed)?;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    if usages {
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
    }
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, days);
    let cert = params.signed_by(&key, &ca, &ca_key).map_err(failed)?;
    save(&cert_file, &cert.pem(), false)?;
    save(&key_file, &key.serialize_pem(), true)?;
    Ok(0)
}
