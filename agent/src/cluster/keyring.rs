//! The gossip keyring: AES-GCM keys sealing every packet on the gossip socket, in
//! memberlist's format (a version byte, a 12-byte random nonce, then the ciphertext and its
//! 16-byte tag). The primary key (the first) seals; every installed key is tried to open.
//! The keyring is kept in the data dir as Consul keeps it (`serf/local.keyring`, a JSON list
//! of base64 keys, primary first) and rewritten after every change.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use aes_gcm::aead::consts::U12;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::aes::Aes192;
use aes_gcm::{Aes128Gcm, Aes256Gcm, AesGcm, Nonce};
use base64::Engine as _;

/// Where the LAN keyring lives under the data dir (Consul's `SerfLANKeyring`).
pub const KEYRING_FILE: &str = "serf/local.keyring";

/// memberlist's version 1: no padding. Version 0 (PKCS#7 padded) is still opened.
const VERSION: u8 = 1;
const VERSION_PADDED: u8 = 0;
const NONCE: usize = 12;
const TAG: usize = 16;

type Aes192Gcm = AesGcm<Aes192, U12>;

enum Cipher {
    A128(Box<Aes128Gcm>),
    A192(Box<Aes192Gcm>),
    A256(Box<Aes256Gcm>),
}

impl Cipher {
    fn new(key: &[u8]) -> Result<Cipher, String> {
        let bad = |_| "key size must be 16, 24 or 32 bytes".to_string();
        Ok(match key.len() {
            16 => Cipher::A128(Box::new(Aes128Gcm::new_from_slice(key).map_err(bad)?)),
            24 => Cipher::A192(Box::new(Aes192Gcm::new_from_slice(key).map_err(bad)?)),
            32 => Cipher::A256(Box::new(Aes256Gcm::new_from_slice(key).map_err(bad)?)),
            _ => return Err("key size must be 16, 24 or 32 bytes".into()),
        })
    }

    fn seal(&self, nonce: &[u8], msg: &[u8]) -> Option<Vec<u8>> {
        let n = Nonce::<U12>::from_slice(nonce);
        let p = Payload { msg, aad: &[] };
        match self {
            Cipher::A128(c) => c.encrypt(n, p).ok(),
            Cipher::A192(c) => c.encrypt(n, p).ok(),
            Cipher::A256(c) => c.encrypt(n, p).ok(),
        }
    }

    fn open(&self, nonce: &[u8], msg: &[u8]) -> Option<Vec<u8>> {
        let n = Nonce::<U12>::from_slice(nonce);
        let p = Payload { msg, aad: &[] };
        match self {
            Cipher::A128(c) => c.decrypt(n, p).ok(),
            Cipher::A192(c) => c.decrypt(n, p).ok(),
            Cipher::A256(c) => c.decrypt(n, p).ok(),
        }
    }
}

/// Decodes a key as Consul reads one: standard base64 of 16, 24 or 32 bytes.
pub fn decode_key(key: &str) -> Result<Vec<u8>, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(key.trim())
        .map_err(|e| format!("illegal base64 data: {e}"))?;
    match bytes.len() {
        16 | 24 | 32 => Ok(bytes),
        _ => Err("key size must be 16, 24 or 32 bytes".into()),
    }
}

/// A fresh 32-byte key, base64-encoded (`consul keygen`).
pub fn generate_key() -> String {
    let key: [u8; 32] = rand::random();
    base64::engine::general_purpose::STANDARD.encode(key)
}

/// The installed keys, primary first.
pub struct Keyring {
    keys: Vec<(Vec<u8>, Cipher)>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys are secrets: only their number is shown.
        write!(f, "Keyring({} keys)", self.keys.len())
    }
}

impl Keyring {
    /// A keyring of base64 keys, the first one primary.
    pub fn from_encoded(keys: &[String]) -> Result<Keyring, String> {
        let mut ring = Keyring { keys: Vec::new() };
        for k in keys {
            ring.install(k)?;
        }
        if ring.keys.is_empty() {
            return Err("no keys present in keyring".into());
        }
        Ok(ring)
    }

    /// The keys, base64, primary first.
    pub fn encoded(&self) -> Vec<String> {
        self.keys
            .iter()
            .map(|(k, _)| base64::engine::general_purpose::STANDARD.encode(k))
            .collect()
    }

    /// The primary key, base64.
    pub fn primary(&self) -> String {
        self.encoded().into_iter().next().unwrap_or_default()
    }

    /// Installs a key (a no-op when it is already there); the first key becomes primary.
    pub fn install(&mut self, key: &str) -> Result<(), String> {
        let bytes = decode_key(key)?;
        if !self.keys.iter().any(|(k, _)| *k == bytes) {
            let c = Cipher::new(&bytes)?;
            self.keys.push((bytes, c));
        }
        Ok(())
    }

