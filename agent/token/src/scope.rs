//! The `scope` parameter of the token request and what a token grants.
//!
//! ```text
//!  "model:whisper feature:transcribe" ─parse─▶ Scope ─narrow(&Allowed from the key's policy)─▶ Granted ─▶ claims
//! ```
//! Grammar (RFC 6749 section 3.3): items separated by spaces, each `model:<name>` or `feature:<name>`, names
//! made of scope-token characters (visible ASCII but `"` and `\`). An empty request grants what the policy
//! allows. A token only ever narrows: admission still checks the key's policy, so a grant is
//! `token scope ∩ policy scope`, and a dimension the request leaves open ("any model") is not written into the
//! token at all, which keeps tokens short.
use crate::error::TokenError;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// Longest `scope` parameter accepted, and most items in it; beyond them the request is refused unread.
pub const MAX_SCOPE_BYTES: usize = 1024;
pub const MAX_SCOPE_ITEMS: usize = 32;

/// A parsed scope request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scope {
    pub models: BTreeSet<String>,
    pub features: BTreeSet<String>,
}

/// RFC 6749 `scope-token` characters: %x21 / %x23-5B / %x5D-7E.
fn is_scope_char(b: u8) -> bool {
    matches!(b, 0x21 | 0x23..=0x5B | 0x5D..=0x7E)
}

impl Scope {
    pub fn parse(requested: &str) -> Result<Scope, TokenError> {
        if requested.len() > MAX_SCOPE_BYTES {
            return Err(TokenError::InvalidScope(format!("scope is longer than {MAX_SCOPE_BYTES} bytes")));
        }
        let mut scope = Scope::default();
        // Clients differ in how they join items; repeated spaces are harmless, any other whitespace is not a
        // scope character and is refused below.
        for (index, item) in requested.split(' ').filter(|i| !i.is_empty()).enumerate() {
            if index == MAX_SCOPE_ITEMS {
                return Err(TokenError::InvalidScope(format!("more than {MAX_SCOPE_ITEMS} scope items")));
            }
            // Item positions, not contents, for malformed items: the text could be anything.
            let malformed =
                || TokenError::InvalidScope(format!("scope item {} is not model:<name> or feature:<name>", index + 1));
            if !item.bytes().all(is_scope_char) {
                return Err(malformed());
            }
            let (set, name) = match item.split_once(':') {
                Some(("model", name)) => (&mut scope.models, name),
                Some(("feature", name)) => (&mut scope.features, name),
                _ => return Err(malformed()),
            };
            if name.is_empty() {
                return Err(malformed());
            }
            set.insert(name.to_owned());
        }
        Ok(scope)
    }
}

/// What a key's policy allows: the models it reaches and, for each, the features. Built by the agent from the
/// snapshot (the policy's scopes, resolved to model names).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Allowed {
    models: BTreeMap<String, BTreeSet<String>>,
}

impl Allowed {
    pub fn new() -> Self {
        Self::default()
    }
    /// Adds a model and the features the policy allows on it (repeated calls merge).
    pub fn model<F: Into<String>>(mut self, model: impl Into<String>, features: impl IntoIterator<Item = F>) -> Self {
        self.models.entry(model.into()).or_default().extend(features.into_iter().map(Into::into));
        self
    }
    fn features_of<'a>(&'a self, models: impl Iterator<Item = &'a String>) -> BTreeSet<&'a str> {
        models.filter_map(|m| self.models.get(m)).flatten().map(String::as_str).collect()
    }
}

/// What a token grants, on top of the key's policy. `None`: no narrowing in that dimension.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Granted {
    pub models: Option<BTreeSet<String>>,
    pub features: Option<BTreeSet<String>>,
}

/// Checks a `scope` request against what the policy allows. Every requested model must be allowed, and every
/// requested feature allowed on at least one requested model (on any allowed model if none was named): a
/// request for anything else is wider than the key and is `invalid_scope`, never silently trimmed.
pub fn narrow(requested: &str, allowed: &Allowed) -> Result<Granted, TokenError> {
    let scope = Scope::parse(requested)?;
    if let Some(model) = scope.models.iter().find(|m| !allowed.models.contains_key(*m)) {
        return Err(TokenError::InvalidScope(format!("model:{model} is not allowed for this key")));
    }
    let reachable = if scope.models.is_empty() {
        allowed.features_of(allowed.models.keys())
    } else {
        allowed.features_of(scope.models.iter())
    };
    if let Some(feature) = scope.features.iter().find(|f| !reachable.contains(f.as_str())) {
        return Err(TokenError::InvalidScope(format!(
            "feature:{feature} is not allowed for this key on the requested models"
        )));
    }
    let some = |set: BTreeSet<String>| (!set.is_empty()).then_some(set);
    Ok(Granted { models: some(scope.models), features: some(scope.features) })
}

impl Granted {
    /// No narrowing: whatever the key's policy allows.
    pub fn everything() -> Self {
        Self::default()
    }

