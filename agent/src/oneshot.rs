//! The one-shot application service: every request that is one call and one answer (transcribe, embed,
//! verify, vad; the model list; stream tickets), whichever door it came through.
//!
//! ```text
//!  door (body read, credential checked) ─▶ run(identity, OneShot, &mut outcome)
//!      ─▶ authorize (scope, feature, Origin) ─▶ audio::inspect + codec + maxAudioSeconds
//!      ─▶ pre-charge: try_charge ─┬─ ok ──────────────────────────────────────────────▶ backend.call
//!                                 └─ rate_limited ─▶ infergate_gpu::route(saturated, fallback)
//!                                        ├─ Fallback(f): charged on f ─────────────────▶ backend(f).call
//!                                        └─ Refuse: wait in the primary's queue, or 429
//!      ─▶ Gateway::settle(pre-charge, measured) ─▶ Served { body, gpu_seconds, fallback }
//!         backend failure ─▶ refund, refusal recorded (metric + audit line)
//! ```
//! Every refusal is recorded here, once, through [`Gateway::refused`]; the door only turns it into its
//! protocol's form.
use crate::backend::{BackendRequest, Backends};
use crate::builtin;
use crate::gateway::Gateway;
use crate::outcome::RequestOutcome;
use crate::redaction;
use bytes::Bytes;
use infergate_crds::endpoint::{Codec, Feature};
use infergate_gate::admission::{self, Grant, Identity, Request, TokenGrant};
use infergate_gate::audio;
use infergate_gate::limiter::{Charge, Limiter};
use infergate_gate::refusal::{Refusal, RefusalCode};
use infergate_gate::snapshot::{EndpointConfig, PolicyConfig, Snapshot};
use std::sync::Arc;
use tracing::Instrument as _;

/// A one-shot request after the door has read the body.
pub struct OneShot<'a> {
    pub model: &'a str,
    pub feature: Feature,
    pub origin: Option<&'a str>,
    pub audio: Bytes,
    pub filename: String,
    pub content_type: String,
    pub fields: Vec<(String, String)>,
    /// A `verify` with a client-computed embedding: no audio to size or check, charged the endpoint's minimum.
    pub without_audio: bool,
}

/// What the backend answered, and what it cost.
pub struct Served {
    pub body: Bytes,
    pub content_type: String,
    pub text: Option<String>,
    pub audio_seconds: f64,
    pub gpu_seconds: f64,
    /// `namespace/name` of the fallback endpoint that served the request, when the endpoint was saturated.
    pub fallback: Option<String>,
    /// Redactions by entity type, when a redaction rule applied (`x-infergate-redactions`).
    pub redactions: Option<crate::redaction::Counts>,
    /// The redacted audio (16 kHz PCM16 WAV), when audio redaction applied to a JSON answer.
    pub redacted_audio: Option<Vec<u8>>,
}

