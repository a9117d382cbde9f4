//! The documents other services fetch to verify infergate tokens: the JWK Set (in `keys.rs`) and a minimal
//! OpenID Provider / RFC 8414 authorization-server metadata document pointing at it.
use crate::keys::Alg;
use serde::{Deserialize, Serialize};

/// Where the agent serves the JWK Set and the token endpoint, relative to the issuer URL.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";
pub const TOKEN_PATH: &str = "/v1/oauth/token";
pub const OPENID_CONFIGURATION_PATH: &str = "/.well-known/openid-configuration";

/// `/.well-known/openid-configuration`. Only what a client-credentials issuer has: no authorization or
/// userinfo endpoint. The `id_token_*`, `response_types_*` and `subject_types_*` members are required by
/// OpenID discovery and present so generic validators (which read the signing algorithms from here) accept it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenIdConfiguration {
    pub issuer: String,
    pub jwks_uri: String,
    pub token_endpoint: String,
    pub grant_types_supported: Vec<String>,
    pub token_endpoint_auth_methods_supported: Vec<String>,
    pub response_types_supported: Vec<String>,
    pub subject_types_supported: Vec<String>,
    pub id_token_signing_alg_values_supported: Vec<String>,
    pub scopes_supported: Vec<String>,
}

impl OpenIdConfiguration {
    /// For an issuer URL (`https://gateway.example.com`); `issuer` is kept exactly as given, because the `iss`
    /// claim must equal it byte for byte. `scopes` lists the scope items worth advertising (may be empty).
    pub fn new(issuer: &str, scopes: impl IntoIterator<Item = String>) -> Self {
        let base = issuer.trim_end_matches('/');
        let strings = |items: &[&str]| items.iter().map(|s| s.to_string()).collect();
        OpenIdConfiguration {
            issuer: issuer.to_owned(),
            jwks_uri: format!("{base}{JWKS_PATH}"),
            token_endpoint: format!("{base}{TOKEN_PATH}"),
            grant_types_supported: strings(&["client_credentials"]),
            token_endpoint_auth_methods_supported: strings(&["client_secret_basic", "client_secret_post"]),
            response_types_supported: strings(&["token"]),
            subject_types_supported: strings(&["public"]),
            id_token_signing_alg_values_supported: strings(&[Alg::EdDSA.as_str()]),
            scopes_supported: scopes.into_iter().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_document_points_at_the_agent_paths() {
        let doc = OpenIdConfiguration::new("https://gw.example.com/", ["model:whisper".to_string()]);
        let json = serde_json::to_value(&doc).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "issuer": "https://gw.example.com/",
                "jwks_uri": "https://gw.example.com/.well-known/jwks.json",
                "token_endpoint": "https://gw.example.com/v1/oauth/token",
                "grant_types_supported": ["client_credentials"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
                "response_types_supported": ["token"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["EdDSA"],
                "scopes_supported": ["model:whisper"],
            })
        );
    }
}
