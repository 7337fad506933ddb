//! Webhook signatures: compute and verify E2B's `e2b-signature` header.
//!
//! E2B signs a delivery as base64(SHA-256(secret || raw body)) without `=` padding. Its docs
//! say the URL-safe alphabet; real deliveries use the standard one, so a verifier that
//! follows the docs rejects about half of genuine deliveries. We accept both, decode to the
//! 32 digest bytes, and compare those in constant time. Nothing here logs or returns the
//! secret.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The SHA-256 digest E2B signs: over the secret's bytes followed by the raw body.
fn digest(secret: &[u8], body: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(secret);
    h.update(body);
    h.finalize().into()
}

/// The signature as real E2B deliveries carry it: standard alphabet, no padding.
pub fn sign(secret: &str, body: &[u8]) -> String {
    STANDARD_NO_PAD.encode(digest(secret.as_bytes(), body))
}

/// The signature in the URL-safe alphabet that E2B's docs describe.
pub fn sign_url_safe(secret: &str, body: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(digest(secret.as_bytes(), body))
}

/// True when `header` is a valid signature of `body` under `secret`, in either base64
/// alphabet, padded or not. The digest comparison takes constant time.
pub fn verify(secret: &str, body: &[u8], header: &str) -> bool {
    let header = header.trim().trim_end_matches('=');
    // A SHA-256 digest is 43 base64 characters without padding; anything else is forged.
    if header.len() != 43 {
        return false;
    }
    let decoded = if header.contains(['-', '_']) {
        URL_SAFE_NO_PAD.decode(header)
    } else {
        STANDARD_NO_PAD.decode(header)
    };
    let Ok(given) = decoded else {
        return false;
    };
    let expected = digest(secret.as_bytes(), body);
    given.len() == expected.len() && bool::from(given.ct_eq(&expected))
}

#[cfg(test)]
mod tests {
    use super::*;

    // The vector from e2b-api.md.
    const URL_SAFE_VECTOR: &str = "5vLF-S1e3GdsLPsoR-XafyYJ-cDHfXutxJQbIXhT4ew";

    #[test]
    fn matches_the_documented_vector_in_both_alphabets() {
        assert_eq!(sign_url_safe("s3cr3t", br#"{"a":1}"#), URL_SAFE_VECTOR);
        let standard = URL_SAFE_VECTOR.replace('-', "+").replace('_', "/");
        assert_eq!(sign("s3cr3t", br#"{"a":1}"#), standard);
        assert!(verify("s3cr3t", br#"{"a":1}"#, URL_SAFE_VECTOR));
        assert!(verify("s3cr3t", br#"{"a":1}"#, &standard));
        assert!(verify("s3cr3t", br#"{"a":1}"#, &format!("{standard}=")));
    }

    #[test]
    fn rejects_forgeries() {
        let body = br#"{"a":1}"#;
        assert!(!verify("wrong", body, URL_SAFE_VECTOR));
        assert!(!verify("s3cr3t", br#"{"a":2}"#, URL_SAFE_VECTOR));
        assert!(!verify("s3cr3t", body, ""));
        assert!(!verify("s3cr3t", body, "not base64 at all!!"));
        assert!(!verify("s3cr3t", body, &URL_SAFE_VECTOR[..42]));
        // A body extended after the signed one must fail too.
        assert!(!verify("s3cr3t", br#"{"a":1} "#, URL_SAFE_VECTOR));
        // Mixed alphabets are not a valid encoding of anything E2B sends.
        let mixed = format!("+{}", &URL_SAFE_VECTOR[1..]);
        assert!(!verify("s3cr3t", body, &mixed));
    }
}