/// Scope, audio checks, pre-charge (queued, or on the fallback), backend call, settlement.
pub async fn run(
    gateway: &Arc<Gateway>,
    identity: Identity,
    req: OneShot<'_>,
    outcome: &mut RequestOutcome,
) -> Result<Served, Refusal> {
    let snapshot = gateway.snapshot();
    let request = Request { model: req.model, feature: req.feature, origin: req.origin };
    outcome.identity(&identity);
    let grant = admission::decide(&snapshot, &identity, &request, infergate_gate::clock::now())
        .inspect_err(|r| gateway.refused(r, outcome))?;
    outcome.grant(&grant);
    // Held until this request's future ends (served, refused, or dropped when the client goes away).
    let _in_flight = gateway.one_shot_slot(grant.key()).inspect_err(|r| gateway.refused(r, outcome))?;
    let info = size_audio(&grant, &req).inspect_err(|r| gateway.refused(r, outcome))?;
    outcome.audio_seconds = info.seconds;
    // A malformed redaction ask is refused before anything is charged.
    let ask = match req.feature {
        Feature::Transcribe => redaction::oneshot::ask_of(&req.fields).inspect_err(|r| gateway.refused(r, outcome))?,
        _ => redaction::Ask::default(),
    };
    let queued_at = std::time::Instant::now();
    let (grant, charge, fallback) =
        pre_charge(gateway, &snapshot, grant, info.seconds).await.inspect_err(|r| gateway.refused(r, outcome))?;
    outcome.grant(&grant);
    // From here the pre-charge is settled exactly once, also when the client goes away and this future is dropped.
    let mut pending = PendingCharge { gateway, grant: &grant, charge: Some(charge), dispatched: None };
    let backend = match gateway.backends.for_endpoint(&grant.endpoint.shard) {
        Ok(backend) => backend,
        Err(refusal) => {
            pending.refund();
            gateway.refused(&refusal, outcome);
            return Err(refusal);
        }
    };
    gateway.metrics.queue_wait.observe(queued_at.elapsed().as_secs_f64());
    gateway.admitted(&grant);
    let mut fields = req.fields;
    // Decided on the endpoint that serves the request (the fallback may redact more than the primary).
    let prepared = match req.feature {
        Feature::Transcribe => match redaction::oneshot::prepare(&gateway.redaction(), &grant, &ask, &mut fields) {
            Ok(prepared) => prepared,
            Err(refusal) => {
                pending.refund();
                gateway.refused(&refusal, outcome);
                return Err(refusal);
            }
        },
        _ => None,
    };
    let upload = prepared.as_ref().map(|_| req.audio.clone());
    if req.feature == Feature::Verify {
        let threshold = grant.endpoint.shard.verify_threshold.unwrap_or(builtin::DEFAULT_VERIFY_THRESHOLD);
        fields.retain(|(n, _)| n != builtin::FIELD_THRESHOLD);
        fields.push((builtin::FIELD_THRESHOLD.to_string(), threshold.to_string()));
    }
    let (span, traceparent) = outcome.backend_span(backend.kind());
    let call = BackendRequest {
        feature: req.feature,
        model: Backends::backend_model(&grant.endpoint.shard),
        audio: req.audio,
        filename: req.filename.clone(),
        content_type: req.content_type,
        fields,
        request_id: outcome.request_id.clone(),
        traceparent,
        want_words: false,
    };
    let filename = req.filename;
    let timer = std::time::Instant::now();
    pending.dispatched = Some(timer);
    let result = backend.call(call).instrument(span.clone()).await;
    gateway.metrics.backend_seconds.observe(timer.elapsed().as_secs_f64());
    match result {
        Ok(response) => {
            let charged = pending.settle(response.settlement(&grant));
            span.record("gpu_seconds", charged);
            outcome.gpu_seconds = charged;
            let mut served = Served {
                body: response.body.clone(),
                content_type: response.content_type.clone(),
                text: response.text.clone(),
                audio_seconds: info.seconds,
                gpu_seconds: charged,
                fallback,
                redactions: None,
                redacted_audio: None,
            };
            if let (Some(prepared), Some(upload)) = (&prepared, &upload) {
                // The backend's work is done and paid for; an answer that cannot be redacted is not sent.
                let redone = redaction::oneshot::finish(prepared, &response, upload, &filename)
                    .inspect_err(|r| gateway.refused(r, outcome))?;
                gateway.metrics.redacted(&redone.counts);
                served.body = redone.body;
                served.content_type = redone.content_type;
                served.text = Some(redone.text);
                served.redactions = Some(redone.counts);
                served.redacted_audio = redone.audio;
            }
            Ok(served)
        }
        Err(err) => {
            if err.reached_backend() {
                // The backend ran (or hung) on the request: it pays for the time it held the backend.
                let charged = pending.settle(Some(timer.elapsed().as_secs_f64()));
                span.record("gpu_seconds", charged);
                outcome.gpu_seconds = charged;
            } else {
                // Nothing ran: the pre-charge goes back.
                pending.refund();
            }
            let refusal = err.to_refusal();
            gateway.refused(&refusal, outcome);
            Err(refusal)
        }
    }
}

/// A pre-charge not yet settled. Dropped unsettled (the client went away and the request's future with it), it
/// settles itself: refunded when the backend was never called, else charged the time since dispatch, since the
/// backend may have worked on the request until then.
struct PendingCharge<'a> {
    gateway: &'a Gateway,
    grant: &'a Grant,
    charge: Option<Charge>,
    /// When the backend call began.
    dispatched: Option<std::time::Instant>,
}

