//! The entity-model hook, with fake models: model spans merge with pattern spans under one priority order,
//! words the model finds are muted, the model runs only for the policy's share of its types, and a failing
//! or misbehaving model is never rendered as if redaction were complete.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use infergate_redact::Entity::{EmailAddress, Location, Numbers, Person, PhoneNumber, StreetAddress, ZipCode};
use infergate_redact::{Detection, Entity, EntityModel, EntitySet, ModelError, Policy, Redactor, Style};

/// Finds fixed phrases (as a NER model would find names), counting its calls and what it was asked for.
struct Gazetteer {
    phrases: Vec<(&'static str, Entity)>,
    calls: AtomicUsize,
    last_wanted: std::sync::Mutex<EntitySet>,
}

fn gazetteer(phrases: &[(&'static str, Entity)]) -> Arc<Gazetteer> {
    Arc::new(Gazetteer {
        phrases: phrases.to_vec(),
        calls: AtomicUsize::new(0),
        last_wanted: std::sync::Mutex::new(EntitySet::EMPTY),
    })
}

impl EntityModel for Gazetteer {
    fn entities(&self) -> EntitySet {
        EntitySet::NER
    }

    fn detect(&self, text: &str, wanted: EntitySet, out: &mut Vec<Detection>) -> Result<(), ModelError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        *self.last_wanted.lock().unwrap() = wanted;
        for &(phrase, entity) in &self.phrases {
            if wanted.contains(entity) {
                for (start, _) in text.match_indices(phrase) {
                    out.push(Detection::new(start, start + phrase.len(), entity, 0.9, phrase.to_lowercase()));
                }
            }
        }
        Ok(())
    }
}

/// Returns one fixed raw span, whatever the text: for the span checks.
struct Fixed(usize, usize, Entity);

impl EntityModel for Fixed {
    fn entities(&self) -> EntitySet {
        EntitySet::NER
    }

    fn detect(&self, _text: &str, _wanted: EntitySet, out: &mut Vec<Detection>) -> Result<(), ModelError> {
        out.push(Detection::new(self.0, self.1, self.2, 1.0, String::new()));
        Ok(())
    }
}

/// Adds a detection, then fails: the partial output must not be used.
struct Broken;

impl EntityModel for Broken {
    fn entities(&self) -> EntitySet {
        EntitySet::NER
    }

    fn detect(&self, text: &str, _wanted: EntitySet, out: &mut Vec<Detection>) -> Result<(), ModelError> {
        out.push(Detection::new(0, text.len(), Person, 1.0, String::new()));
        Err(ModelError::new("inference", "the runtime refused the input"))
    }
}

fn with(model: Arc<dyn EntityModel>, entities: EntitySet) -> Redactor {
    Redactor::new(Policy::new(entities)).with_model(model)
}

fn found<'t>(redactor: &Redactor, text: &'t str) -> Vec<(Entity, &'t str)> {
    redactor.try_redact(text).unwrap().spans.iter().map(|s| (s.entity, &text[s.start..s.end])).collect()
}

#[test]
fn model_spans_join_pattern_spans() {
    let model = gazetteer(&[("John Smith", Person), ("Springfield", Location)]);
    let text = "John Smith of Springfield, call 212-555-0100 or mail js@example.com";
    let redactor = with(model, EntitySet::PII);
    assert_eq!(
        found(&redactor, text),
        [
            (Person, "John Smith"),
            (Location, "Springfield"),
            (PhoneNumber, "212-555-0100"),
            (EmailAddress, "js@example.com")
        ]
    );
    assert_eq!(
        redactor.try_redact(text).unwrap().text,
        "[PERSON] of [LOCATION], call [PHONE_NUMBER] or mail [EMAIL_ADDRESS]"
    );
}

#[test]
fn a_validated_pattern_wins_over_the_model() {
    // The model calls part of an e-mail address a name; the e-mail validator's label is kept, span widened.
    let model = gazetteer(&[("john.smith", Person)]);
    assert_eq!(
        found(&with(model, EntitySet::PII), "write to john.smith@example.com"),
        [(EmailAddress, "john.smith@example.com")]
    );
}

#[test]
fn the_model_wins_over_numbers() {
    let model = gazetteer(&[("1234 Elm Street", StreetAddress), ("62704", ZipCode)]);
    let text = "at 1234 Elm Street, Springfield 62704";
    assert_eq!(found(&with(model, EntitySet::ALL), text), [(StreetAddress, "1234 Elm Street"), (ZipCode, "62704")]);
    // Without the model the same numerals are only numbers.
    let patterns = Redactor::new(Policy::new(EntitySet::ALL)).redact(text);
    assert_eq!(patterns.spans.iter().map(|s| s.entity).collect::<Vec<_>>(), [Numbers, Numbers]);
}

#[test]
fn model_spans_widen_to_whole_words() {
    let model = gazetteer(&[("Smith", Person)]);
    assert_eq!(found(&with(model, EntitySet::PII), "Mr Smithson-Jones left"), [(Person, "Smithson")]);
}

#[test]
fn redact_words_mutes_the_words_the_model_finds() {
    let model = gazetteer(&[("John Smith", Person), ("Austin", Location)]);
    let words = ["my", "name", "is", "John", "Smith,", "from", "Austin."];
    let redacted = with(model, EntitySet::PII).try_redact_words(&words).unwrap();
    assert_eq!(redacted.muted, [false, false, false, true, true, false, true]);
    assert_eq!(redacted.redacted.text, "my name is [PERSON], from [LOCATION].");
}

#[test]
fn marker_numbers_follow_the_model_value() {
    // The gazetteer's value is the lowercased phrase, so two spellings of one name share a marker.
    let model = gazetteer(&[("Ann Lee", Person), ("ann lee", Person), ("Bo Chen", Person)]);
    let redactor = Redactor::new(Policy::new(EntitySet::PII).style(Style::Marker)).with_model(model);
    assert_eq!(
        redactor.try_redact("Ann Lee met Bo Chen; ann lee left").unwrap().text,
        "[PERSON_1] met [PERSON_2]; [PERSON_1] left"
    );
}

#[test]
fn the_model_is_asked_only_for_the_policy_share_of_its_types() {
    let model = gazetteer(&[("Ann Lee", Person)]);
    let policy = EntitySet::PCI.union(EntitySet::of(Person));
    with(model.clone(), policy).try_redact("Ann Lee").unwrap();
    assert_eq!(*model.last_wanted.lock().unwrap(), EntitySet::of(Person));
}

#[test]
fn the_model_is_not_called_when_the_policy_wants_none_of_its_types() {
    let model = gazetteer(&[("Ann Lee", Person)]);
    let redacted = with(model.clone(), EntitySet::PCI).try_redact("Ann Lee, 4111 1111 1111 1111").unwrap();
    assert_eq!(model.calls.load(Ordering::Relaxed), 0);
    assert_eq!(redacted.text, "Ann Lee, [CREDIT_CARD]");
}

#[test]
fn try_redact_returns_a_model_failure() {
    let error = with(Arc::new(Broken), EntitySet::PII).try_redact("Ann Lee, 4111 1111 1111 1111").unwrap_err();
    assert_eq!(error.category(), "inference");
}

#[test]
fn redact_marks_a_patterns_only_result_after_a_model_failure() {
    let redacted = with(Arc::new(Broken), EntitySet::PII).redact("Ann Lee, 4111 1111 1111 1111");
    // The failed call's partial detections are dropped, the patterns' are kept, and the result says so.
    assert_eq!(redacted.text, "Ann Lee, [CREDIT_CARD]");
    assert_eq!(redacted.model_error, Some("inference"));
    let words = with(Arc::new(Broken), EntitySet::PII).redact_words(&["Ann", "Lee"]);
    assert_eq!((words.muted, words.redacted.model_error), (vec![false, false], Some("inference")));
}

#[test]
fn a_result_without_a_model_failure_is_unmarked() {
    let model = gazetteer(&[("Ann", Person)]);
    assert_eq!(with(model, EntitySet::PII).redact("Ann").model_error, None);
    assert_eq!(Redactor::new(Policy::new(EntitySet::PII)).redact("Ann").model_error, None);
}

#[test]
fn spans_outside_the_text_are_refused() {
    let error = with(Arc::new(Fixed(2, 40, Person)), EntitySet::PII).try_redact("Ann Lee").unwrap_err();
    assert_eq!(error.category(), "invalid_span");
}

#[test]
fn spans_off_a_char_boundary_are_refused() {
    // "é" is two bytes; 1..3 cuts it.
    let error = with(Arc::new(Fixed(1, 3, Person)), EntitySet::PII).try_redact("Zoé Lee").unwrap_err();
    assert_eq!(error.category(), "invalid_span");
}

#[test]
fn empty_spans_are_refused() {
    let error = with(Arc::new(Fixed(3, 3, Person)), EntitySet::PII).try_redact("Ann Lee").unwrap_err();
    assert_eq!(error.category(), "invalid_span");
}

#[test]
fn spans_of_types_not_asked_for_are_refused() {
    let policy = EntitySet::of(Person);
    let error = with(Arc::new(Fixed(0, 3, ZipCode)), policy).try_redact("Ann Lee").unwrap_err();
    assert_eq!(error.category(), "invalid_span");
}

#[test]
fn a_model_error_shows_no_text() {
    let text = "Ann Lee lives here";
    let error = with(Arc::new(Fixed(0, 99, Person)), EntitySet::PII).try_redact(text).unwrap_err();
    assert!(!error.to_string().contains("Ann"), "{error}");
    assert!(!format!("{error:?}").contains("Ann"));
}
