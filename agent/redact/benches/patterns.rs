//! Throughput of the pattern layer on one core: `cargo bench -p infergate-redact --bench patterns`.
//!
//! The text is call-centre-like prose with written and spoken PII mixed in, built from a fixed seed over a
//! table of sentences, so runs are comparable. Criterion reports bytes/s; a direct MB/s figure is printed at
//! the end for the report. Target (issue 13): >= 100 MB/s.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use infergate_redact::{EntitySet, Policy, Redactor, Style};

/// Most sentences carry nothing; about one in four carries something to redact.
const SENTENCES: [&str; 16] = [
    "Thank you for calling, how can I help you today? ",
    "I would like to check the status of my order from last week. ",
    "Sure, let me pull that up for you, it will take a moment. ",
    "The weather has been terrible so the delivery was delayed by two days. ",
    "Could you confirm the name on the account and the billing address please? ",
    "Of course, I understand, we will sort it out before the end of the day. ",
    "I have been a customer for a long time and this never happened before. ",
    "Let me transfer you to the right department, please hold the line. ",
    "Is there anything else I can help you with this afternoon? ",
    "Yes, my card number is 4111 1111 1111 1111 and it expires next year. ",
    "You can reach me at (212) 555-0100 or at jane.doe@example.com any time. ",
    "My social is 078-05-1120 and I was born on March 3rd, 1985. ",
    "The card is four one one one one one one one one one one one one one one one. ",
    "We paid 300 dollars into DE89 3704 0044 0532 0130 00 on the 12th. ",
    "The router at 192.168.0.1 and fe80::1ff:fe23:4567:890a keeps dropping. ",
    "Order 55012 shipped in 2 boxes, tracking will follow by e-mail tomorrow. ",
];

fn mixed_text(bytes: usize) -> String {
    let mut state = 0x5eed_u64;
    let mut text = String::with_capacity(bytes + 100);
    while text.len() < bytes {
        state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        // Three quarters plain sentences (the first nine), one quarter from the PII ones.
        let pick = (state >> 33) as usize;
        let index = if pick % 4 == 0 { 9 + (pick / 4) % 7 } else { (pick / 4) % 9 };
        text.push_str(SENTENCES[index]);
    }
    text
}

fn bench(c: &mut Criterion) {
    let text = mixed_text(1 << 20);
    let all = Redactor::new(Policy::new(EntitySet::ALL));
    let pci = Redactor::new(Policy::new(EntitySet::PCI));
    let marker = Redactor::new(Policy::new(EntitySet::ALL).style(Style::Marker));

    let mut group = c.benchmark_group("redact_patterns");
    group.throughput(Throughput::Bytes(text.len() as u64));
    group.sample_size(20);
    group.bench_function("all_entities_1MiB", |b| b.iter(|| all.redact(black_box(&text))));
    group.bench_function("pci_1MiB", |b| b.iter(|| pci.redact(black_box(&text))));
    group.bench_function("all_entities_marker_1MiB", |b| b.iter(|| marker.redact(black_box(&text))));
    group.finish();

    // A direct number for the report.
    for (name, redactor) in [("all entities", &all), ("pci only", &pci)] {
        let start = Instant::now();
        let mut iterations = 0u32;
        while start.elapsed() < Duration::from_secs(2) {
            black_box(redactor.redact(black_box(&text)));
            iterations += 1;
        }
        let bytes = f64::from(u32::try_from(text.len()).unwrap_or(u32::MAX)) * f64::from(iterations);
        let mb_per_s = bytes / 1e6 / start.elapsed().as_secs_f64();
        println!("redact_patterns ({name}): {mb_per_s:.0} MB/s on one core");
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
