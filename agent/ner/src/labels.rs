//! From per-token labels to the spans the redactor merges.
//!
//! ```text
//!  tokens ─▶ words: a word takes its first sub-token's label (the model also labels "##field" of
//!            "springfield", but the first piece is what it saw the whole word start with)
//!         ─▶ runs: neighbouring words of one entity type with only whitespace between
//!            ("John" GIVEN_NAME + "O'Brien" SURNAME -> one PERSON)
//!         ─▶ addresses: a street address absorbs the city, state and ZIP written after it
//!         ─▶ the policy's types, each with a normalised value for `marker` and `hash`
//! ```
//! B- and I- are not used to split runs: the model tags every piece of a first word B- ("spring" and
//! "##field" both B-CITY), so its B/I is no guide to where one name ends and the next begins. Two
//! people named back to back with nothing between them come out as one span, which redacts the same words.

use infergate_redact::{Detection, Entity, EntitySet};

/// The model's entity types (config.json's labels without B-/I-) and what each is for redaction.
///
/// Only the unstructured types are taken. E-mail and phone belong to the validated patterns (the
/// model calls some card numbers and SSNs phone numbers); URL, tax, bank, routing, government ID,
/// passport and driver's licence numbers have no public type yet, and the model confuses them with
/// each other, so they are read as "no entity".
const MODEL_TYPES: [(&str, Option<Entity>); 17] = [
    ("GIVEN_NAME", Some(Entity::Person)),
    ("SURNAME", Some(Entity::Person)),
    ("BUILDING_NUMBER", Some(Entity::StreetAddress)),
    ("STREET_NAME", Some(Entity::StreetAddress)),
    ("SECONDARY_ADDRESS", Some(Entity::StreetAddress)),
    ("CITY", Some(Entity::Location)),
    ("STATE", Some(Entity::Location)),
    ("ZIP_CODE", Some(Entity::ZipCode)),
    ("EMAIL", None),
    ("PHONE", None),
    ("URL", None),
    ("TAX_ID", None),
    ("BANK_ACCOUNT", None),
    ("ROUTING_NUMBER", None),
    ("GOVERNMENT_ID", None),
    ("PASSPORT", None),
    ("DRIVERS_LICENSE", None),
];

/// What a label id stands for: `None` for "O" and for types not taken. `Err` for a label that is neither
/// "O" nor B-/I- of a known type: a different model than the one this table was written for.
pub(crate) fn entity_of(label: &str) -> Result<Option<Entity>, ()> {
    if label == "O" {
        return Ok(None);
    }
    let model_type = label.strip_prefix("B-").or_else(|| label.strip_prefix("I-")).ok_or(())?;
    MODEL_TYPES.iter().find(|(name, _)| *name == model_type).map(|(_, entity)| *entity).ok_or(())
}

/// One pre-tokenizer word (the tokenizer splits punctuation off: "o", "'", "brien") with its label.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Word {
    /// Byte range in the text.
    pub start: usize,
    pub end: usize,
    pub entity: Option<Entity>,
    /// The first sub-token's softmax probability for its label.
    pub score: f32,
}

/// A token with its word and label, as the stitched windows produced them.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Labelled {
    pub start: usize,
    pub end: usize,
    pub word: Option<u32>,
    pub entity: Option<Entity>,
    pub score: f32,
}

/// Groups tokens into words (first sub-token's label; span over all pieces). Zero-width tokens (which
/// the normaliser can produce) label nothing and widen nothing.
pub(crate) fn words(tokens: &[Labelled]) -> Vec<Word> {
    let mut words: Vec<Word> = Vec::new();
    let mut current: Option<u32> = None;
    for token in tokens.iter().filter(|t| t.end > t.start) {
        match (words.last_mut(), token.word) {
            (Some(word), Some(id)) if current == Some(id) => word.end = word.end.max(token.end),
            _ => {
                current = token.word;
                words.push(Word { start: token.start, end: token.end, entity: token.entity, score: token.score });
            }
        }
    }
    words
}