    /// Makes an installed key the primary one.
    pub fn use_key(&mut self, key: &str) -> Result<(), String> {
        let bytes = decode_key(key)?;
        let i = self
            .keys
            .iter()
            .position(|(k, _)| *k == bytes)
            .ok_or_else(|| "Requested key is not in the keyring".to_string())?;
        let k = self.keys.remove(i);
        self.keys.insert(0, k);
        Ok(())
    }

    /// Removes a key other than the primary one (a no-op when it is not installed).
    pub fn remove(&mut self, key: &str) -> Result<(), String> {
        let bytes = decode_key(key)?;
        if self.keys.first().is_some_and(|(k, _)| *k == bytes) {
            return Err("Removing the primary key is not allowed".into());
        }
        self.keys.retain(|(k, _)| *k != bytes);
        Ok(())
    }

    /// Seals a packet with the primary key.
    pub fn seal(&self, plain: &[u8]) -> Vec<u8> {
        let nonce: [u8; NONCE] = rand::random();
        let mut out = Vec::with_capacity(1 + NONCE + plain.len() + TAG);
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        let (_, cipher) = self.keys.first().expect("a keyring holds at least one key");
        // AES-GCM encryption fails only past 64 GiB of plaintext.
        if let Some(sealed) = cipher.seal(&nonce, plain) {
            out.extend_from_slice(&sealed);
        }
        out
    }

    /// Opens a sealed packet with whichever installed key sealed it.
    pub fn open(&self, pkt: &[u8]) -> Result<Vec<u8>, &'static str> {
        if pkt.len() < 1 + NONCE + TAG {
            return Err("payload is too small to decrypt");
        }
        let (version, rest) = (pkt[0], &pkt[1..]);
        if version != VERSION && version != VERSION_PADDED {
            return Err("unsupported encryption version");
        }
        let (nonce, body) = rest.split_at(NONCE);
        for (_, cipher) in &self.keys {
            if let Some(mut plain) = cipher.open(nonce, body) {
                if version == VERSION_PADDED {
                    let pad = plain.last().copied().unwrap_or(0) as usize;
                    if pad == 0 || pad > plain.len() {
                        return Err("bad padding");
                    }
                    plain.truncate(plain.len() - pad);
                }
                return Ok(plain);
            }
        }
        Err("no installed keys could decrypt the message")
    }

    /// Reads `serf/local.keyring` under `data_dir`, if there is one.
    pub fn load(data_dir: &Path) -> Result<Option<Keyring>, String> {
        let path = data_dir.join(KEYRING_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("keyring file {}: {e}", path.display())),
        };
        let keys: Vec<String> = serde_json::from_str(&text)
            .map_err(|e| format!("keyring file {}: {e}", path.display()))?;
        Keyring::from_encoded(&keys)
            .map(Some)
            .map_err(|e| format!("keyring file {}: {e}", path.display()))
    }

    /// Writes the keyring to `path` (mode 0600), replacing it atomically.
    pub fn save(&self, path: &Path) -> Result<(), String> {
        let fail = |e: std::io::Error| format!("keyring file {}: {e}", path.display());
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(fail)?;
        }
        let body = serde_json::to_vec(&self.encoded()).map_err(|e| e.to_string())?;
        let tmp = path.with_extension("keyring.tmp");
        {
            use std::io::Write as _;
            use std::os::unix::fs::OpenOptionsExt as _;
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(fail)?;
            f.write_all(&body).map_err(fail)?;
            f.sync_all().map_err(fail)?;
        }
        std::fs::rename(&tmp, path).map_err(fail)
    }
}

/// Gossip encryption as the agent runs it: the keyring (none: gossip in plaintext), where it
/// is persisted, and Consul's `encrypt_verify_*` switches for rolling encryption out.
#[derive(Debug, Default)]
pub struct Crypto {
    pub keyring: Option<Keyring>,
    /// `serf/local.keyring` under the data dir; `None` keeps the keyring in memory only.
    pub path: Option<PathBuf>,
    /// Refuse packets that are not sealed with an installed key.
    pub verify_incoming: bool,
    /// Seal outgoing packets.
    pub verify_outgoing: bool,
}

/// Shared between the gossip task, which seals and opens, and the keyring operations.
pub type SharedCrypto = Arc<RwLock<Crypto>>;

