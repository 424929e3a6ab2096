//! Who the visitor is, pseudonymously. The id comes from kappe's own cookie (or the sources in
//! `--visitor-from`), and only its keyed hash ([`VisitorKey`]) goes further: the raw id is never
//! stored or logged. A visitor without a valid id is issued a random 128-bit one, but only when a
//! capped impression is actually recorded and the visitor's privacy signals allow storage.

use http::HeaderMap;
use http::header::HeaderValue;

use crate::clock::UnixSecs;
use crate::config::{Enforcement, VisitorSource};
use crate::privacy::Jar;
use crate::store::VisitorKey;
use crate::store::pseudonym::Pseudonymizer;

/// Longest visitor id accepted; longer ones are treated as absent.
pub const MAX_ID_LEN: usize = 64;

/// Where this request's visitor key came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A valid id the visitor sent.
    Sent,
    /// The daily IP and User-Agent fallback.
    Fallback,
}

/// A visitor as far as this request knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity {
    Known {
        key: VisitorKey,
        origin: Origin,
    },
    /// No id; kappe may issue one (kappe's own cookie is among the sources).
    Issuable,
    /// No id, and kappe does not issue one.
    None,
}

/// True for an id of 1 to 64 letters, digits, `-` or `_`.
pub fn valid_id(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= MAX_ID_LEN
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Finds the visitor's id in the request and hashes it.
pub fn identify(
    headers: &HeaderMap,
    cfg: &Enforcement,
    pseudo: &Pseudonymizer,
    peer: std::net::IpAddr,
    now: UnixSecs,
) -> Identity {
    identify_with(headers, &Jar::parse(headers), cfg, pseudo, peer, now)
}

/// [`identify`] with the request's cookies already parsed into `jar`.
pub fn identify_with(
    headers: &HeaderMap,
    jar: &Jar<'_>,
    cfg: &Enforcement,
    pseudo: &Pseudonymizer,
    peer: std::net::IpAddr,
    now: UnixSecs,
) -> Identity {
    for source in &cfg.visitor_from {
        let found = match source {
            VisitorSource::Cookie(name) => jar
                .iter()
                .find(|(n, v)| *n == name.as_str() && valid_id(v))
                .map(|(_, v)| pseudo.key(v.as_bytes())),
            VisitorSource::Header(name) => headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .filter(|v| valid_id(v))
                .map(|v| pseudo.key(v.as_bytes())),
        };
        if let Some(key) = found {
            return Identity::Known {
                key,
                origin: Origin::Sent,
            };
        }
    }
    let issues_own = cfg
        .visitor_from
        .iter()
        .any(|s| matches!(s, VisitorSource::Cookie(n) if *n == cfg.visitor_cookie));
    if cfg.visitor_fallback_ip_ua {
        // The day number is part of the hashed input: the same visitor gets a new key every day,
        // so the fallback cannot follow anyone for longer than that.
        let ua = headers
            .get(http::header::USER_AGENT)
            .map_or(&b""[..], HeaderValue::as_bytes);
        let mut input = Vec::with_capacity(64 + ua.len().min(512));
        input.extend_from_slice(b"ip-ua\0");
        input.extend_from_slice(&(now / 86_400).to_le_bytes());
        input.extend_from_slice(peer.to_string().as_bytes());
        input.push(0);
        input.extend_from_slice(&ua[..ua.len().min(512)]);
        return Identity::Known {
            key: pseudo.key(&input),
            origin: Origin::Fallback,
        };
    }
    if issues_own {
        Identity::Issuable
    } else {
        Identity::None
    }
}

/// A new random visitor id: 128 bits as 32 hex characters.
pub fn new_id() -> String {
    let bits: u128 = rand::random();
    format!("{bits:032x}")
}

/// The `Set-Cookie` value issuing `id`.
pub fn set_cookie(name: &str, id: &str, max_age_secs: u64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={id}; Max-Age={max_age_secs}; Path=/; HttpOnly; SameSite=Lax{secure}"
    ))
    .expect("cookie names and ids are validated ASCII")
}

/// The `Set-Cookie` value that removes cookie `name`.
pub fn expire_cookie(name: &str, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}=; Max-Age=0; Path=/; HttpOnly; SameSite=Lax{secure}"
    ))
    .expect("cookie names are validated ASCII")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ids with bad characters or too long are not ids.
    #[test]
    fn only_short_token_ids_are_valid() {
        assert!(valid_id("v123"));
        assert!(valid_id(&new_id()));
        assert!(!valid_id(""));
        assert!(!valid_id("a b"));
        assert!(!valid_id("<script>"));
        assert!(!valid_id(&"a".repeat(65)));
        assert_ne!(new_id(), new_id());
    }
}
