//! What the recognisers find, and the names a policy uses for it.

use std::fmt;
use std::str::FromStr;

use crate::error::PolicyError;

/// A kind of personal data. Names are Presidio's where Presidio has one, so evaluation sets, Presidio
/// comparisons and dashboards use the same labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Entity {
    CreditCard,
    UsSsn,
    IbanCode,
    EmailAddress,
    PhoneNumber,
    IpAddress,
    DateOfBirth,
    /// Deepgram's `numbers`: any run of three or more numerals, digits or spoken.
    Numbers,
    // The NER layer's types (an [`EntityModel`](crate::EntityModel) finds them; no pattern does).
    /// A person's given name or surname.
    Person,
    /// A city, town, state or province. Presidio's name for places; HIPAA Safe Harbor would let a state
    /// stand, but one type for places keeps policies simple and errs towards hiding.
    Location,
    /// A street address: building number, street name, apartment or suite.
    StreetAddress,
    /// A postal code (US ZIP and ZIP+4).
    ZipCode,
}

impl Entity {
    pub const ALL: [Entity; 12] = [
        Entity::CreditCard,
        Entity::UsSsn,
        Entity::IbanCode,
        Entity::EmailAddress,
        Entity::PhoneNumber,
        Entity::IpAddress,
        Entity::DateOfBirth,
        Entity::Numbers,
        Entity::Person,
        Entity::Location,
        Entity::StreetAddress,
        Entity::ZipCode,
    ];

    /// The label in `[CREDIT_CARD]`, in policies, headers and metric labels.
    pub const fn name(self) -> &'static str {
        match self {
            Entity::CreditCard => "CREDIT_CARD",
            Entity::UsSsn => "US_SSN",
            Entity::IbanCode => "IBAN_CODE",
            Entity::EmailAddress => "EMAIL_ADDRESS",
            Entity::PhoneNumber => "PHONE_NUMBER",
            Entity::IpAddress => "IP_ADDRESS",
            Entity::DateOfBirth => "DATE_OF_BIRTH",
            Entity::Numbers => "NUMBERS",
            Entity::Person => "PERSON",
            Entity::Location => "LOCATION",
            Entity::StreetAddress => "STREET_ADDRESS",
            Entity::ZipCode => "ZIP_CODE",
        }
    }

    /// Which label an overlap of two detections keeps: the more specific validator wins. An e-mail address
    /// or an IBAN can contain a Luhn-valid window of digits, never the reverse; a card window can contain a
    /// 3-2-4 group, and every numeric entity is also a run of numerals.
    ///
    /// The NER layer's types rank below every validated pattern (a checksum or a shape rule beats a
    /// model's guess: the model calls some card numbers phone numbers) and above `NUMBERS` (a model that
    /// says "street address" or "ZIP code" about "1234 Elm Street" or "62704" says more than "numerals").
    /// Among them, a street address can hold a name ("12 Washington Street") and a place, so it ranks
    /// above both; a ZIP code is the narrowest.
    pub(crate) const fn priority(self) -> u8 {
        match self {
            Entity::EmailAddress => 11,
            Entity::IbanCode => 10,
            Entity::CreditCard => 9,
            Entity::UsSsn => 8,
            Entity::IpAddress => 7,
            Entity::PhoneNumber => 6,
            Entity::DateOfBirth => 5,
            Entity::ZipCode => 4,
            Entity::StreetAddress => 3,
            Entity::Person => 2,
            Entity::Location => 1,
            Entity::Numbers => 0,
        }
    }

    // u64: room for more types; `ALL` has 12.
    const fn bit(self) -> u64 {
        1 << self as u64
    }
}

impl fmt::Display for Entity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Entity {
    type Err = PolicyError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Entity::ALL
            .into_iter()
            .find(|e| e.name().eq_ignore_ascii_case(name))
            .ok_or_else(|| PolicyError::UnknownEntity(name.to_owned()))
    }
}

