//! The token endpoint's decision (RFC 6749 section 4.4, client credentials), independent of HTTP.
//!
//! ```text
//!  form + Authorization ─▶ grant_type ─▶ client auth (Basic | client_id/client_secret, exactly one)
//!     ─▶ the secret is an API key: admission::authenticate (one snapshot) ─▶ client_id == its key id
//!     ─▶ mutual TLS where the policy asks ─▶ audience ─▶ scope::narrow(scope, what the policy allows)
//!     ─▶ lifetime: tier tokenLifetime ∧ expires_in (optional, only shortens, ≥ 5 s) ∧ key valid_until
//!        ∧ policy expiresAt ─▶ mint ─▶ Issued
//! ```
//! Key refusals keep their infergate code (in the error body's `code`) and map to the RFC's errors: a key that
//! does not authenticate is `invalid_client` (401), a genuine key its policy does not let through now
//! (suspended, wrong environment, no client certificate) is `invalid_grant` (400).
use crate::gateway::Gateway;
use crate::outcome::RequestOutcome;
use chrono::{DateTime, Utc};
use infergate_crds::endpoint::Codec;
use infergate_crds::tier::DEFAULT_TOKEN_LIFETIME_SECONDS;
use infergate_gate::admission;
use infergate_gate::audio::codec_name;
use infergate_gate::refusal::{Refusal, RefusalCode};
use infergate_gate::snapshot::{KeyStatus, Snapshot};
use infergate_token::{Allowed, Grant, MAX_LIFETIME, Minted, lifetime_within, narrow};
use std::collections::BTreeSet;
use std::time::Duration;

/// What the client sent: the form fields in order (a repeated field is an error) and its Authorization header.
pub struct TokenRequest<'a> {
    pub authorization: Option<&'a str>,
    pub form: &'a [(String, String)],
}

/// A minted token and the scope string of the response.
#[derive(Debug)]
pub struct Issued {
    pub minted: Minted,
    pub scope: String,
}

/// An RFC 6749 section 5.2 error, with infergate's refusal code when a key refusal caused it.
#[derive(Debug, PartialEq)]
pub struct OAuthError {
    pub status: u16,
    pub error: &'static str,
    pub description: String,
    pub code: Option<&'static str>,
}

impl OAuthError {
    fn new(status: u16, error: &'static str, description: impl Into<String>) -> Self {
        OAuthError { status, error, description: description.into(), code: None }
    }
    fn invalid_request(description: impl Into<String>) -> Self {
        Self::new(400, "invalid_request", description)
    }
    fn invalid_client(description: impl Into<String>) -> Self {
        Self::new(401, "invalid_client", description)
    }

    /// A key refusal in the RFC's terms.
    fn from_refusal(refusal: &Refusal) -> Self {
        let (status, error) =
            if refusal.code.http_status() == 401 { (401, "invalid_client") } else { (400, "invalid_grant") };
        OAuthError { status, error, description: refusal.message.to_string(), code: Some(refusal.code.as_str()) }
    }

    pub fn to_json(&self) -> serde_json::Value {
        let mut body = serde_json::json!({"error": self.error, "error_description": self.description});
        if let Some(code) = self.code {
            body["code"] = code.into();
        }
        body
    }
}

/// The one field named `name`; a repeated field is `invalid_request` (RFC 6749 section 3.2).
fn field<'a>(form: &'a [(String, String)], name: &str) -> Result<Option<&'a str>, OAuthError> {
    let mut values = form.iter().filter(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let first = values.next();
    if values.next().is_some() {
        return Err(OAuthError::invalid_request(format!("parameter {name} is repeated; send it once")));
    }
    Ok(first)
}

/// `Basic base64(urlencode(id) ":" urlencode(secret))` (RFC 6749 section 2.3.1).
fn basic_credentials(authorization: &str) -> Result<Option<(String, String)>, OAuthError> {
    let value = authorization.trim();
    if value.len() < 6 || !value[..6].eq_ignore_ascii_case("basic ") {
        return Ok(None);
    }
    use base64::Engine;
    let bad = || OAuthError::invalid_client("the Basic credentials are not base64 of client_id:client_secret");
    let decoded = base64::engine::general_purpose::STANDARD.decode(value[6..].trim()).map_err(|_| bad())?;
    let text = String::from_utf8(decoded).map_err(|_| bad())?;
    let (id, secret) = text.split_once(':').ok_or_else(bad)?;
    let decode = |s: &str| {
        serde_urlencoded::from_str::<Vec<(String, String)>>(&format!("v={s}"))
            .ok()
            .and_then(|mut v| v.pop())
            .map(|(_, v)| v)
            .ok_or_else(bad)
    };
    Ok(Some((decode(id)?, decode(secret)?)))
}

