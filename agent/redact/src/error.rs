//! Errors from reading a policy. The pattern layer cannot fail (any text has some redaction); an entity
//! model can, and its error is [`crate::ModelError`].

/// A policy named something this crate does not know. The messages echo the configured name (policy
/// text, never transcript text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error(
        "unknown redaction entity or group `{0}`: use a group (pci, ssn, pii, phi, numbers) or an entity type \
         such as CREDIT_CARD, US_SSN, IBAN_CODE, EMAIL_ADDRESS, PHONE_NUMBER, IP_ADDRESS, DATE_OF_BIRTH, NUMBERS, \
         PERSON, LOCATION, STREET_ADDRESS, ZIP_CODE"
    )]
    UnknownEntity(String),
    #[error("unknown redaction style `{0}`: use entity, marker, mask, hash or remove")]
    UnknownStyle(String),
}

impl PolicyError {
    /// A fixed label for metrics.
    pub fn category(&self) -> &'static str {
        match self {
            PolicyError::UnknownEntity(_) => "unknown_entity",
            PolicyError::UnknownStyle(_) => "unknown_style",
        }
    }
}
