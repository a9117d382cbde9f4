//! Prints one minted token with the JWKS and discovery document that verify it, as one JSON object, for
//! checks with other JWT libraries (`pyjwt_verify.py` beside this file):
//! `cargo run -p infergate-token --example mint_sample | python3 agent/token/examples/pyjwt_verify.py`.
use chrono::Utc;
use infergate_token::{Grant, Granted, KeyRing, OpenIdConfiguration, RotationPlan, SigningKey, mint};
use std::time::Duration;

fn main() {
    let now = Utc::now();
    let issuer = "https://gw.example.com";
    // Two keys, as after a rotation, so the verifier has to pick by `kid`.
    let mut ring = KeyRing::bootstrap(now - chrono::Duration::days(7));
    let plan = RotationPlan { new_key_activates_at: Some(now), drop: vec![], next_check: now };
    ring.apply(&plan, now, SigningKey::generate);
    let set = |items: &[&str]| Some(items.iter().map(|s| s.to_string()).collect());
    let grant = Grant {
        issuer: issuer.into(),
        audience: "infergate".into(),
        policy: "voice-app/mobile".into(),
        key_id: "kid_3f2a9c0d1e4b5a67".into(),
        tier: "standard".into(),
        scope: Granted { models: set(&["whisper-small"]), features: set(&["transcribe"]) },
        max_audio_seconds: Some(600),
        codecs: set(&["pcm16", "wav"]),
        end_user: Some("user-8d41c2".into()),
        not_before: None,
    };
    let minted = mint(ring.signing_key(now), &grant, now, Duration::from_secs(600)).expect("mints");
    let sample = serde_json::json!({
        "token": minted.token,
        "kid": ring.signing_key(now).kid(),
        "jwks": ring.jwks(),
        "openid_configuration": OpenIdConfiguration::new(issuer, []),
        "audience": "infergate",
    });
    println!("{sample}");
}
