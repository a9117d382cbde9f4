//! Policy names, groups, and `tighten`: a key or a request can only add redaction.

use infergate_redact::Entity::{
    CreditCard, DateOfBirth, EmailAddress, IbanCode, IpAddress, Location, Numbers, Person, PhoneNumber, StreetAddress,
    UsSsn, ZipCode,
};
use infergate_redact::{Entity, EntitySet, Policy, PolicyError, Style};

fn set(entities: &[Entity]) -> EntitySet {
    entities.iter().copied().collect()
}

#[test]
fn groups() {
    assert_eq!(EntitySet::PCI, set(&[CreditCard]));
    assert_eq!(EntitySet::SSN, set(&[UsSsn]));
    let ner = [Person, Location, StreetAddress, ZipCode];
    assert_eq!(EntitySet::NER, set(&ner));
    let patterns = [CreditCard, UsSsn, IbanCode, EmailAddress, PhoneNumber, IpAddress, DateOfBirth];
    assert_eq!(EntitySet::PII, set(&patterns).union(set(&ner)));
    assert_eq!(EntitySet::PHI, set(&[UsSsn, EmailAddress, PhoneNumber, IpAddress, DateOfBirth]).union(set(&ner)));
    assert_eq!(EntitySet::NUMBERS, set(&[Numbers]));
    assert_eq!(EntitySet::ALL, set(&Entity::ALL));
}

#[test]
fn names_are_groups_or_types_in_either_case() {
    assert_eq!(EntitySet::from_names(["pci", "US_SSN", "email_address"]), Ok(set(&[CreditCard, UsSsn, EmailAddress])));
    assert_eq!(EntitySet::from_names(["PII", "numbers"]), Ok(EntitySet::ALL));
}

#[test]
fn unknown_names_are_errors() {
    let error = EntitySet::from_names(["pci", "PERSON_NAME"]).unwrap_err();
    assert_eq!(error, PolicyError::UnknownEntity("PERSON_NAME".to_owned()));
    assert_eq!(error.category(), "unknown_entity");
    assert!(error.to_string().contains("use a group (pci, ssn, pii, phi, numbers)"));
    assert_eq!("blur".parse::<Style>(), Err(PolicyError::UnknownStyle("blur".to_owned())));
}

#[test]
fn entities_parse_by_name() {
    for entity in Entity::ALL {
        assert_eq!(entity.name().parse::<Entity>(), Ok(entity));
        assert!(PolicyError::UnknownEntity(String::new()).to_string().contains(entity.name()), "{entity}");
    }
}

#[test]
fn styles_parse_by_name() {
    for style in Style::ALL {
        assert_eq!(style.name().parse::<Style>(), Ok(style));
    }
}

#[test]
fn entity_set_debug_lists_names() {
    assert_eq!(format!("{:?}", EntitySet::PCI.union(EntitySet::SSN)), r#"{"CREDIT_CARD", "US_SSN"}"#);
}

#[test]
fn tighten_takes_the_union_of_entities() {
    let endpoint = Policy::new(EntitySet::PCI);
    let key = Policy::new(EntitySet::SSN);
    assert_eq!(endpoint.tighten(&key).entities, set(&[CreditCard, UsSsn]));
}

#[test]
fn tighten_takes_the_stronger_style() {
    use Style::{Entity, Hash, Marker, Mask, Remove};
    // Strongest first: remove > entity > marker > hash > mask.
    let cases = [
        (Mask, Hash, Hash),
        (Hash, Marker, Marker),
        (Marker, Entity, Entity),
        (Entity, Remove, Remove),
        (Mask, Remove, Remove),
        (Hash, Entity, Entity),
    ];
    for (a, b, stronger) in cases {
        let (pa, pb) = (Policy::new(EntitySet::PCI).style(a), Policy::new(EntitySet::PCI).style(b));
        assert_eq!(pa.tighten(&pb).style, stronger, "{a} + {b}");
        assert_eq!(pb.tighten(&pa).style, stronger, "{b} + {a}");
    }
}

#[test]
fn tighten_keeps_fewer_digits() {
    let endpoint = Policy::new(EntitySet::PCI).style(Style::Mask).keep_last(4);
    let request = Policy::new(EntitySet::PCI).style(Style::Mask).keep_last(2);
    assert_eq!(endpoint.tighten(&request).keep_last, 2);
    assert_eq!(request.tighten(&endpoint).keep_last, 2);
}

#[test]
fn tighten_never_loosens() {
    for a in Style::ALL {
        for b in Style::ALL {
            let endpoint = Policy::new(EntitySet::PII).style(a);
            let request = Policy::new(EntitySet::NUMBERS).style(b);
            let combined = endpoint.tighten(&request);
            assert!(combined.entities.covers(endpoint.entities) && combined.entities.covers(request.entities));
            assert_eq!(combined.style.stronger(a), combined.style, "{a} + {b}");
            assert_eq!(combined.style.stronger(b), combined.style, "{a} + {b}");
        }
    }
}
