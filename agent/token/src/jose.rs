//! The JOSE library and the ring backend it signs and verifies with.
//!
//! Why `jsonwebtoken` 10.3 with this provider, and not `jwt-simple` or `jsonwebtoken` 9:
//! - 9.x is the last line with a built-in ring backend, but it is affected by CVE-2026-25537 (a claim of the
//!   wrong JSON type skips its check) and no longer gets fixes.
//! - 10.x/11.x/12.x ship two backends, aws-lc-rs (a C build and a second crypto library next to rustls' ring)
//!   or RustCrypto (ed25519-dalek, p256, p384 and the `rsa` crate, whose timing advisory has no fix). Both add a
//!   second crypto stack to the agent. 11+ also need Rust 1.88, above the workspace's `rust-version`.
//! - `jwt-simple` is maintained and well designed (the key type fixes the algorithm), but it brings its own
//!   Ed25519, P-256/P-384, k256 and RSA implementations: the same second stack.
//! - 10.3 has a documented extension point, [`CryptoProvider`]: the JOSE framing (header, base64url, signing
//!   input, algorithm/key-family checks) stays the library's, and the primitives are ring's, the library rustls
//!   already links, except Ed25519 verification, which is ed25519-dalek's (`verify_strict`, 1.3x faster; see
//!   `DalekVerifier`): one small pure-Rust crate for the hot check, not a second stack. The provider signs only EdDSA and verifies only EdDSA, ES256 and (for the
//!   keys of trusted external issuers) RS256; every other
//!   algorithm, HMAC included, is refused here as well as by the verifier's own allow-list.
//!
//! The provider is process-wide (jsonwebtoken keeps it in a `OnceLock`). [`install`] runs before every sign or
//! verify of this crate; if another part of the process installed a different provider first, that one is used,
//! which changes nothing this crate relies on: the algorithm allow-list is enforced in `verify.rs` before the
//! library is called.
use jsonwebtoken::crypto::{CryptoProvider, JwkUtils, JwtSigner, JwtVerifier};
use jsonwebtoken::errors::{ErrorKind, Result};
use jsonwebtoken::signature::{self, Signer, Verifier};
use jsonwebtoken::{Algorithm, DecodingKey, DecodingKeyKind, EncodingKey};
use ring::signature::{
    ECDSA_P256_SHA256_FIXED, Ed25519KeyPair, RSA_PKCS1_2048_8192_SHA256, RsaPublicKeyComponents, UnparsedPublicKey,
    VerificationAlgorithm,
};

static RING_PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory: new_signer,
    verifier_factory: new_verifier,
    // JWK thumbprints and key-component extraction are not used: this crate builds its JWKs itself (keys.rs).
    jwk_utils: JwkUtils::new_unimplemented(),
};

/// Makes ring the JOSE provider of the process unless one is installed already. Cheap after the first call.
pub(crate) fn install() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = RING_PROVIDER.install_default();
    });
}

fn new_signer(alg: &Algorithm, key: &EncodingKey) -> Result<Box<dyn JwtSigner>> {
    match alg {
        Algorithm::EdDSA => {
            // `maybe_unchecked` accepts PKCS#8 v1 and v2; the public half, when present, is still checked.
            let pair =
                Ed25519KeyPair::from_pkcs8_maybe_unchecked(key.inner()).map_err(|_| ErrorKind::InvalidEddsaKey)?;
            Ok(Box::new(EdDsaSigner(pair)))
        }
        _ => Err(ErrorKind::InvalidAlgorithm.into()),
    }
}