impl PendingCharge<'_> {
    /// Settles against the measured GPU time; returns what was charged.
    fn settle(&mut self, measured_gpu_seconds: Option<f64>) -> f64 {
        let Some(charge) = self.charge.take() else { return 0.0 };
        // The endpoint's minimum holds however short the work was, failed or not (docs/security.md).
        let minimum = self.grant.endpoint.shard.cost.minimum_gpu_seconds;
        let measured_gpu_seconds = measured_gpu_seconds.map(|m| if m.is_finite() { m.max(minimum) } else { m });
        let charged = self.gateway.settle(charge, measured_gpu_seconds).charged;
        self.gateway.charged(self.grant, charged);
        charged
    }

    fn refund(&mut self) {
        if let Some(charge) = self.charge.take() {
            self.gateway.limiter.refund(charge);
        }
    }
}

impl Drop for PendingCharge<'_> {
    fn drop(&mut self) {
        match self.dispatched {
            Some(at) => {
                self.settle(Some(at.elapsed().as_secs_f64()));
            }
            None => self.refund(),
        }
    }
}

/// The audio's length and format against the endpoint's limits.
fn size_audio(grant: &Grant, req: &OneShot<'_>) -> Result<audio::AudioInfo, Refusal> {
    let limits = &grant.endpoint.shard.limits;
    let info = if req.without_audio {
        audio::AudioInfo { codec: Codec::Pcm16, seconds: 0.0, measure: audio::Measure::Exact }
    } else {
        let mut info = audio::inspect(&req.audio, &req.filename)?;
        audio::check_codec(&info, &limits.codecs)?;
        if let Some(token) = &grant.identity.token {
            token.check_codec(audio::codec_name(info.codec))?;
        }
        if info.measure == audio::Measure::Unknown {
            // The container does not say how long it is: pre-charge the most this endpoint accepts; the settlement
            // against the measured time returns what was not used.
            info.seconds = limits.max_audio_seconds;
        }
        info
    };
    let (cap, by_token) = TokenGrant::audio_cap(grant.identity.token.as_deref(), limits.max_audio_seconds);
    if info.seconds > cap {
        let whose = if by_token { "session token's" } else { "endpoint's" };
        return Err(Refusal::new(
            RefusalCode::AudioTooLong,
            format!("audio of {:.1} s exceeds the {whose} maximum of {cap} s; split it", info.seconds),
        ));
    }
    Ok(info)
}

/// The pre-charge, and where the request is served: the primary, its fallback when the primary is saturated
/// for this tier, or the primary after a wait in its queue. Returns the grant that pays.
async fn pre_charge(
    gateway: &Gateway,
    snapshot: &Snapshot,
    grant: Grant,
    audio_seconds: f64,
) -> Result<(Grant, Charge, Option<String>), Refusal> {
    let estimate = Limiter::estimate(&grant, audio_seconds);
    // The in-process store's answer without building the async charge's futures: see `try_charge_now`.
    let first = match gateway.limiter.try_charge_now(&grant, estimate) {
        Some(decided) => decided,
        None => gateway.limiter.try_charge(&grant, estimate).await,
    };
    let saturated = matches!(&first, Err(refusal) if refusal.code == RefusalCode::RateLimited);
    let fallback = grant
        .endpoint
        .shard
        .fallback
        .as_ref()
        .and_then(|name| snapshot.endpoints().iter().find(|e| e.shard.endpoint == *name));
    // `route` asks about the fallback exactly when the primary is saturated and a fallback exists: charge it then.
    let mut taken = match (saturated, fallback) {
        (true, Some(endpoint)) => fallback_charge(gateway, snapshot, &grant, endpoint, audio_seconds).await,
        _ => None,
    };
    let route = infergate_gpu::route(saturated, fallback, |_| taken.is_none());
    match route {
        infergate_gpu::Route::Primary => first.map(|charge| (grant, charge, None)),
        infergate_gpu::Route::Fallback(_) => {
            let (served, charge) = taken.take().expect("the route is Fallback only when the fallback paid");
            let label = served.endpoint.shard.endpoint.to_string();
            Ok((served, charge, Some(label)))
        }
        // No fallback, or it cannot pay either: wait in the primary's queue, or get the 429.
        infergate_gpu::Route::Refuse(_) => {
            let charge = gateway.limiter.charge(&grant, estimate).await?;
            Ok((grant, charge, None))
        }
    }
}