    /// Whether the token lets this model and feature through (the policy is checked separately).
    pub fn allows(&self, model: &str, feature: &str) -> bool {
        self.models.as_ref().is_none_or(|m| m.contains(model))
            && self.features.as_ref().is_none_or(|f| f.contains(feature))
    }

    /// Whether `self` grants nothing that `other` does not: the rule for an in-stream refresh.
    pub fn within(&self, other: &Granted) -> bool {
        fn subset(narrow: &Option<BTreeSet<String>>, wide: &Option<BTreeSet<String>>) -> bool {
            match (narrow, wide) {
                (_, None) => true,
                (None, Some(_)) => false,
                (Some(n), Some(w)) => n.is_subset(w),
            }
        }
        subset(&self.models, &other.models) && subset(&self.features, &other.features)
    }
}

/// The RFC 6749 `scope` string of the narrowing (empty when the token does not narrow), models first.
impl fmt::Display for Granted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let models = self.models.iter().flatten().map(|m| ("model", m));
        let features = self.features.iter().flatten().map(|x| ("feature", x));
        for (i, (kind, name)) in models.chain(features).enumerate() {
            write!(f, "{}{kind}:{name}", if i == 0 { "" } else { " " })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed() -> Allowed {
        Allowed::new().model("whisper", ["transcribe"]).model("ecapa", ["embed", "verify"])
    }

    fn set(items: &[&str]) -> Option<BTreeSet<String>> {
        Some(items.iter().map(|s| s.to_string()).collect())
    }

    fn invalid(requested: &str) -> String {
        match narrow(requested, &allowed()) {
            Err(TokenError::InvalidScope(why)) => why,
            other => panic!("{requested:?}: expected invalid_scope, got {other:?}"),
        }
    }

    #[test]
    fn empty_request_grants_everything_the_policy_allows() {
        assert_eq!(narrow("", &allowed()).unwrap(), Granted::everything());
        assert_eq!(narrow("   ", &allowed()).unwrap(), Granted::everything());
    }

    #[test]
    fn model_and_feature_narrow_both_dimensions() {
        let granted = narrow("model:whisper feature:transcribe", &allowed()).unwrap();
        assert_eq!(granted, Granted { models: set(&["whisper"]), features: set(&["transcribe"]) });
        assert!(granted.allows("whisper", "transcribe"));
        assert!(!granted.allows("ecapa", "transcribe"));
        assert!(!granted.allows("whisper", "embed"));
    }

    #[test]
    fn feature_alone_leaves_models_open() {
        let granted = narrow("feature:embed", &allowed()).unwrap();
        assert_eq!(granted, Granted { models: None, features: set(&["embed"]) });
    }

    #[test]
    fn duplicates_and_extra_spaces_collapse() {
        let granted = narrow(" model:ecapa  model:ecapa feature:verify ", &allowed()).unwrap();
        assert_eq!(granted, Granted { models: set(&["ecapa"]), features: set(&["verify"]) });
    }

    #[test]
    fn a_model_outside_the_policy_is_wider() {
        assert_eq!(invalid("model:whisper model:llama"), "model:llama is not allowed for this key");
    }

    #[test]
    fn a_feature_not_on_the_requested_models_is_wider() {
        assert_eq!(
            invalid("model:whisper feature:embed"),
            "feature:embed is not allowed for this key on the requested models"
        );
    }

    #[test]
    fn a_feature_no_model_offers_is_wider() {
        invalid("feature:vad");
    }

    #[test]
    fn unknown_syntax_is_invalid_without_echoing_it() {
        for bad in ["models:whisper", "whisper", "model:", "model", "feature:", "scope:x", "model:a\tb", "model:\"x\""]
        {
            let why = invalid(bad);
            assert!(why.starts_with("scope item 1 is not"), "{bad:?}: {why}");
        }
    }

    #[test]
    fn oversized_requests_are_refused_unread() {
        invalid(&"model:whisper ".repeat(80));
        invalid(&"model:a ".repeat(MAX_SCOPE_ITEMS + 1));
    }

    #[test]
    fn display_is_the_canonical_scope_string() {
        let granted = narrow("feature:verify model:ecapa feature:embed", &allowed()).unwrap();
        assert_eq!(granted.to_string(), "model:ecapa feature:embed feature:verify");
        assert_eq!(Granted::everything().to_string(), "");
        assert_eq!(narrow(&granted.to_string(), &allowed()).unwrap(), granted);
    }

    #[test]
    fn within_is_the_refresh_rule() {
        let wide = narrow("model:ecapa", &allowed()).unwrap();
        let narrower = narrow("model:ecapa feature:embed", &allowed()).unwrap();
        assert!(narrower.within(&wide));
        assert!(!wide.within(&narrower));
        assert!(wide.within(&Granted::everything()));
        assert!(!Granted::everything().within(&wide));
        assert!(wide.within(&wide));
    }
}