fn new_verifier(alg: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>> {
    if *alg == Algorithm::RS256 {
        return match key.kind() {
            DecodingKeyKind::RsaModulusExponent { n, e } => Ok(Box::new(RsaVerifier { n: n.clone(), e: e.clone() })),
            DecodingKeyKind::SecretOrDer(_) => Err(ErrorKind::InvalidKeyFormat.into()),
        };
    }
    if *alg == Algorithm::EdDSA {
        let DecodingKeyKind::SecretOrDer(bytes) = key.kind() else {
            return Err(ErrorKind::InvalidKeyFormat.into());
        };
        let bytes: &[u8; 32] = bytes.as_slice().try_into().map_err(|_| ErrorKind::InvalidKeyFormat)?;
        let key = ed25519_dalek::VerifyingKey::from_bytes(bytes).map_err(|_| ErrorKind::InvalidEddsaKey)?;
        return Ok(Box::new(DalekVerifier(key)));
    }
    let (ring_alg, len): (&'static dyn VerificationAlgorithm, usize) = match alg {
        // Uncompressed SEC1 point, as `DecodingKey::from_ec_components` builds it: 0x04 || x || y.
        Algorithm::ES256 => (&ECDSA_P256_SHA256_FIXED, 65),
        _ => return Err(ErrorKind::InvalidAlgorithm.into()),
    };
    let DecodingKeyKind::SecretOrDer(bytes) = key.kind() else {
        return Err(ErrorKind::InvalidKeyFormat.into());
    };
    if bytes.len() != len {
        return Err(ErrorKind::InvalidKeyFormat.into());
    }
    Ok(Box::new(RingVerifier { alg: *alg, ring_alg, public_key: bytes.to_vec() }))
}

struct EdDsaSigner(Ed25519KeyPair);

impl Signer<Vec<u8>> for EdDsaSigner {
    fn try_sign(&self, message: &[u8]) -> std::result::Result<Vec<u8>, signature::Error> {
        Ok(self.0.sign(message).as_ref().to_vec())
    }
}

impl JwtSigner for EdDsaSigner {
    fn algorithm(&self) -> Algorithm {
        Algorithm::EdDSA
    }
}

struct RingVerifier {
    alg: Algorithm,
    ring_alg: &'static dyn VerificationAlgorithm,
    public_key: Vec<u8>,
}

impl Verifier<Vec<u8>> for RingVerifier {
    fn verify(&self, message: &[u8], sig: &Vec<u8>) -> std::result::Result<(), signature::Error> {
        UnparsedPublicKey::new(self.ring_alg, &self.public_key)
            .verify(message, sig)
            .map_err(|_| signature::Error::new())
    }
}

impl JwtVerifier for RingVerifier {
    fn algorithm(&self) -> Algorithm {
        self.alg
    }
}

/// RS256 for external issuers' keys: ring's PKCS#1 v1.5 SHA-256 check over the JWK's modulus and exponent.
struct RsaVerifier {
    n: Vec<u8>,
    e: Vec<u8>,
}

impl Verifier<Vec<u8>> for RsaVerifier {
    fn verify(&self, message: &[u8], sig: &Vec<u8>) -> std::result::Result<(), signature::Error> {
        RsaPublicKeyComponents { n: &self.n, e: &self.e }
            .verify(&RSA_PKCS1_2048_8192_SHA256, message, sig)
            .map_err(|_| signature::Error::new())
    }
}

impl JwtVerifier for RsaVerifier {
    fn algorithm(&self) -> Algorithm {
        Algorithm::RS256
    }
}

/// EdDSA verification with ed25519-dalek's `verify_strict`: it refuses non-canonical encodings and small-order
/// keys and R points, which ring also refuses, so the two agree on what verifies (tests/verify.rs runs ring-signed
/// tokens through it). Chosen over ring's for speed only: 38 against 49 us per check on the development machine
/// (criterion, `token/ed25519_dalek_floor` and `token/ed25519_verify_floor`, one run), which keeps an uncached
/// token check under the 60 us target with room for a noisy neighbour.
struct DalekVerifier(ed25519_dalek::VerifyingKey);

impl Verifier<Vec<u8>> for DalekVerifier {
    fn verify(&self, message: &[u8], sig: &Vec<u8>) -> std::result::Result<(), signature::Error> {
        let sig = ed25519_dalek::Signature::from_slice(sig).map_err(|_| signature::Error::new())?;
        self.0.verify_strict(message, &sig).map_err(|_| signature::Error::new())
    }
}

impl JwtVerifier for DalekVerifier {
    fn algorithm(&self) -> Algorithm {
        Algorithm::EdDSA
    }
}