/// Degradation: charges the request on the primary's fallback when it offers the feature and its bucket
/// (same key, same tier) can pay. The caller's scope is not re-checked on the fallback: the endpoint's owner
/// chose it as this endpoint's overflow, and the key still pays from its own bucket on it.
async fn fallback_charge(
    gateway: &Gateway,
    snapshot: &Snapshot,
    grant: &Grant,
    endpoint: &Arc<EndpointConfig>,
    audio_seconds: f64,
) -> Option<(Grant, Charge)> {
    if !endpoint.features.contains(grant.feature) {
        return None;
    }
    let candidate = Grant {
        identity: grant.identity.clone(),
        endpoint: Arc::clone(endpoint),
        feature: grant.feature,
        limits: snapshot.limits(&grant.identity.policy, endpoint),
    };
    let charge = gateway.limiter.try_charge(&candidate, Limiter::estimate(&candidate, audio_seconds)).await.ok()?;
    Some((candidate, charge))
}

/// One model the key may use: its name, the features it may use on it, and the endpoint's label.
pub struct ModelEntry {
    pub id: String,
    pub features: Vec<&'static str>,
    pub endpoint: String,
}

/// The models (and features) the caller may use: the key's policy, narrowed by the session token's scope when a
/// token was presented (a model none of whose features the token allows is not listed).
pub fn models(gateway: &Gateway, identity: &Identity) -> Vec<ModelEntry> {
    let snapshot = gateway.snapshot();
    identity
        .policy
        .scopes
        .iter()
        .filter_map(|(index, features)| {
            let endpoint = snapshot.endpoints().get(*index as usize)?;
            let model = &endpoint.shard.model;
            let token_allows = |f: &Feature| identity.token.as_ref().is_none_or(|t| t.scope.allows(model, f.as_str()));
            let allowed: Vec<_> = endpoint
                .features
                .iter()
                .filter(|f| features.contains(*f) && token_allows(f))
                .map(Feature::as_str)
                .collect();
            (!allowed.is_empty()).then(|| ModelEntry {
                id: model.clone(),
                features: allowed,
                endpoint: endpoint.label.clone(),
            })
        })
        .collect()
}

/// Mints a stream ticket. A browser page that may not use this key must not be able to mint tickets for it.
pub fn issue_ticket(
    gateway: &Gateway,
    identity: &Identity,
    origin: Option<&str>,
    outcome: &mut RequestOutcome,
) -> Result<String, Refusal> {
    if let Some(o) = origin
        && !identity.policy.origin_allowed(o)
    {
        let refusal = Refusal::new(
            RefusalCode::OriginNotAllowed,
            format!(
                "browser Origin is not allowed for this key; add it to policy {} spec.allowedOrigins",
                identity.policy.name
            ),
        );
        gateway.refused(&refusal, outcome);
        return Err(refusal);
    }
    gateway.tickets.issue(identity)
}

/// Shape checks on a built-in request that need no model: which fields a feature takes, embedding lengths,
/// and the policy's client-embedding switch.
pub fn check_builtin_fields(
    fields: &[(String, String)],
    has_file: bool,
    feature: Feature,
    policy: &PolicyConfig,
) -> Result<(), Refusal> {
    let field = |name: &str| fields.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
    let embedding = field(builtin::FIELD_EMBEDDING);
    if embedding.is_some() {
        if feature != Feature::Verify {
            return Err(Refusal::bad_request(
                "`embedding` is accepted only by /v1/audio/verify, in place of the audio",
            ));
        }
        if !policy.allow_client_embeddings {
            return Err(Refusal::new(
                RefusalCode::ClientEmbeddingNotAllowed,
                format!(
                    "policy {} does not accept client-computed embeddings; send the audio as `file`, or set allowClientEmbeddings: true on the policy",
                    policy.name
                ),
            ));
        }
        if has_file {
            return Err(Refusal::bad_request("send either `file` or `embedding`, not both"));
        }
    }
    for name in [builtin::FIELD_EMBEDDING, builtin::FIELD_REFERENCE] {
        builtin::parse_embedding(field(name), name).map_err(|e| e.to_refusal())?;
    }
    if feature == Feature::Verify && field(builtin::FIELD_REFERENCE).is_none() {
        return Err(Refusal::bad_request("missing `reference_embedding`: the 256-float embedding to verify against"));
    }
    Ok(())
}
