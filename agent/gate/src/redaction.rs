//! Redaction rules as the snapshot holds them: parsed once per config change from the shards'
//! `spec.redaction`, combined per request (endpoint, then policy, then the request's own ask), each step only
//! ever adding redaction.
use infergate_crds::redaction::{AudioRedaction, Redaction, RedactionStyle};
use infergate_redact::{EntitySet, Policy, Style};

/// What one request gets: the text policy, and what happens to the audio.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    pub policy: Policy,
    pub audio: AudioRedaction,
}

impl Rule {
    /// The stricter combination of two rules: [`Policy::tighten`] for the text, the stronger audio treatment.
    #[must_use]
    pub fn tighten(&self, other: &Rule) -> Rule {
        Rule { policy: self.policy.tighten(&other.policy), audio: self.audio.stronger(other.audio) }
    }
}

/// A shard's `spec.redaction`, parsed. `Invalid` keeps the shard serving but makes every request that would
/// need it fail closed: a name this agent does not know (an operator newer than the agent) must not turn into
/// "redact nothing".
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum Configured {
    #[default]
    Off,
    On(Rule),
    Invalid(String),
}

impl Configured {
    pub fn parse(spec: Option<&Redaction>) -> Configured {
        let Some(spec) = spec else { return Configured::Off };
        match rule_of(&spec.entities, spec.style, spec.keep_last, spec.audio) {
            Ok(rule) => Configured::On(rule),
            Err(message) => Configured::Invalid(message),
        }
    }

    /// `self` tightened by `other`; an invalid side makes the result invalid.
    #[must_use]
    pub fn and(&self, other: &Configured) -> Configured {
        match (self, other) {
            (Configured::Invalid(m), _) | (_, Configured::Invalid(m)) => Configured::Invalid(m.clone()),
            (Configured::Off, x) | (x, Configured::Off) => x.clone(),
            (Configured::On(a), Configured::On(b)) => Configured::On(a.tighten(b)),
        }
    }
}

/// A rule from its parts, as the CRD and a request's fields give them. The error names what to fix.
pub fn rule_of(
    entities: &[String],
    style: Option<RedactionStyle>,
    keep_last: Option<u8>,
    audio: Option<AudioRedaction>,
) -> Result<Rule, String> {
    let set = EntitySet::from_names(entities.iter().map(String::as_str)).map_err(|e| e.to_string())?;
    let mut policy = Policy::new(set);
    if let Some(style) = style {
        policy = policy.style(style_of(style));
    }
    if let Some(keep) = keep_last {
        policy = policy.keep_last(keep);
    }
    Ok(Rule { policy, audio: audio.unwrap_or_default() })
}

/// A rule that redacts nothing by itself (no entity types) but may still ask for a stronger style or audio
/// treatment, for requests that tighten only those.
pub fn empty_rule() -> Rule {
    Rule { policy: Policy::new(EntitySet::EMPTY), audio: AudioRedaction::Off }
}

pub fn style_of(style: RedactionStyle) -> Style {
    match style {
        RedactionStyle::Entity => Style::Entity,
        RedactionStyle::Marker => Style::Marker,
        RedactionStyle::Mask => Style::Mask,
        RedactionStyle::Hash => Style::Hash,
        RedactionStyle::Remove => Style::Remove,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(entities: &[&str], style: Option<RedactionStyle>, audio: Option<AudioRedaction>) -> Redaction {
        Redaction { entities: entities.iter().map(|s| s.to_string()).collect(), style, keep_last: None, audio }
    }

    #[test]
    fn a_policy_only_tightens_the_endpoint() {
        let endpoint = Configured::parse(Some(&spec(&["pci"], Some(RedactionStyle::Remove), None)));
        let policy =
            Configured::parse(Some(&spec(&["US_SSN"], Some(RedactionStyle::Mask), Some(AudioRedaction::Beep))));
        let Configured::On(rule) = endpoint.and(&policy) else { panic!("combined") };
        assert!(rule.policy.entities.covers(EntitySet::PCI) && rule.policy.entities.covers(EntitySet::SSN));
        assert_eq!(rule.policy.style, Style::Remove, "mask is weaker than the endpoint's remove");
        assert_eq!(rule.audio, AudioRedaction::Beep);
        assert_eq!(endpoint.and(&Configured::Off), endpoint);
        assert_eq!(Configured::Off.and(&Configured::Off), Configured::Off);
    }

    #[test]
    fn an_unknown_name_fails_closed_with_the_fix() {
        let bad = Configured::parse(Some(&spec(&["pci", "FINGERPRINT"], None, None)));
        let Configured::Invalid(message) = &bad else { panic!("{bad:?}") };
        assert!(message.contains("FINGERPRINT") && message.contains("pci"), "{message}");
        assert!(matches!(Configured::Off.and(&bad), Configured::Invalid(_)));
    }
}
