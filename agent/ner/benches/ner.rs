//! Throughput of patterns + NER on one core: `cargo bench -p infergate-ner --bench ner`.
//!
//! The text is a ~2 KB call-centre transcript (invented people and places) with names, addresses, a card
//! number and a phone number in it, as a final transcript reaches the redactor. Criterion reports bytes/s;
//! direct kchars/s (patterns + NER) and MB/s (patterns only) figures and the per-segment latency of a
//! short streaming segment (p50/p99) are printed at the end for the report. tract runs on the calling
//! thread (its default executor), so this is one core. Needs the weights
//! (tests/tools/install-ner-weights.sh); prints SKIP without them.

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use infergate_ner::NerModel;
use infergate_redact::{EntitySet, Policy, Redactor};

const TRANSCRIPT: &str = "Thank you for calling Northwind customer care, my name is Daniel, how can I help you today? \
Hi Daniel, yes, this is Margaret Ellison, I'm calling about an order that never arrived. \
I'm sorry to hear that, Mrs. Ellison. Could you confirm the shipping address on the order for me? \
Sure, it should have gone to 4127 Willow Creek Road, Apartment 12, Fort Collins, Colorado 80525. \
Thank you. I can see the order here, and it looks like the carrier marked it delivered on Tuesday afternoon. \
That's strange, because I was home all day and nobody came to the door. My neighbour, Tom Becker, didn't see anything either. \
I understand. Sometimes packages are left at the wrong house. Did you check with the building manager? \
Yes, I spoke with Alicia Moreno at the front desk, and she said nothing was dropped off for me. \
Okay, in that case I can send a replacement or refund the purchase to the original card. Which would you prefer? \
A replacement please, but could you send it to my office instead? It's at 55 Harbor Street, Suite 300, Boston, Massachusetts 02110. \
Of course. And for verification, can you give me the last digits of the card used on the order? \
Actually I'll just read the whole thing, it's 4111 1111 1111 1111, expiring next March. \
Thank you, you didn't need to read the whole number, but I have it verified now. \
Is there a phone number where the courier can reach you if there is a problem with the delivery? \
Yes, my mobile is 617-555-0142, and you can also e-mail me at margaret.ellison@example.com. \
Perfect. I've placed the replacement order and it should arrive within three business days. \
Is there anything else I can help you with today? No, that's everything, thank you so much Daniel. \
You're welcome, Mrs. Ellison, have a wonderful afternoon. \
Oh, one more thing, my husband Richard will be at home in Fort Collins next week if the courier needs a signature there. \
No problem, I have added a note for the courier with his name. Goodbye.";

/// One final streaming segment, as Whisper emits them.
const SEGMENT: &str = "It's at 55 Harbor Street, Suite 300, Boston, Massachusetts 02110, and ask for Margaret Ellison.";

fn model() -> Option<Arc<NerModel>> {
    let dir = std::env::var_os("INFERGATE_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.cache/models"))
        .join(infergate_ner::MODEL_DIR);
    match NerModel::load(&dir) {
        Ok(model) => Some(Arc::new(model)),
        Err(error) => {
            eprintln!("SKIP: {error}");
            None
        }
    }
}

/// Calls per second of `f` over about `seconds`.
fn rate(seconds: u64, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    let mut calls = 0u32;
    while start.elapsed() < Duration::from_secs(seconds) {
        f();
        calls += 1;
    }
    f64::from(calls) / start.elapsed().as_secs_f64()
}

fn bench(c: &mut Criterion) {
    let Some(model) = model() else { return };
    let chars = TRANSCRIPT.chars().count();
    let patterns = Redactor::new(Policy::new(EntitySet::PII));
    let full = Redactor::new(Policy::new(EntitySet::PII)).with_model(model);
    assert!(full.try_redact(TRANSCRIPT).unwrap().counts.len() >= 5, "the transcript should exercise the model");

    let mut group = c.benchmark_group("redact_ner");
    group.throughput(Throughput::Bytes(TRANSCRIPT.len() as u64));
    group.sample_size(20);
    group.bench_function("patterns_and_ner_2KB", |b| b.iter(|| full.try_redact(black_box(TRANSCRIPT)).unwrap()));
    group.bench_function("patterns_only_2KB", |b| b.iter(|| patterns.redact(black_box(TRANSCRIPT))));
    group.finish();

    // Direct numbers for the report.
    let per_second = rate(5, || drop(black_box(full.try_redact(black_box(TRANSCRIPT)).unwrap())));
    println!("patterns + NER: {:.1} kchars/s on one core ({chars} chars per call)", per_second * chars as f64 / 1e3);
    let per_second = rate(3, || drop(black_box(patterns.redact(black_box(TRANSCRIPT)))));
    println!("patterns only:  {:.0} MB/s on the same text", per_second * TRANSCRIPT.len() as f64 / 1e6);
    let mut latencies: Vec<Duration> = (0..300)
        .map(|_| {
            let start = Instant::now();
            black_box(full.try_redact(black_box(SEGMENT)).unwrap());
            start.elapsed()
        })
        .collect();
    latencies.sort();
    println!(
        "one {}-char segment: p50 {:.2} ms, p99 {:.2} ms",
        SEGMENT.chars().count(),
        latencies[150].as_secs_f64() * 1e3,
        latencies[296].as_secs_f64() * 1e3
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
