#!/usr/bin/env python3
"""Generate the labelled PII-redaction evaluation set (issue 13, "Checks").

Source: the 210 sentence templates of PyPI `presidio-evaluator==0.3.2`
(`presidio_evaluator/data_generator/raw_data/templates.txt`), filled with its fake identities
(`FakeNameGenerator.com_3000.csv` records) and `Faker` (en_US + presidio-evaluator's extra providers)
under a fixed seed. Output: `data/tune.jsonl` and `data/report.jsonl`, split BY TEMPLATE (no template
in both halves), one JSON object per sentence:

    {"id": "t017-3", "template": 17, "text": "...", "spans": [{"start": 0, "end": 5, "entity": "PERSON"}]}

Offsets are Python string indices (Unicode code points) into `text`, end exclusive.
See README.md next to this file for the label mapping and the split rule.

Usage: make_dataset.py [--seed 13] [--per-template 8] [--out DIR] [--check]
  --check  regenerate into a temporary directory and compare with the committed files (exit 1 if different).
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import random
import re
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

# ----------------------------------------------------------------------------------------------
# Label mapping: template placeholder -> evaluation label.
# In-scope by default in score.py: PERSON, STREET_ADDRESS, LOCATION, ZIP_CODE, PHONE_NUMBER,
# EMAIL_ADDRESS, CREDIT_CARD, US_SSN, IBAN_CODE, IP_ADDRESS, DATE_OF_BIRTH.
# Everything else keeps its own label so the scorer can ignore it (or count it, --strict).
# ----------------------------------------------------------------------------------------------
LABELS = {
    # people (titles/prefixes such as "Mrs." are NOT part of the name)
    "person": "PERSON", "name": "PERSON", "name_male": "PERSON", "name_female": "PERSON",
    "first_name": "PERSON", "first_name_male": "PERSON", "first_name_female": "PERSON",
    "first_name_nonbinary": "PERSON", "last_name": "PERSON", "last_name_male": "PERSON",
    "last_name_female": "PERSON",
    "prefix": "TITLE", "prefix_male": "TITLE", "prefix_female": "TITLE",
    # addresses: `{{address}}` is expanded into its components first (see ADDRESS_FORMATS)
    "building_number": "STREET_ADDRESS", "street_name": "STREET_ADDRESS",
    "secondary_address": "STREET_ADDRESS", "street_address": "STREET_ADDRESS",
    "city": "LOCATION", "state": "LOCATION", "state_abbr": "LOCATION", "country": "LOCATION",
    "postcode": "ZIP_CODE", "zipcode": "ZIP_CODE",
    # structured identifiers
    "phone_number": "PHONE_NUMBER", "email": "EMAIL_ADDRESS", "credit_card_number": "CREDIT_CARD",
    "ssn": "US_SSN", "iban": "IBAN_CODE", "ip_address": "IP_ADDRESS",
    "us_driver_license": "US_DRIVER_LICENSE", "url": "URL",
    # dates: date_of_birth is DATE_OF_BIRTH only where the template has a birth cue (BIRTH_CUE)
    "date_of_birth": "DATE_OF_BIRTH", "date_time": "DATE_TIME", "year": "DATE_TIME",
    "day_of_week": "DATE_TIME",
    # out of scope by default
    "organization": "ORGANIZATION", "job": "JOB", "age": "AGE",
    "nationality": "NATIONALITY", "nation_woman": "NATIONALITY", "nation_man": "NATIONALITY",
    "nation_plural": "NATIONALITY",
}
BIRTH_CUE = re.compile(r"\b(birth|born|dob|birthday)\b", re.IGNORECASE)

# presidio-evaluator's AddressProviderNew.address_formats (0.3.2) with `{{street_address}}` written out
# as its components, so each component gets its own span and glue words ("the corner of", "and") stay
# unlabelled. Dropped: the three military formats (APO/FPO/DPO glue words would be unlabelled address
# text) and "{{first_name}} and {{street_name}}" (a first name used as a street name).
ADDRESS_FORMATS = [
    ("{{building_number}} {{street_name}} {{secondary_address}} {{city}} {{state}}", 5.0),
    ("{{building_number}} {{street_name}} {{secondary_address}} {{city}} {{state_abbr}}", 5.0),
    ("{{building_number}} {{street_name}} {{secondary_address}} {{city}} {{country}}", 5.0),
    ("{{building_number}} {{street_name}}\n {{secondary_address}}\n {{city}}\n {{country}}", 5.0),
    ("{{building_number}} {{street_name}}\n {{secondary_address}}\n {{city}}\n {{country}} {{postcode}}", 5.0),
    ("{{street_name}} {{street_name}}\n {{secondary_address}}\n {{city}}\n {{country}} {{postcode}}", 5.0),
    ("the corner of {{street_name}} and {{street_name}}", 3.0),
    ("{{building_number}} {{street_name}}, {{city}}, {{country}}", 5.0),
    ("{{building_number}} {{street_name}} {{secondary_address}}, {{city}}, {{country}} {{postcode}}", 5.0),
    ("{{building_number}} {{street_name}}\n{{city}}, {{state_abbr}} {{postcode}}", 25.0),
    ("{{building_number}} {{street_name}}\n{{city}}\n, {{state_abbr}}\n {{postcode}}", 25.0),
    ("{{building_number}} {{street_name}}\n{{city}}\n, {{state_abbr}}\n {{country}} {{postcode}}", 25.0),
]

# Split stratification: a template's stratum is the rarest in-scope label it contains (by template count),
# so that every in-scope label lands in both halves.
IN_SCOPE = ["PERSON", "STREET_ADDRESS", "LOCATION", "ZIP_CODE", "PHONE_NUMBER", "EMAIL_ADDRESS",
            "CREDIT_CARD", "US_SSN", "IBAN_CODE", "IP_ADDRESS", "DATE_OF_BIRTH"]

PLACEHOLDER = re.compile(r"\{\{\s*(\w+)\s*\}\}")
LOWER_CASE_RATIO = 0.05  # presidio-evaluator's default: some sentences are all lower case (ASR-like)
# Templates holding a label that only 2-6 templates have are sampled RARE_BOOST times as often, so the
# per-type numbers of these labels do not rest on a handful of values.
RARE_LABELS = {"US_SSN", "IP_ADDRESS", "DATE_OF_BIRTH", "IBAN_CODE", "EMAIL_ADDRESS"}
RARE_BOOST = 4


def load_templates() -> list[str]:
    from presidio_evaluator.data_generator import presidio_templates_file_path

    lines = Path(presidio_templates_file_path).read_text(encoding="utf-8").splitlines()
    # 210 lines; `wc -l` says 209 because the file has no final newline.
    assert len(lines) == 210, f"expected 210 templates, got {len(lines)}"
    return lines


def preprocess(template: str) -> str:
    """The file writes line breaks as a literal backslash-n; make them real. Lower-case placeholder names."""
    t = template.strip().replace("\\n", "\n").replace("\\,", ",")
    return PLACEHOLDER.sub(lambda m: "{{" + m.group(1).lower() + "}}", t)


def template_labels(template: str) -> set[str]:
    out = set()
    for name in PLACEHOLDER.findall(template):
        if name == "address":
            out |= {"STREET_ADDRESS", "LOCATION", "ZIP_CODE"}
        else:
            out.add(label_for(name, template))
    return out


def label_for(placeholder: str, template: str) -> str:
    lab = LABELS.get(placeholder)
    if lab is None:
        raise SystemExit(f"no label for placeholder {placeholder!r} in template {template!r}")
    if lab == "DATE_OF_BIRTH" and not BIRTH_CUE.search(template):
        return "DATE_TIME"
    return lab


def split_templates(templates: list[str]) -> dict[int, str]:
    """Deterministic split by template: stratify by the rarest in-scope label, order inside a stratum by
    sha256 of the template text, then alternate tune/report (the alternation carries across strata, so
    the halves differ by at most one template)."""
    labs = [template_labels(preprocess(t)) for t in templates]
    counts = collections.Counter(l for ls in labs for l in ls if l in IN_SCOPE)
    rarity = sorted(IN_SCOPE, key=lambda l: (counts[l], l))

    def stratum(i: int) -> int:
        for r, l in enumerate(rarity):
            if l in labs[i]:
                return r
        return len(rarity)

    order = sorted(range(len(templates)),
                   key=lambda i: (stratum(i), hashlib.sha256(templates[i].encode()).hexdigest()))
    return {i: ("tune" if k % 2 == 0 else "report") for k, i in enumerate(order)}


def fixed_date_provider():
    """Faker's date providers count back from `datetime.now()`, so their output drifts with the calendar
    even under a fixed seed. Same formats, fixed reference date."""
    from datetime import datetime
    from faker.providers import BaseProvider

    start, end = datetime(1970, 1, 1), datetime(2025, 1, 1)

    class FixedDateProvider(BaseProvider):
        def date_time(self):
            return self.generator.date_time_between(start_date=start, end_date=end)

        def year(self):
            return str(self.date_time().year)

        def day_of_week(self):
            return self.date_time().strftime("%A")

        def date_of_birth(self):
            return self.generator.date_time_between(start_date=datetime(1910, 1, 1), end_date=end).date()

    return FixedDateProvider


def make_faker(seed: int):
    import numpy as np
    from faker import Faker
    from presidio_evaluator.data_generator.faker_extensions import (
        AddressProviderNew, AgeProvider, IpAddressProvider, NationalityProvider, OrganizationProvider,
        PhoneNumberProviderNew, ReligionProvider, UsDriverLicenseProvider,
    )
    from presidio_evaluator.data_generator.faker_extensions.datasets import load_fake_person_df
    from presidio_evaluator.data_generator.faker_extensions.sentences import SentenceFaker

    # Seed before loading the records: load_fake_person_df() draws middle initials from `random`.
    random.seed(seed)
    np.random.seed(seed)
    Faker.seed(seed)
    records = load_fake_person_df()
    sf = SentenceFaker(records=records, locale="en_US", lower_case_ratio=0.0)
    # presidio_additional_entity_providers minus HospitalProvider (it queries WikiData over the network
    # at construction; no template uses it).
    for p in [IpAddressProvider, NationalityProvider, OrganizationProvider, UsDriverLicenseProvider,
              AgeProvider, AddressProviderNew, PhoneNumberProviderNew, ReligionProvider,
              fixed_date_provider()]:
        sf.add_provider(p)
    for provider, alias in [("name", "person"), ("credit_card_number", "credit_card"),
                            ("date_of_birth", "birthday")]:
        sf.add_provider_alias(provider_name=provider, new_name=alias)
    random.seed(seed)
    np.random.seed(seed)
    Faker.seed(seed)
    return sf


def expand_addresses(template: str, rng: random.Random) -> str:
    forms = [f for f, _ in ADDRESS_FORMATS]
    weights = [w for _, w in ADDRESS_FORMATS]
    return re.sub(r"\{\{address\}\}", lambda m: rng.choices(forms, weights)[0], template)


def fill(sf, template: str, tid: int, rng: random.Random) -> tuple[str, list[dict]]:
    expanded = expand_addresses(template, rng)
    sample = sf.parse(expanded, tid, add_spans=True)
    text = sample.full_text
    spans = []
    for s in sample.spans:
        assert text[s.start_position:s.end_position] == str(s.entity_value), (text, s)
        start, end = s.start_position, s.end_position
        while start < end and text[start].isspace():  # a few record values carry a trailing space
            start += 1
        while end > start and text[end - 1].isspace():
            end -= 1
        if start == end:
            continue
        spans.append({"start": start, "end": end,
                      "entity": label_for(s.entity_type, template)})
    spans.sort(key=lambda d: (d["start"], d["end"]))
    if rng.random() < LOWER_CASE_RATIO and len(text.lower()) == len(text):
        text = text.lower()
    return text, spans


def generate(seed: int, per_template: int) -> dict[str, list[dict]]:
    templates = load_templates()
    split = split_templates(templates)
    sf = make_faker(seed)
    rng = random.Random(seed * 7919 + 1)
    halves: dict[str, list[dict]] = {"tune": [], "report": []}
    for tid, raw in enumerate(templates):
        template = preprocess(raw)
        if not PLACEHOLDER.search(template):
            n = 1  # a fixed sentence (no placeholder): once
        elif template_labels(template) & RARE_LABELS:
            n = per_template * RARE_BOOST
        else:
            n = per_template
        seen = set()
        k = 0
        for _ in range(n):
            text, spans = fill(sf, template, tid, rng)
            if text in seen:
                continue
            seen.add(text)
            halves[split[tid]].append({"id": f"t{tid:03d}-{k}", "template": tid, "text": text,
                                       "spans": spans})
            k += 1
    return halves


# ---------------------------------------------------------------------------------------------- checks
def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def ssn_ok(s: str) -> bool:
    m = re.fullmatch(r"(\d{3})-?(\d{2})-?(\d{4})", s)
    if not m:
        return False
    area, group, serial = m.groups()
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


def iban_ok(s: str) -> bool:
    s = s.replace(" ", "").upper()
    if not re.fullmatch(r"[A-Z]{2}\d{2}[A-Z0-9]{10,30}", s):
        return False
    r = s[4:] + s[:4]
    return int("".join(str(int(c, 36)) for c in r)) % 97 == 1


def check_and_stats(halves: dict[str, list[dict]]) -> dict:
    stats: dict = {"sentences": {}, "templates": {}, "spans": {}, "chars": {}}
    cards = collections.Counter()
    bad = collections.Counter()
    for half, rows in halves.items():
        stats["sentences"][half] = len(rows)
        stats["templates"][half] = len({r["template"] for r in rows})
        stats["chars"][half] = sum(len(r["text"]) for r in rows)
        c = collections.Counter()
        for r in rows:
            for s in r["spans"]:
                c[s["entity"]] += 1
                v = r["text"][s["start"]:s["end"]]
                if s["entity"] == "CREDIT_CARD":
                    digits = re.sub(r"\D", "", v)
                    cards[len(digits)] += 1
                    if not luhn_ok(digits):
                        bad["CREDIT_CARD luhn"] += 1
                elif s["entity"] == "US_SSN" and not ssn_ok(v):
                    bad["US_SSN rules"] += 1
                elif s["entity"] == "IBAN_CODE" and not iban_ok(v):
                    bad["IBAN mod-97"] += 1
        stats["spans"][half] = dict(sorted(c.items()))
    tt = set(r["template"] for r in halves["tune"])
    rt = set(r["template"] for r in halves["report"])
    assert not (tt & rt), "template in both halves"
    stats["card_digit_lengths"] = dict(sorted(cards.items()))
    stats["validator_failures"] = dict(bad)
    return stats


def write(halves: dict[str, list[dict]], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for half, rows in halves.items():
        with open(out / f"{half}.jsonl", "w", encoding="utf-8", newline="\n") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--per-template", type=int, default=8)
    ap.add_argument("--out", type=Path, default=HERE / "data")
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()

    halves = generate(args.seed, args.per_template)
    stats = check_and_stats(halves)
    if args.check:
        with tempfile.TemporaryDirectory() as d:
            write(halves, Path(d))
            same = all((Path(d) / f"{h}.jsonl").read_bytes() == (args.out / f"{h}.jsonl").read_bytes()
                       for h in halves)
        print("committed data reproduced" if same else "committed data DIFFERS from a fresh generation")
        return 0 if same else 1
    write(halves, args.out)
    import faker
    import presidio_evaluator  # noqa: F401
    from importlib.metadata import version
    stats["versions"] = {"presidio-evaluator": version("presidio-evaluator"), "Faker": faker.VERSION,
                         "seed": args.seed, "per_template": args.per_template}
    json.dump(stats, sys.stdout, indent=1)
    print()
    if stats["validator_failures"]:
        print("validator failures:", stats["validator_failures"], file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
