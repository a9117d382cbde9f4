//! The errors of this crate, each with a fixed [`category`](TokenError::category) for metric labels.
//!
//! No message carries a token, a claim value or key material: a refused token is logged by its `jti` (which the
//! caller has only once the signature checked out), never by its text.

/// Why a token was not minted or not accepted, or a requested scope was refused.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum TokenError {
    #[error("token is longer than {max} bytes; request a narrower scope or use the API key")]
    TooLarge { max: usize },
    /// Not three base64url parts, bad JSON, wrong claim types, a `crit` header or a `typ` other than `at+jwt`.
    #[error("token is malformed ({0}); request a new one from the token endpoint")]
    Malformed(&'static str),
    /// `none`, any HMAC or RSA algorithm, or an algorithm other than the one of the key named by `kid`.
    #[error("token algorithm is not accepted; only EdDSA and ES256 tokens from this gateway's keys are")]
    AlgNotAllowed,
    #[error("token was signed by a key this gateway does not know (rotated out, or another issuer's)")]
    UnknownKid,
    #[error("token signature does not verify; it was altered or signed by another key")]
    BadSignature,
    #[error("token has expired; request a new one (or refresh the stream) before it does")]
    Expired,
    #[error("token is not valid yet; check the clocks of the minting and the verifying hosts")]
    NotYetValid,
    #[error("token was issued for another audience")]
    WrongAudience,
    #[error("token was issued by another issuer")]
    WrongIssuer,
    /// RFC 6749 `invalid_scope`: unknown syntax, or wider than what the key allows. The detail names the item
    /// the client sent (a validated scope token, never a claim), so the client can fix its request.
    #[error("invalid_scope: {0}")]
    InvalidScope(String),
    #[error("token lifetime must be between 1 s and {max_secs} s")]
    InvalidLifetime { max_secs: u64 },
    /// Signing failed; only a broken key gets here.
    #[error("signing failed: {0}")]
    Signing(&'static str),
}

impl TokenError {
    /// A stable label for metrics (`infergate_tokens_refused_total{reason=...}`): bounded, never a message.
    pub fn category(&self) -> &'static str {
        match self {
            TokenError::TooLarge { .. } => "too_large",
            TokenError::Malformed(_) => "malformed",
            TokenError::AlgNotAllowed => "alg_not_allowed",
            TokenError::UnknownKid => "unknown_kid",
            TokenError::BadSignature => "bad_signature",
            TokenError::Expired => "expired",
            TokenError::NotYetValid => "not_yet_valid",
            TokenError::WrongAudience => "wrong_audience",
            TokenError::WrongIssuer => "wrong_issuer",
            TokenError::InvalidScope(_) => "invalid_scope",
            TokenError::InvalidLifetime { .. } => "invalid_lifetime",
            TokenError::Signing(_) => "signing_failed",
        }
    }
}

/// A signing or public key that cannot be loaded (from a Secret, a JWKS document or the gateway config).
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum KeyError {
    #[error("key {kid:?}: {reason}")]
    Invalid { kid: String, reason: &'static str },
    #[error("key {kid:?}: unsupported key type or algorithm (only OKP/Ed25519/EdDSA and EC/P-256/ES256)")]
    Unsupported { kid: String },
    #[error("key id {0:?} appears twice in the key set")]
    DuplicateKid(String),
}

impl KeyError {
    pub fn category(&self) -> &'static str {
        match self {
            KeyError::Invalid { .. } => "invalid_key",
            KeyError::Unsupported { .. } => "unsupported_key",
            KeyError::DuplicateKid(_) => "duplicate_kid",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_are_distinct_snake_case_labels() {
        let all = [
            TokenError::TooLarge { max: 1 },
            TokenError::Malformed("x"),
            TokenError::AlgNotAllowed,
            TokenError::UnknownKid,
            TokenError::BadSignature,
            TokenError::Expired,
            TokenError::NotYetValid,
            TokenError::WrongAudience,
            TokenError::WrongIssuer,
            TokenError::InvalidScope("x".into()),
            TokenError::InvalidLifetime { max_secs: 1 },
            TokenError::Signing("x"),
        ];
        let mut labels: Vec<&str> = all.iter().map(TokenError::category).collect();
        assert!(labels.iter().all(|l| l.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')), "{labels:?}");
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), all.len());
    }
}
