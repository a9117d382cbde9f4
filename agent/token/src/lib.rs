//! infergate session tokens: short-lived JWTs (RFC 7519, RFC 9068 profile) minted from an API key for a
//! narrower scope, and verified locally on every door. A pure library: no server code, no clock, no I/O.
//!
//! ```text
//!  operator reconcile:  KeyRing::plan(now) ─▶ apply ─▶ StoredRing (Secret) + Jwks (gateway config)
//!  token endpoint:      scope::narrow(requested, &Allowed) ─▶ Grant ─▶ mint(ring.signing_key(now), ..) ─▶ JWT
//!  every door:          VerifyCache::verify(&Verifier, token, now) ─▶ Arc<VerifiedToken>
//!                          └─ then the agent checks `claims.client_id` in its snapshot (revocation) and
//!                             `claims.granted()` ∩ the policy scope, as for an API key
//!  discovery:           Jwks, OpenIdConfiguration
//! ```
//! Dependency direction: this crate depends on no other infergate crate; the agent maps its snapshot types
//! (key ids, policy names, features, codecs) to the plain strings used here.
#![deny(rust_2018_idioms)]
#![forbid(unsafe_code)]

mod cache;
mod claims;
mod discovery;
mod error;
mod external;
mod jose;
mod keyring;
mod keys;
mod scope;
mod verify;

pub use cache::VerifyCache;
pub use claims::{Actor, Claims, Grant, MAX_LIFETIME, Minted, TOKEN_TYPE, lifetime_within, mint};
pub use discovery::{JWKS_PATH, OPENID_CONFIGURATION_PATH, OpenIdConfiguration, TOKEN_PATH};
pub use error::{KeyError, TokenError};
pub use external::{ExternalToken, IssuerKeys, IssuerRules, unverified_issuer, verify_external};
pub use keyring::{KeyRing, RotationPlan, RotationPolicy, StoredRing, rotate};
pub use keys::{Alg, Jwk, Jwks, PublicKey, SigningKey, StoredKey};
pub use scope::{Allowed, Granted, Scope, narrow};
pub use verify::{Derived, MAX_TOKEN_BYTES, VerifiedToken, Verifier};