impl Crypto {
    /// The keyring the agent starts with: the data dir's keyring file wins over `encrypt`
    /// (Consul's order); `encrypt` alone creates the file.
    pub fn start(
        encrypt: Option<&str>,
        data_dir: &Path,
        verify_incoming: bool,
        verify_outgoing: bool,
    ) -> Result<(Crypto, Option<String>), String> {
        let path = data_dir.join(KEYRING_FILE);
        let mut warning = None;
        let keyring = match (Keyring::load(data_dir)?, encrypt) {
            (Some(ring), Some(_)) => {
                warning = Some(format!(
                    "LAN keyring exists but -encrypt given, using keyring ({})",
                    path.display()
                ));
                Some(ring)
            }
            (Some(ring), None) => Some(ring),
            (None, Some(key)) => {
                let ring = Keyring::from_encoded(&[key.to_string()])
                    .map_err(|e| format!("Invalid key: {e}"))?;
                ring.save(&path)?;
                Some(ring)
            }
            (None, None) => None,
        };
        Ok((
            Crypto {
                keyring,
                path: Some(path),
                verify_incoming,
                verify_outgoing,
            },
            warning,
        ))
    }

    /// The bytes to put on the wire for a plaintext packet.
    pub fn seal(&self, plain: Vec<u8>) -> Vec<u8> {
        match &self.keyring {
            Some(ring) if self.verify_outgoing => ring.seal(&plain),
            _ => plain,
        }
    }

    /// The plaintext of a received packet and whether an installed key opened it (rather
    /// than letting it through unsealed), or why it is refused.
    pub fn open(&self, pkt: &[u8]) -> Result<(Vec<u8>, bool), &'static str> {
        match &self.keyring {
            None => Ok((pkt.to_vec(), false)),
            Some(ring) => match ring.open(pkt) {
                Ok(p) => Ok((p, true)),
                Err(_) if !self.verify_incoming => Ok((pkt.to_vec(), false)),
                Err(e) => Err(e),
            },
        }
    }
}

/// Warnings about refused gossip packets, at most one every [`RefusalLog::EVERY`], so that a
/// stranger sending garbage cannot flood the log; the ones held back are counted.
#[derive(Debug, Default)]
pub struct RefusalLog {
    last: Option<std::time::Instant>,
    held_back: u64,
}

impl RefusalLog {
    const EVERY: std::time::Duration = std::time::Duration::from_secs(5);

    fn due(&mut self) -> Option<u64> {
        if self.last.is_some_and(|t| t.elapsed() < Self::EVERY) {
            self.held_back += 1;
            return None;
        }
        self.last = Some(std::time::Instant::now());
        Some(std::mem::take(&mut self.held_back))
    }

    /// A packet no installed key opens, with `encrypt_verify_incoming` on. True when it was
    /// logged: the caller then tells the sender with [`REFUSAL_NOTICE`].
    pub fn refused(&mut self, from: std::net::SocketAddr, why: &str) -> bool {
        let Some(more) = self.due() else { return false };
        tracing::warn!(
            %from,
            held_back = more,
            "gossip: refused a packet: {why} (the sender has a different gossip key, or none)"
        );
        true
    }

    /// A packet that is not a Muster gossip packet once opened. True when it was logged.
    pub fn undecodable(&mut self, from: std::net::SocketAddr, why: &str, has_key: bool) -> bool {
        let Some(more) = self.due() else { return false };
        let hint = if has_key {
            "the sender may not use gossip encryption (encrypt_verify_incoming is off)"
        } else {
            "the sender may use gossip encryption, which this agent has no key for"
        };
        tracing::warn!(%from, held_back = more, "gossip: undecodable packet ({why}): {hint}");
        true
    }

    /// A peer sent [`REFUSAL_NOTICE`]: it could not read our packets.
    pub fn told_refused(&mut self, from: std::net::SocketAddr, has_key: bool) {
        let Some(more) = self.due() else { return };
        let ours = if has_key {
            "with this agent's gossip key"
        } else {
            "without a gossip key"
        };
        tracing::warn!(
            %from,
            held_back = more,
            "gossip: the peer refused our packets, sent {ours}: it has a different gossip key, \
             or none"
        );
    }
}