/// The client's id and secret, from exactly one of the two methods.
fn client_credentials_of(request: &TokenRequest<'_>) -> Result<(String, String), OAuthError> {
    let basic = request.authorization.map(basic_credentials).transpose()?.flatten();
    let form_id = field(request.form, "client_id")?;
    let form_secret = field(request.form, "client_secret")?;
    match (basic, form_secret) {
        (Some(_), Some(_)) => Err(OAuthError::invalid_request(
            "client credentials sent both in the Authorization header and in the body; use one method",
        )),
        (Some((id, secret)), None) => match form_id {
            Some(other) if other != id => Err(OAuthError::invalid_request(
                "client_id in the body differs from the one in the Authorization header",
            )),
            _ => Ok((id, secret)),
        },
        (None, Some(secret)) => match form_id {
            Some(id) => Ok((id.to_owned(), secret.to_owned())),
            None => Err(OAuthError::invalid_request("client_secret without client_id; send the key id as client_id")),
        },
        (None, None) => Err(OAuthError::invalid_client(
            "no client authentication: send HTTP Basic client_id:client_secret (the key id and the API key), or \
             client_id and client_secret form fields",
        )),
    }
}

/// The shortest lifetime a client may ask for with `expires_in`.
pub const MIN_REQUESTED_LIFETIME: Duration = Duration::from_secs(5);

/// The tier's lifetime, shortened by the request's optional `expires_in` (seconds; an infergate extension, as
/// Deepgram's `ttl_seconds` and AssemblyAI's `expires_in`): a client may ask for a shorter-lived token than its
/// tier gives, never a longer one (a longer ask gets the tier's), and never under [`MIN_REQUESTED_LIFETIME`].
fn shortened(tier: Duration, expires_in: Option<&str>) -> Result<Duration, OAuthError> {
    let Some(asked) = expires_in else { return Ok(tier) };
    let seconds: u64 = asked.trim().parse().map_err(|_| {
        OAuthError::invalid_request("expires_in must be a whole number of seconds (the token's lifetime), or omitted")
    })?;
    if seconds < MIN_REQUESTED_LIFETIME.as_secs() {
        return Err(OAuthError::invalid_request(format!(
            "expires_in must be at least {} seconds",
            MIN_REQUESTED_LIFETIME.as_secs()
        )));
    }
    Ok(tier.min(Duration::from_secs(seconds)))
}

/// The longest end-user id accepted: ids are the app's own (a UUID, an account number, a hashed email).
pub const MAX_END_USER_BYTES: usize = 128;

/// `end_user`: the app's id for the user the token is for (RFC 8693's actor). It travels in the token's `act`
/// claim and is hashed before it reaches a budget, a metric or a log line.
fn end_user(asked: Option<&str>) -> Result<Option<String>, OAuthError> {
    let Some(user) = asked else { return Ok(None) };
    if user.is_empty() || user.len() > MAX_END_USER_BYTES || user.chars().any(char::is_control) {
        return Err(OAuthError::invalid_request(format!(
            "end_user must be 1 to {MAX_END_USER_BYTES} bytes of printable text (the app's id for its user), or \
             omitted"
        )));
    }
    Ok(Some(user.to_owned()))
}

/// `max_audio_seconds`: a per-request and per-stream audio cap for the token, below the endpoint's own.
fn max_audio_seconds(asked: Option<&str>) -> Result<Option<u32>, OAuthError> {
    let Some(asked) = asked else { return Ok(None) };
    match asked.trim().parse::<u32>() {
        Ok(seconds) if seconds >= 1 => Ok(Some(seconds)),
        _ => Err(OAuthError::invalid_request(
            "max_audio_seconds must be a whole number of seconds, at least 1 (it caps each request and stream), or \
             omitted",
        )),
    }
}

/// `codecs`: the audio formats the token may send, space- or comma-separated (`pcm16 wav flac mp3 ogg webm mp4`).
fn codecs(asked: Option<&str>) -> Result<Option<BTreeSet<String>>, OAuthError> {
    let Some(asked) = asked else { return Ok(None) };
    let known =
        [Codec::Pcm16, Codec::Wav, Codec::Flac, Codec::Mp3, Codec::Ogg, Codec::Webm, Codec::Mp4].map(codec_name);
    let mut out = BTreeSet::new();
    for name in asked.split([' ', ',']).filter(|n| !n.is_empty()) {
        let Some(name) = known.iter().find(|k| k.eq_ignore_ascii_case(name)) else {
            return Err(OAuthError::invalid_request(format!(
                "codecs: {:?} is not a codec this gateway knows; use any of: {}",
                name.chars().take(32).collect::<String>(),
                known.join(", ")
            )));
        };
        out.insert((*name).to_owned());
    }
    if out.is_empty() {
        return Err(OAuthError::invalid_request("codecs is empty; name at least one codec, or omit it"));
    }
    Ok(Some(out))
}

