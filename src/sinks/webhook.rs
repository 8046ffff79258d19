//! Generic webhook: the alert JSON itself (schema 1), with an optional HMAC-SHA256 signature over
//! `timestamp + "." + body` so receivers can check origin and freshness.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The timestamp header sent with every webhook request (Unix seconds).
pub const TIMESTAMP_HEADER: &str = "X-Armorwatch-Timestamp";

/// `sha256=<hex>` of HMAC-SHA256(secret, `{timestamp}.{body}`).
pub fn signature(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(m) => m,
        // HMAC accepts keys of any length; this cannot happen.
        Err(_) => return String::new(),
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256=");
    for b in bytes {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// The body for a batch (digest mode): `{"schema":1,"type":"digest","alerts":[…]}`.
pub fn digest_body(alerts: &[&str]) -> String {
    format!(
        "{{\"schema\":1,\"type\":\"digest\",\"alerts\":[{}]}}",
        alerts.join(",")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vector() {
        // Checked with: printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac key
        assert_eq!(
            signature(b"key", 1_700_000_000, br#"{"a":1}"#),
            "sha256=a438e398bfafc57e4396bb7fc2304422f0f768e965d073ca313cb52e22e6ad03"
        );
    }
}