/// Words to detections of the `wanted` types.
pub(crate) fn detections(text: &str, words: &[Word], wanted: EntitySet, out: &mut Vec<Detection>) {
    let runs = assemble_addresses(text, runs(text, words), wanted.contains(Entity::StreetAddress));
    for run in runs.into_iter().filter(|r| wanted.contains(r.entity)) {
        out.push(Detection::new(run.start, run.end, run.entity, run.score, normalise(&text[run.start..run.end])));
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct Run {
    start: usize,
    end: usize,
    entity: Entity,
    score: f32,
}

fn runs(text: &str, words: &[Word]) -> Vec<Run> {
    let mut runs: Vec<Run> = Vec::new();
    let mut joinable = false;
    for word in words {
        let Some(entity) = word.entity else {
            joinable = false;
            continue;
        };
        match runs.last_mut() {
            Some(run)
                if joinable
                    && run.entity == entity
                    && gap(text, run.end, word.start).chars().all(char::is_whitespace) =>
            {
                run.end = word.end;
                run.score = run.score.min(word.score);
            }
            _ => runs.push(Run { start: word.start, end: word.end, entity, score: word.score }),
        }
        joinable = true;
    }
    runs
}

/// "12 Elm Street, Springfield, IL 62704" is one street address as written, and presidio-evaluator's
/// data labels it so; the model types its parts. When the policy wants street addresses, a street
/// address run absorbs the runs that follow it (more street parts, a city or state, a ZIP code) with
/// only spaces and address punctuation between.
fn assemble_addresses(text: &str, runs: Vec<Run>, wanted: bool) -> Vec<Run> {
    if !wanted {
        return runs;
    }
    let mut out: Vec<Run> = Vec::with_capacity(runs.len());
    for run in runs {
        match out.last_mut() {
            Some(address)
                if address.entity == Entity::StreetAddress
                    && matches!(run.entity, Entity::StreetAddress | Entity::Location | Entity::ZipCode)
                    && gap(text, address.end, run.start).chars().all(|c| c.is_whitespace() || ",.-#".contains(c)) =>
            {
                address.end = run.end;
                address.score = address.score.min(run.score);
            }
            _ => out.push(run),
        }
    }
    out
}

/// The text between two spans; empty where they touch or overlap (the normaliser can give several tokens
/// one character's offsets, as when it decomposes a Hangul syllable).
fn gap(text: &str, end: usize, start: usize) -> &str {
    text.get(end..start).unwrap_or("")
}

/// What `marker` and `hash` compare: lowercase, one space between words, so "John  Smith" and "john smith"
/// are one value.
fn normalise(covered: &str) -> String {
    let mut value = String::with_capacity(covered.len());
    for word in covered.split_whitespace() {
        if !value.is_empty() {
            value.push(' ');
        }
        value.extend(word.chars().flat_map(char::to_lowercase));
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;
    use Entity::{Location, Person, StreetAddress, ZipCode};

    /// Words from `(text, entity)` pairs: each pair is one word, spaces between.
    fn sentence(parts: &[(&str, Option<Entity>)]) -> (String, Vec<Word>) {
        let mut text = String::new();
        let mut words = Vec::new();
        for (part, entity) in parts {
            if !text.is_empty() && !matches!(*part, "," | "'" | ".") && !text.ends_with('\'') {
                text.push(' ');
            }
            words.push(Word { start: text.len(), end: text.len() + part.len(), entity: *entity, score: 0.9 });
            text.push_str(part);
        }
        (text, words)
    }

    fn found(parts: &[(&str, Option<Entity>)], wanted: EntitySet) -> Vec<(Entity, String)> {
        let (text, words) = sentence(parts);
        let mut out = Vec::new();
        detections(&text, &words, wanted, &mut out);
        out.iter().map(|d| (d.entity, text[d.start..d.end].to_owned())).collect()
    }

    #[test]
    fn labels_map_to_public_types() {
        assert_eq!(entity_of("O"), Ok(None));
        assert_eq!(entity_of("B-GIVEN_NAME"), Ok(Some(Person)));
        assert_eq!(entity_of("I-SURNAME"), Ok(Some(Person)));
        assert_eq!(entity_of("B-STATE"), Ok(Some(Location)));
        assert_eq!(entity_of("I-SECONDARY_ADDRESS"), Ok(Some(StreetAddress)));
        assert_eq!(entity_of("B-PHONE"), Ok(None));
        assert_eq!(entity_of("B-NICKNAME"), Err(()));
        assert_eq!(entity_of("CITY"), Err(()));
    }

    #[test]
    fn a_word_takes_its_first_piece_label_and_spans_all_pieces() {
        let token = |start, end, word, entity| Labelled { start, end, word: Some(word), entity, score: 0.5 };
        let tokens = [token(0, 6, 0, Some(Location)), token(6, 11, 0, None), token(12, 14, 1, None)];
        assert_eq!(
            words(&tokens),
            [
                Word { start: 0, end: 11, entity: Some(Location), score: 0.5 },
                Word { start: 12, end: 14, entity: None, score: 0.5 }
            ]
        );
    }

    #[test]
    fn zero_width_tokens_are_skipped() {
        let tokens = [Labelled { start: 3, end: 3, word: Some(0), entity: Some(Person), score: 0.5 }];
        assert!(words(&tokens).is_empty());
    }

    #[test]
    fn given_name_and_surname_join() {
        let parts =
            [("call", None), ("John", Some(Person)), ("O", Some(Person)), ("'", Some(Person)), ("Brien", Some(Person))];
        assert_eq!(found(&parts, EntitySet::PII), [(Person, "John O'Brien".to_owned())]);
    }

    #[test]
    fn an_unlabelled_word_splits_runs() {
        let parts = [("Ann", Some(Person)), ("and", None), ("Bo", Some(Person))];
        assert_eq!(found(&parts, EntitySet::PII), [(Person, "Ann".to_owned()), (Person, "Bo".to_owned())]);
    }

    #[test]
    fn punctuation_splits_runs_of_one_type() {
        let parts = [("Boise", Some(Location)), (",", None), ("Idaho", Some(Location))];
        assert_eq!(found(&parts, EntitySet::PII), [(Location, "Boise".to_owned()), (Location, "Idaho".to_owned())]);
    }

    #[test]
    fn a_street_address_absorbs_city_state_and_zip() {
        let parts = [
            ("at", None),
            ("12", Some(StreetAddress)),
            ("Elm", Some(StreetAddress)),
            ("Street", Some(StreetAddress)),
            (",", None),
            ("Springfield", Some(Location)),
            (",", None),
            ("IL", Some(Location)),
            ("62704", Some(ZipCode)),
            ("today", None),
        ];
        assert_eq!(found(&parts, EntitySet::PII), [(StreetAddress, "12 Elm Street, Springfield, IL 62704".to_owned())]);
    }

    #[test]
    fn without_street_addresses_wanted_the_parts_keep_their_types() {
        let parts =
            [("Elm", Some(StreetAddress)), ("Street", Some(StreetAddress)), (",", None), ("Boise", Some(Location))];
        let wanted = EntitySet::of(Location);
        assert_eq!(found(&parts, wanted), [(Location, "Boise".to_owned())]);
    }

    #[test]
    fn a_city_before_a_street_stays_a_city() {
        let parts = [("Boise", Some(Location)), ("12", Some(StreetAddress)), ("Elm", Some(StreetAddress))];
        assert_eq!(
            found(&parts, EntitySet::PII),
            [(Location, "Boise".to_owned()), (StreetAddress, "12 Elm".to_owned())]
        );
    }

    #[test]
    fn values_are_lowercase_single_spaced() {
        assert_eq!(normalise("John \n O'Brien"), "john o'brien");
        assert_eq!(normalise("ÉMILE"), "émile");
    }
}
