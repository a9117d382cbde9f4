//! `spec.redaction` of InferenceEndpoint and ApiKeyPolicy: which personal data the agent takes out of
//! transcripts (and, optionally, out of the audio under them) before anything leaves the agent.
//!
//! The endpoint sets what every caller gets; a policy (and a request) can only add to it: the agent applies
//! the union of entity types, the stronger style and the stronger audio treatment (`infergate_redact::Policy::
//! tighten`), so no key can opt out of what the endpoint enforces.
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The names `entities` accepts: groups (lower case) and entity types (upper case), as `infergate-redact`
/// defines them. Listed here, not imported, because this crate is the API contract and the CRD schema is
/// generated from it; a test in the agent checks that both lists name the same things.
pub const ENTITY_NAMES: &[&str] = &[
    "pci",
    "ssn",
    "pii",
    "phi",
    "numbers",
    "CREDIT_CARD",
    "US_SSN",
    "IBAN_CODE",
    "EMAIL_ADDRESS",
    "PHONE_NUMBER",
    "IP_ADDRESS",
    "DATE_OF_BIRTH",
    "NUMBERS",
    "PERSON",
    "LOCATION",
    "STREET_ADDRESS",
    "ZIP_CODE",
];

/// What to redact, how, and whether the audio is redacted too.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Redaction {
    /// Groups (`pci`: card numbers; `ssn`; `pii`: every personal type; `phi`: the HIPAA identifiers covered;
    /// `numbers`: any run of three or more numerals) and single entity types (`CREDIT_CARD`, `US_SSN`,
    /// `IBAN_CODE`, `EMAIL_ADDRESS`, `PHONE_NUMBER`, `IP_ADDRESS`, `DATE_OF_BIRTH`, `NUMBERS`, `PERSON`,
    /// `LOCATION`, `STREET_ADDRESS`, `ZIP_CODE`).
    #[schemars(length(min = 1, max = 32), extend("x-kubernetes-validations" = [{
        "rule": "self.all(e, e in ['pci', 'ssn', 'pii', 'phi', 'numbers', 'CREDIT_CARD', 'US_SSN', 'IBAN_CODE', 'EMAIL_ADDRESS', 'PHONE_NUMBER', 'IP_ADDRESS', 'DATE_OF_BIRTH', 'NUMBERS', 'PERSON', 'LOCATION', 'STREET_ADDRESS', 'ZIP_CODE'])",
        "message": "redaction.entities: use groups pci, ssn, pii, phi, numbers or entity types CREDIT_CARD, US_SSN, IBAN_CODE, EMAIL_ADDRESS, PHONE_NUMBER, IP_ADDRESS, DATE_OF_BIRTH, NUMBERS, PERSON, LOCATION, STREET_ADDRESS, ZIP_CODE"
    }]))]
    pub entities: Vec<String>,
    /// How a redacted span is written: `entity` (`[CREDIT_CARD]`, the default), `marker` (`[PERSON_1]`, the same
    /// marker for the same value within a request), `mask` (`****-****-****-1234`), `hash` (a keyed HMAC, so the
    /// same value correlates across requests without being readable; needs the agent's redaction hash key, else
    /// written as `entity`), or `remove`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub style: Option<RedactionStyle>,
    /// Digits `mask` leaves readable at the end (default 4; never more than half of a number's digits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 8))]
    pub keep_last: Option<u8>,
    /// Audio redaction, with word timings (built-in Whisper, or an upstream's `verbose_json` words): `off` (the
    /// default), `silence` or `beep` (a 1 kHz tone) over each redacted word. The redacted audio is returned with
    /// the response (or as binary frames on a stream), never stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio: Option<AudioRedaction>,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RedactionStyle {
    Entity,
    Marker,
    Mask,
    Hash,
    Remove,
}

impl RedactionStyle {
    pub fn as_str(self) -> &'static str {
        match self {
            RedactionStyle::Entity => "entity",
            RedactionStyle::Marker => "marker",
            RedactionStyle::Mask => "mask",
            RedactionStyle::Hash => "hash",
            RedactionStyle::Remove => "remove",
        }
    }
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AudioRedaction {
    #[default]
    Off,
    Silence,
    Beep,
}

impl AudioRedaction {
    pub fn as_str(self) -> &'static str {
        match self {
            AudioRedaction::Off => "off",
            AudioRedaction::Silence => "silence",
            AudioRedaction::Beep => "beep",
        }
    }

    /// The stronger of two: `beep` and `silence` both hide the words; `beep` also shows where something was
    /// taken out, which an audio reviewer expects, so a request asking for `beep` over an endpoint's `silence`
    /// gets `beep`. `off` is the weakest.
    #[must_use]
    pub fn stronger(self, other: AudioRedaction) -> AudioRedaction {
        let rank = |a: AudioRedaction| match a {
            AudioRedaction::Off => 0,
            AudioRedaction::Silence => 1,
            AudioRedaction::Beep => 2,
        };
        if rank(other) > rank(self) { other } else { self }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cel_list_is_the_const_list() {
        let schema = serde_json::to_value(schemars::schema_for!(Redaction)).unwrap();
        let rule = schema["properties"]["entities"]["x-kubernetes-validations"][0]["rule"].as_str().unwrap();
        let quoted: Vec<String> = ENTITY_NAMES.iter().map(|n| format!("'{n}'")).collect();
        assert!(rule.contains(&format!("[{}]", quoted.join(", "))), "{rule}");
        let message = schema["properties"]["entities"]["x-kubernetes-validations"][0]["message"].as_str().unwrap();
        for name in ENTITY_NAMES {
            assert!(message.contains(name), "{name} missing from the message");
        }
    }

    #[test]
    fn audio_strength() {
        use AudioRedaction::*;
        assert_eq!(Off.stronger(Silence), Silence);
        assert_eq!(Beep.stronger(Silence), Beep);
        assert_eq!(Silence.stronger(Off), Silence);
    }

    #[test]
    fn parses_the_documented_shape() {
        let r: Redaction =
            serde_json::from_str(r#"{"entities":["pci","PERSON"],"style":"mask","keepLast":4,"audio":"beep"}"#)
                .unwrap();
        assert_eq!(r.style, Some(RedactionStyle::Mask));
        assert_eq!(r.audio, Some(AudioRedaction::Beep));
        assert!(serde_json::from_str::<Redaction>(r#"{"entities":["pci"],"style":"blur"}"#).is_err());
    }
}