/// Sent in plaintext, at the pace of the refusal log, to a peer whose packets this agent
/// refused, so that both sides log why they cannot talk. It is never answered, so two agents
/// with different keys do not bounce it between them.
pub const REFUSAL_NOTICE: &[u8] = b"\xffmuster: gossip packet refused (gossip key mismatch)";

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8, len: usize) -> String {
        base64::engine::general_purpose::STANDARD.encode(vec![b; len])
    }

    #[test]
    fn sealed_under_a_secondary_key_opens_and_tampering_fails() {
        let a = key(1, 32);
        let b = key(2, 16);
        let sender = Keyring::from_encoded(std::slice::from_ref(&a)).unwrap();
        let sealed = sender.seal(b"hello gossip");
        assert_eq!(sealed[0], VERSION);
        assert_eq!(sealed.len(), 1 + NONCE + 12 + TAG);
        let receiver = Keyring::from_encoded(&[b.clone(), a.clone()]).unwrap();
        assert_eq!(receiver.open(&sealed).unwrap(), b"hello gossip");
        for i in [0, 5, 20, sealed.len() - 1] {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            assert!(receiver.open(&bad).is_err(), "byte {i} tampered");
        }
        let stranger = Keyring::from_encoded(&[b]).unwrap();
        assert!(stranger.open(&sealed).is_err());
        assert!(receiver.open(&sealed[..20]).is_err());
    }

    #[test]
    fn every_key_size_seals_and_others_are_refused() {
        for len in [16, 24, 32] {
            let ring = Keyring::from_encoded(&[key(7, len)]).unwrap();
            assert_eq!(ring.open(&ring.seal(b"x")).unwrap(), b"x");
        }
        for len in [0, 8, 31, 64] {
            assert!(decode_key(&key(7, len)).is_err());
        }
        assert!(decode_key("not base64!").is_err());
        assert_eq!(decode_key(&generate_key()).unwrap().len(), 32);
    }

    #[test]
    fn a_padded_version_0_packet_opens() {
        let k = key(3, 16);
        let ring = Keyring::from_encoded(std::slice::from_ref(&k)).unwrap();
        let cipher = Cipher::new(&decode_key(&k).unwrap()).unwrap();
        let nonce = [9u8; NONCE];
        let mut padded = b"abc".to_vec();
        padded.extend_from_slice(&[13u8; 13]);
        let mut pkt = vec![VERSION_PADDED];
        pkt.extend_from_slice(&nonce);
        pkt.extend_from_slice(&cipher.seal(&nonce, &padded).unwrap());
        assert_eq!(ring.open(&pkt).unwrap(), b"abc");
    }

    #[test]
    fn install_use_remove_follow_memberlist() {
        let (a, b) = (key(1, 32), key(2, 32));
        let mut ring = Keyring::from_encoded(std::slice::from_ref(&a)).unwrap();
        ring.install(&b).unwrap();
        ring.install(&b).unwrap();
        assert_eq!(ring.encoded(), vec![a.clone(), b.clone()]);
        assert!(ring.remove(&a).unwrap_err().contains("primary"));
        assert!(ring.use_key(&key(9, 32)).is_err());
        ring.use_key(&b).unwrap();
        assert_eq!(ring.primary(), b);
        ring.remove(&a).unwrap();
        assert_eq!(ring.encoded(), vec![b]);
    }

    #[test]
    fn the_keyring_file_wins_over_encrypt_and_survives() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (key(1, 32), key(2, 32));
        let (c, w) = Crypto::start(Some(&a), dir.path(), true, true).unwrap();
        assert!(w.is_none());
        let text = std::fs::read_to_string(dir.path().join(KEYRING_FILE)).unwrap();
        assert_eq!(text, serde_json::to_string(&vec![a.clone()]).unwrap());
        let mut ring = c.keyring.unwrap();
        ring.install(&b).unwrap();
        ring.use_key(&b).unwrap();
        ring.save(c.path.as_deref().unwrap()).unwrap();
        let (c, w) = Crypto::start(Some(&a), dir.path(), true, true).unwrap();
        assert!(w.is_some());
        assert_eq!(c.keyring.unwrap().encoded(), vec![b.clone(), a]);
        let (c, _) = Crypto::start(None, dir.path(), true, true).unwrap();
        assert_eq!(c.keyring.unwrap().primary(), b);
    }

    #[test]
    fn verify_switches_let_plaintext_through() {
        let ring = || Keyring::from_encoded(&[key(1, 16)]).ok();
        let strict = Crypto {
            keyring: ring(),
            verify_incoming: true,
            verify_outgoing: true,
            ..Crypto::default()
        };
        assert!(strict.open(b"\0plain").is_err());
        let sealed = strict.seal(b"\0plain".to_vec());
        assert_eq!(strict.open(&sealed).unwrap(), (b"\0plain".to_vec(), true));
        let lax = Crypto {
            keyring: ring(),
            verify_incoming: false,
            verify_outgoing: false,
            ..Crypto::default()
        };
        assert_eq!(lax.seal(b"\0plain".to_vec()), b"\0plain");
        assert_eq!(lax.open(b"\0plain").unwrap(), (b"\0plain".to_vec(), false));
        assert_eq!(lax.open(&sealed).unwrap(), (b"\0plain".to_vec(), true));
    }
}
