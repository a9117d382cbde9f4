//! PII redaction in the pipeline: what a request gets, and the engine that applies it.
//!
//! ```text
//!  endpoint spec.redaction ─┐
//!  policy spec.redaction ───┼─ Configured::and (only ever adds) ─▶ Rule ─▶ Engine::redactor (+ hash key, + NER)
//!  request ask (form fields `redact`, `redact_style`, `redact_audio`; stream start `redact`) ─┘
//!  one-shot: backend asked for verbose_json + words ─▶ transcript::redact ─▶ the client's format re-rendered,
//!            `x-infergate-redactions`, `redacted_audio` (audio::mute over the redacted words' times)
//!  streams:  stream::StreamRedaction (hold-back of a trailing number) ─▶ partials, final, audio frames
//! ```
//! Fail closed: when a rule applies but cannot be honoured (an NER type without the NER model, an answer
//! the agent cannot parse, a rule this agent does not know), the request ends with `redaction_failed` and
//! none of the text leaves. Nothing here logs or labels text: counts by entity type only.
pub mod audio;
pub mod oneshot;
pub mod stream;
pub mod transcript;

use infergate_crds::redaction::{AudioRedaction, RedactionStyle};
use infergate_gate::admission::Grant;
use infergate_gate::redaction::{Configured, Rule, empty_rule};
use infergate_gate::refusal::{Refusal, RefusalCode};
use infergate_redact::{Entity, EntityModel, EntitySet, HashKey, Redactor};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Form fields (one-shot) a request uses to ask for more redaction than its endpoint and key give it.
pub const FIELD_REDACT: &str = "redact";
pub const FIELD_STYLE: &str = "redact_style";
pub const FIELD_AUDIO: &str = "redact_audio";

/// What a request asked for on top of its configured redaction.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ask {
    pub entities: Vec<String>,
    pub style: Option<RedactionStyle>,
    pub audio: Option<AudioRedaction>,
}

impl Ask {
    pub fn is_empty(&self) -> bool {
        self.entities.is_empty() && self.style.is_none() && self.audio.is_none()
    }

    /// From the one-shot form fields. `redact` may repeat and takes comma- or space-separated names;
    /// `redact=true` means `pii`. Unknown values are refused with the accepted ones.
    pub fn from_fields(fields: &[(String, String)]) -> Result<Ask, Refusal> {
        let mut ask = Ask::default();
        for (name, value) in fields {
            match name.as_str() {
                FIELD_REDACT => ask.add_entities(value),
                FIELD_STYLE => ask.style = Some(parse_style(value)?),
                FIELD_AUDIO => ask.audio = Some(parse_audio(value)?),
                _ => {}
            }
        }
        Ok(ask)
    }

    pub fn add_entities(&mut self, value: &str) {
        for name in value.split([',', ' ']).map(str::trim).filter(|n| !n.is_empty()) {
            let name = if name.eq_ignore_ascii_case("true") { "pii" } else { name };
            self.entities.push(name.to_string());
        }
    }

    fn rule(&self) -> Result<Rule, Refusal> {
        if self.entities.is_empty() {
            let mut rule = empty_rule();
            if let Some(style) = self.style {
                rule.policy = rule.policy.style(infergate_gate::redaction::style_of(style));
            }
            rule.audio = self.audio.unwrap_or_default();
            return Ok(rule);
        }
        infergate_gate::redaction::rule_of(&self.entities, self.style, None, self.audio)
            .map_err(|m| Refusal::bad_request(format!("`{FIELD_REDACT}`: {m}")))
    }
}

/// A stream start message's `redact`: a list of names (`"pci,ssn"`) or the full ask.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(untagged)]
pub enum AskOption {
    Names(String),
    Full {
        #[serde(default)]
        entities: Vec<String>,
        #[serde(default)]
        style: Option<String>,
        #[serde(default)]
        audio: Option<String>,
    },
}

impl AskOption {
    /// As the one-shot form fields, so one parser ([`Ask::from_fields`]) reads every door's ask.
    pub fn into_fields(self) -> Vec<(String, String)> {
        match self {
            AskOption::Names(names) => vec![(FIELD_REDACT.to_string(), names)],
            AskOption::Full { entities, style, audio } => {
                let mut fields: Vec<(String, String)> =
                    entities.into_iter().map(|e| (FIELD_REDACT.to_string(), e)).collect();
                fields.extend(style.map(|s| (FIELD_STYLE.to_string(), s)));
                fields.extend(audio.map(|a| (FIELD_AUDIO.to_string(), a)));
                fields
            }
        }
    }
}

pub fn parse_style(value: &str) -> Result<RedactionStyle, Refusal> {
    serde_json::from_value(serde_json::Value::String(value.trim().to_ascii_lowercase())).map_err(|_| {
        Refusal::bad_request(format!(
            "`{FIELD_STYLE}` takes entity, marker, mask, hash or remove, got {:?}",
            short(value)
        ))
    })
}

pub fn parse_audio(value: &str) -> Result<AudioRedaction, Refusal> {
    let value = value.trim().to_ascii_lowercase();
    let value = if value == "true" { "silence".to_string() } else { value };
    serde_json::from_value(serde_json::Value::String(value.clone())).map_err(|_| {
        Refusal::bad_request(format!("`{FIELD_AUDIO}` takes off, silence or beep, got {:?}", short(&value)))
    })
}

/// Echoed request values are cut short: they are arbitrary input.
fn short(value: &str) -> String {
    value.chars().take(32).collect()
}