/// What the policy lets the key reach: each scoped endpoint's model with the policy's features on it.
fn allowed(snapshot: &Snapshot, policy: &infergate_gate::snapshot::PolicyConfig) -> Allowed {
    policy.scopes.iter().fold(Allowed::new(), |allowed, (endpoint, features)| {
        allowed.model(snapshot.endpoint(*endpoint).shard.model.clone(), features.iter().map(|f| f.as_str()))
    })
}

/// Decides a client-credentials request at `now`, against one snapshot.
pub fn client_credentials(
    gateway: &Gateway,
    request: &TokenRequest<'_>,
    outcome: &mut RequestOutcome,
    now: DateTime<Utc>,
) -> Result<Issued, OAuthError> {
    match field(request.form, "grant_type")? {
        None => return Err(OAuthError::invalid_request("grant_type is missing; send grant_type=client_credentials")),
        Some("client_credentials") => {}
        Some(_) => {
            return Err(OAuthError::new(
                400,
                "unsupported_grant_type",
                "this endpoint issues tokens for grant_type=client_credentials only",
            ));
        }
    }
    let (client_id, secret) = client_credentials_of(request)?;
    let secret = secret.trim();
    if infergate_gate::token::looks_like_token(secret) {
        return Err(OAuthError::invalid_client("client_secret must be an API key, not a token; refresh with the key"));
    }
    let snapshot = gateway.snapshot();
    let identity = admission::authenticate(&snapshot, secret, now)
        .and_then(|identity| {
            admission::check_client_certificate(&identity.policy, outcome.client_cert.as_deref())?;
            Ok(identity)
        })
        .map_err(|refusal| {
            if !matches!(refusal.code, RefusalCode::MalformedKey | RefusalCode::BadChecksum | RefusalCode::UnknownKey) {
                outcome.key = Some(infergate_gate::snapshot::KeyRef::of(&infergate_crds::key::KeyDigest::of(secret)));
            }
            gateway.refused(&refusal, outcome);
            OAuthError::from_refusal(&refusal)
        })?;
    outcome.identity(&identity);
    // The id is public; comparing it is not a secret check, the key itself was compared in constant time.
    if client_id.trim() != identity.key.to_string() {
        return Err(OAuthError::invalid_client(
            "client_id is not the id of this API key; use the key id (kid_...) shown with the key",
        ));
    }
    let audience = match field(request.form, "audience")? {
        Some(asked) if asked != gateway.tokens.audience() => {
            return Err(OAuthError::invalid_request(format!(
                "audience must be {:?} (the only audience this gateway issues for), or omitted",
                gateway.tokens.audience()
            )));
        }
        _ => gateway.tokens.audience().to_owned(),
    };
    let policy = &identity.policy;
    let allowed = allowed(&snapshot, policy);
    let scope = narrow(field(request.form, "scope")?.unwrap_or(""), &allowed).map_err(|e| match e {
        infergate_token::TokenError::InvalidScope(why) => OAuthError::new(400, "invalid_scope", why),
        other => OAuthError::new(400, "invalid_scope", other.to_string()),
    })?;
    let key_valid_until = match snapshot.key_by_digest(&identity.digest).map(|r| r.status) {
        Some(KeyStatus::Active { valid_until, .. }) => valid_until,
        _ => None,
    };
    let tier_lifetime =
        Duration::from_secs(policy.tier.token_lifetime_seconds.unwrap_or(DEFAULT_TOKEN_LIFETIME_SECONDS));
    let wanted = shortened(tier_lifetime.min(MAX_LIFETIME), field(request.form, "expires_in")?)?;
    let lifetime = lifetime_within(now, wanted, [key_valid_until, policy.expires_at]).ok_or_else(|| {
        OAuthError::new(400, "invalid_grant", "the key expires in under a second; use the policy's current key")
    })?;
    let grant = Grant {
        issuer: gateway.tokens.issuer().to_owned(),
        audience,
        policy: policy.name.to_string(),
        key_id: identity.key.to_string(),
        tier: policy.tier.name.clone(),
        scope,
        max_audio_seconds: max_audio_seconds(field(request.form, "max_audio_seconds")?)?,
        codecs: codecs(field(request.form, "codecs")?)?,
        end_user: end_user(field(request.form, "end_user")?)?,
        not_before: None,
    };
    let minted = gateway
        .tokens
        .mint(&grant, now, lifetime)
        .ok_or_else(|| {
            OAuthError::new(503, "temporarily_unavailable", "this agent has no signing key yet; retry shortly")
        })?
        .map_err(|e| {
            OAuthError::new(500, "server_error", format!("the token could not be signed ({})", e.category()))
        })?;
    // The response's scope: what the token grants, spelled out even when it does not narrow (every model the
    // policy reaches), so the client sees what it can do.
    let scope = if grant.scope == infergate_token::Granted::everything() {
        policy
            .scopes
            .iter()
            .map(|(e, _)| format!("model:{}", snapshot.endpoint(*e).shard.model))
            .collect::<Vec<_>>()
            .join(" ")
    } else {
        grant.scope.to_string()
    };
    outcome.token(&minted.jti);
    Ok(Issued { minted, scope })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn basic(id: &str, secret: &str) -> String {
        use base64::Engine;
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}")))
    }

    #[test]
    fn basic_and_form_credentials_read_the_same() {
        let fields = form(&[("grant_type", "client_credentials")]);
        let header = basic("kid_00000000000000ff", "sk_test_x");
        let via_basic = TokenRequest { authorization: Some(&header), form: &fields };
        let posted = form(&[("client_id", "kid_00000000000000ff"), ("client_secret", "sk_test_x")]);
        let via_form = TokenRequest { authorization: None, form: &posted };
        assert_eq!(client_credentials_of(&via_basic).unwrap(), client_credentials_of(&via_form).unwrap());
    }

    #[test]
    fn basic_credentials_are_form_decoded() {
        let header = basic("kid%5F1", "a+b%3Ac");
        assert_eq!(basic_credentials(&header).unwrap(), Some(("kid_1".into(), "a b:c".into())));
        assert_eq!(basic_credentials("Bearer x").unwrap(), None);
        assert_eq!(basic_credentials("Basic !!!").unwrap_err().error, "invalid_client");
    }

    #[test]
    fn two_methods_or_none_are_refused() {
        let header = basic("kid_1", "sk");
        let both = form(&[("client_id", "kid_1"), ("client_secret", "sk")]);
        let request = TokenRequest { authorization: Some(&header), form: &both };
        assert_eq!(client_credentials_of(&request).unwrap_err().error, "invalid_request");
        let request = TokenRequest { authorization: None, form: &[] };
        let none = client_credentials_of(&request).unwrap_err();
        assert_eq!((none.status, none.error), (401, "invalid_client"));
    }

    #[test]
    fn expires_in_only_shortens_and_has_a_floor() {
        let tier = Duration::from_secs(600);
        assert_eq!(shortened(tier, None).unwrap(), tier);
        assert_eq!(shortened(tier, Some("10")).unwrap(), Duration::from_secs(10));
        assert_eq!(shortened(tier, Some("3600")).unwrap(), tier, "a longer ask gets the tier's lifetime");
        for bad in ["4", "0", "-5", "10.5", "ten"] {
            assert_eq!(shortened(tier, Some(bad)).unwrap_err().error, "invalid_request", "{bad}");
        }
    }

    #[test]
    fn ml_claims_are_checked_before_minting() {
        assert_eq!(end_user(None).unwrap(), None);
        assert_eq!(end_user(Some("user-42")).unwrap().as_deref(), Some("user-42"));
        for bad in ["", "a\nb", &"x".repeat(MAX_END_USER_BYTES + 1)] {
            assert_eq!(end_user(Some(bad)).unwrap_err().error, "invalid_request");
        }
        assert_eq!(max_audio_seconds(Some("30")).unwrap(), Some(30));
        for bad in ["0", "-1", "1.5", "lots"] {
            assert_eq!(max_audio_seconds(Some(bad)).unwrap_err().error, "invalid_request", "{bad}");
        }
        let both = codecs(Some("WAV, pcm16")).unwrap().unwrap();
        assert_eq!(both.into_iter().collect::<Vec<_>>(), ["pcm16", "wav"]);
        assert_eq!(codecs(Some("aac")).unwrap_err().error, "invalid_request");
        assert_eq!(codecs(Some(" , ")).unwrap_err().error, "invalid_request");
    }

    #[test]
    fn a_repeated_field_is_invalid_request() {
        let fields = form(&[("scope", "model:a"), ("scope", "model:b")]);
        assert_eq!(field(&fields, "scope").unwrap_err().error, "invalid_request");
    }

    #[test]
    fn key_refusals_map_to_rfc_errors_and_keep_their_code() {
        let revoked = OAuthError::from_refusal(&Refusal::new(RefusalCode::KeyRevoked, "key kid_1 was revoked"));
        assert_eq!(
            revoked.to_json(),
            serde_json::json!({"error": "invalid_client", "error_description": "key kid_1 was revoked", "code": "key_revoked"})
        );
        assert_eq!(revoked.status, 401);
        let suspended = OAuthError::from_refusal(&Refusal::new(RefusalCode::KeySuspended, "suspended"));
        assert_eq!((suspended.status, suspended.error), (400, "invalid_grant"));
    }
}