/// A set of entity types, as a policy lists them: groups and single types.
///
/// Groups (the policy names are lowercase):
/// - `pci`: `CREDIT_CARD`. PCI DSS covers cardholder data only; an IBAN is a bank account, so it is in
///   `pii`, not here. Expiry dates and CVVs join `pci` when a recogniser for them exists.
/// - `ssn`: `US_SSN`.
/// - `pii`: every personal type: all of the above plus e-mail, phone, IP address, date of birth, and the
///   NER layer's `PERSON`, `LOCATION`, `STREET_ADDRESS`, `ZIP_CODE`. Not `NUMBERS`, which is not personal
///   by itself.
/// - `phi`: the HIPAA Safe Harbor identifiers this crate covers: names, street addresses, cities (with
///   states: see [`Entity::Location`]), ZIP codes, SSN, e-mail, phone, IP address, date of birth.
/// - `numbers`: `NUMBERS`.
///
/// The NER types are found only when the [`Redactor`](crate::Redactor) has an
/// [`EntityModel`](crate::EntityModel); without one, a policy naming them redacts their patterns-only
/// share, which is nothing.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct EntitySet(u64);

impl EntitySet {
    pub const EMPTY: EntitySet = EntitySet(0);
    pub const PCI: EntitySet = EntitySet(Entity::CreditCard.bit());
    pub const SSN: EntitySet = EntitySet(Entity::UsSsn.bit());
    pub const PII: EntitySet = EntitySet(
        Entity::CreditCard.bit()
            | Entity::UsSsn.bit()
            | Entity::IbanCode.bit()
            | Entity::EmailAddress.bit()
            | Entity::PhoneNumber.bit()
            | Entity::IpAddress.bit()
            | Entity::DateOfBirth.bit()
            | EntitySet::NER.0,
    );
    pub const PHI: EntitySet = EntitySet(
        Entity::UsSsn.bit()
            | Entity::EmailAddress.bit()
            | Entity::PhoneNumber.bit()
            | Entity::IpAddress.bit()
            | Entity::DateOfBirth.bit()
            | EntitySet::NER.0,
    );
    /// The types only an [`EntityModel`](crate::EntityModel) finds. Not a policy group.
    pub const NER: EntitySet =
        EntitySet(Entity::Person.bit() | Entity::Location.bit() | Entity::StreetAddress.bit() | Entity::ZipCode.bit());
    pub const NUMBERS: EntitySet = EntitySet(Entity::Numbers.bit());
    pub const ALL: EntitySet = EntitySet(EntitySet::PII.0 | EntitySet::NUMBERS.0);

    /// The group names a policy may use, with what each stands for.
    pub const GROUPS: [(&'static str, EntitySet); 5] = [
        ("pci", EntitySet::PCI),
        ("ssn", EntitySet::SSN),
        ("pii", EntitySet::PII),
        ("phi", EntitySet::PHI),
        ("numbers", EntitySet::NUMBERS),
    ];

    pub const fn of(entity: Entity) -> EntitySet {
        EntitySet(entity.bit())
    }

    #[must_use]
    pub const fn union(self, other: EntitySet) -> EntitySet {
        EntitySet(self.0 | other.0)
    }

    pub const fn contains(self, entity: Entity) -> bool {
        self.0 & entity.bit() != 0
    }

    /// The types in both.
    #[must_use]
    pub const fn intersection(self, other: EntitySet) -> EntitySet {
        EntitySet(self.0 & other.0)
    }

    /// Whether every type in `other` is also in `self`.
    pub const fn covers(self, other: EntitySet) -> bool {
        self.0 & other.0 == other.0
    }

    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn insert(&mut self, entity: Entity) {
        self.0 |= entity.bit();
    }

    pub fn iter(self) -> impl Iterator<Item = Entity> {
        Entity::ALL.into_iter().filter(move |e| self.contains(*e))
    }

    /// One policy name: a group (`pci`, `ssn`, `pii`, `phi`, `numbers`) or an entity type (`CREDIT_CARD`),
    /// either case.
    pub fn parse_name(name: &str) -> Result<EntitySet, PolicyError> {
        let group = EntitySet::GROUPS.into_iter().find(|(group, _)| group.eq_ignore_ascii_case(name));
        match group {
            Some((_, set)) => Ok(set),
            None => name.parse::<Entity>().map(EntitySet::of),
        }
    }

    /// The union of a policy's `entities` list.
    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<EntitySet, PolicyError> {
        names.into_iter().try_fold(EntitySet::EMPTY, |set, name| Ok(set.union(EntitySet::parse_name(name)?)))
    }
}

impl FromIterator<Entity> for EntitySet {
    fn from_iter<I: IntoIterator<Item = Entity>>(entities: I) -> Self {
        entities.into_iter().fold(EntitySet::EMPTY, |set, e| set.union(EntitySet::of(e)))
    }
}

impl fmt::Debug for EntitySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter().map(Entity::name)).finish()
    }
}