/// Whether a configured entity list names a type only the NER model finds (an unknown name counts: the
/// request will fail closed anyway, and fetching the model is harmless).
pub fn needs_ner(entities: &[String]) -> bool {
    entities.iter().any(|name| match EntitySet::parse_name(name) {
        Ok(set) => EntitySet::NER.iter().any(|e| set.contains(e)),
        Err(_) => true,
    })
}

/// The rule a request gets: its endpoint's, tightened by its policy's, tightened by its own ask. `None` when
/// nothing is to be redacted (no entity types and no audio treatment).
pub fn rule_for(grant: &Grant, ask: &Ask) -> Result<Option<Rule>, Refusal> {
    let configured = grant.endpoint.redaction.and(&grant.identity.policy.redaction);
    let configured = match configured {
        Configured::Invalid(message) => {
            return Err(Refusal::new(
                RefusalCode::RedactionFailed,
                format!("this agent cannot apply the configured redaction ({message}); upgrade the agent"),
            ));
        }
        Configured::Off => None,
        Configured::On(rule) => Some(rule),
    };
    let asked = if ask.is_empty() { None } else { Some(ask.rule()?) };
    let rule = match (configured, asked) {
        (None, None) => return Ok(None),
        (Some(r), None) | (None, Some(r)) => r,
        (Some(a), Some(b)) => a.tighten(&b),
    };
    if rule.policy.entities.is_empty() && rule.audio == AudioRedaction::Off {
        return Ok(None);
    }
    Ok(Some(rule))
}

/// Loads the NER model on first use (it is needed only by rules that name its types).
pub type NerLoader = Box<dyn Fn() -> Result<Arc<dyn EntityModel>, String> + Send + Sync>;

/// What the agent redacts with: the `hash` style's key and the NER model, set at start-up.
#[derive(Default)]
pub struct Engine {
    pub hash_key: Option<HashKey>,
    loader: Option<NerLoader>,
    ner: std::sync::OnceLock<Result<Arc<dyn EntityModel>, String>>,
}

impl Engine {
    pub fn new(hash_key: Option<HashKey>, loader: Option<NerLoader>) -> Engine {
        Engine { hash_key, loader, ner: std::sync::OnceLock::new() }
    }

    /// The `hash` key from `--redaction-hash-key-file`: whitespace around it is dropped (a Secret's value
    /// often ends in a newline); fewer than 16 bytes is refused at start-up rather than used weakly.
    pub fn read_hash_key(path: &std::path::Path) -> anyhow::Result<HashKey> {
        let bytes =
            std::fs::read(path).map_err(|e| anyhow::anyhow!("--redaction-hash-key-file {}: {e}", path.display()))?;
        let trimmed = bytes.trim_ascii();
        anyhow::ensure!(
            trimmed.len() >= 16,
            "--redaction-hash-key-file {} holds {} bytes; use at least 16 random bytes (e.g. `openssl rand -hex 32`)",
            path.display(),
            trimmed.len()
        );
        Ok(HashKey::new(trimmed.to_vec()))
    }

    fn ner(&self) -> Result<Arc<dyn EntityModel>, String> {
        self.ner
            .get_or_init(|| match &self.loader {
                Some(load) => load(),
                None => Err("no models directory".into()),
            })
            .clone()
    }

    /// A redactor for `rule`; refused when the rule names a type only the NER model finds and it is missing.
    pub fn redactor(&self, rule: &Rule) -> Result<Redactor, Refusal> {
        let mut redactor = Redactor::new(rule.policy);
        if let Some(key) = &self.hash_key {
            redactor = redactor.with_hash_key(key.clone());
        }
        let wants_ner = EntitySet::NER.iter().any(|e| rule.policy.entities.contains(e));
        if wants_ner {
            match self.ner() {
                Ok(model) => redactor = redactor.with_model(model),
                Err(why) => {
                    return Err(Refusal::new(
                        RefusalCode::RedactionFailed,
                        format!(
                            "redaction of names and addresses needs the pii-ner model, which this agent cannot use ({why}); run `infergate-agent models fetch --model pii-ner`"
                        ),
                    ));
                }
            }
        }
        Ok(redactor)
    }
}

/// Redactions by entity type, as responses report them and metrics count them.
pub type Counts = BTreeMap<Entity, u32>;

pub fn add_counts(total: &mut Counts, more: &Counts) {
    for (entity, n) in more {
        *total.entry(*entity).or_insert(0) += n;
    }
}

/// `CREDIT_CARD=1, US_SSN=2`, or `none`: the `x-infergate-redactions` header.
pub fn header_value(counts: &Counts) -> String {
    if counts.is_empty() {
        return "none".to_string();
    }
    counts.iter().map(|(e, n)| format!("{}={n}", e.name())).collect::<Vec<_>>().join(", ")
}

/// `{"CREDIT_CARD": 1}` for JSON bodies and stream events.
pub fn counts_json(counts: &Counts) -> serde_json::Value {
    counts.iter().map(|(e, n)| (e.name().to_string(), serde_json::Value::from(*n))).collect()
}

/// The failure of a rule that cannot be honoured on this answer. The message never includes the answer.
pub fn failed(why: &str) -> Refusal {
    Refusal::new(
        RefusalCode::RedactionFailed,
        format!("the transcript could not be redacted as required ({why}); nothing of it was sent"),
    )
}

#[cfg(test)]
mod tests;
