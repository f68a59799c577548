//! Wire cost of heartbeats: the binary protocol against a newline-delimited
//! JSON baseline carrying the same content.
//!
//! Run with `cargo bench --bench codec`. Every benchmark reports
//! `Throughput::Elements` in heartbeats, so criterion's "thrpt" line is
//! heartbeats per second. Bytes per heartbeat for each encoding are printed
//! once, before the timed loops.
//!
//! Cases:
//! - `single/*`: one TCP HEARTBEAT frame (steady state, a few ms of jitter)
//!   against one JSON object `{"ts":..,"status":"ok","seq":..}\n`.
//! - `batch_1000/{no_status,status_1pct}/*`: 1,000 distinct sorted session
//!   ids drawn from 0..10,000,000 (seeded), in one BATCH_HEARTBEAT frame,
//!   against one JSON array of 1,000 objects that also carry `"session"`.
//!   The loops cycle over 20 such batches so that no single bit pattern is
//!   learnt by the branch predictor.

use std::hint::black_box;

use bytes::{BufMut, BytesMut};
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use heartline_proto::batch::{self, BatchEntry};
use heartline_proto::codec::types;
use heartline_proto::{encode_frame, varint, Batch, BatchView, FrameCodec, HeartbeatState, Message, Status};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use tokio_util::codec::Decoder;

/// Heartbeat interval of the single-session cases.
const INTERVAL_MS: u32 = 30_000;
/// Client clock jitter of the single-session cases: up to this many ms either way.
const JITTER_MS: i32 = 5;
/// Distinct heartbeats the single-session loops cycle over (a power of two).
const SINGLE_FRAMES: usize = 1024;
/// Sessions per batch, and the id space they are drawn from.
const BATCH_SIZE: usize = 1_000;
const ID_SPACE: usize = 10_000_000;
/// Batches the batch loops cycle over (and the median of bytes is taken over).
const BATCHES: usize = 20;
/// Status changes in the `status_1pct` variant (1% of `BATCH_SIZE`).
const STATUS_CHANGES: usize = 10;

/// The JSON baseline of one heartbeat: `{"ts":1718234567,"status":"ok","seq":123}`.
/// `status` borrows from the input on decode, the cheapest serde_json can do.
#[derive(Serialize, Deserialize)]
struct JsonHeartbeat<'a> {
    ts: u64,
    status: &'a str,
    seq: u64,
}

/// One entry of the JSON batch baseline: the same object plus its session.
#[derive(Serialize, Deserialize)]
struct JsonBatchEntry<'a> {
    session: u64,
    ts: u64,
    status: &'a str,
    seq: u64,
}

fn json_status(status: Option<Status>) -> &'static str {
    match status {
        None => "ok",
        Some(Status::Offline) => "offline",
        Some(Status::Online) => "online",
        Some(Status::Away) => "away",
        Some(Status::Busy) => "busy",
        Some(Status::Invisible) => "invisible",
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len().is_multiple_of(2) {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    }
}

/// Steady-state client clock steps: the interval plus a few ms of jitter.
fn ts_steps(rng: &mut StdRng) -> Vec<u32> {
    (0..SINGLE_FRAMES).map(|_| INTERVAL_MS.wrapping_add_signed(rng.gen_range(-JITTER_MS..=JITTER_MS))).collect()
}

fn single(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(0x4845_4152_5442_4541);
    let steps = ts_steps(&mut rng);

    // Frames as a client sends them, for the decode loop.
    let mut sender = HeartbeatState::new(INTERVAL_MS);
    let (mut seq, mut ts) = (0u32, 0u32);
    let frames: Vec<BytesMut> = steps
        .iter()
        .map(|&step| {
            seq = seq.wrapping_add(1);
            ts = ts.wrapping_add(step);
            let hb = sender.encode(seq, ts, Status::Online);
            let mut frame = BytesMut::new();
            encode_frame(&Message::Heartbeat(hb), &mut frame).unwrap();
            frame
        })
        .collect();
    // The receiver must end where the sender did.
    let mut receiver = HeartbeatState::new(INTERVAL_MS);
    let mut codec = FrameCodec::default();
    for frame in &frames {
        let mut buf = frame.clone();
        let Message::Heartbeat(hb) = Message::decode(codec.decode(&mut buf).unwrap().unwrap()).unwrap() else {
            panic!("not a heartbeat");
        };
        receiver.apply(&hb).unwrap();
    }
    assert_eq!(receiver, sender);

    let mut json = Vec::new();
    serde_json::to_writer(&mut json, &JsonHeartbeat { ts: 1_718_234_567, status: "ok", seq: 123 }).unwrap();
    json.push(b'\n');
    let tcp_bytes = frames.iter().map(|f| f.len()).sum::<usize>() as f64 / frames.len() as f64;
    eprintln!(
        "bytes/heartbeat single: tcp frame {tcp_bytes:.2} (mean over {} jittered frames), json {} (incl. newline): {}",
        frames.len(),
        json.len(),
        String::from_utf8_lossy(&json).trim_end(),
    );

    let mut g = c.benchmark_group("single");
    g.throughput(Throughput::Elements(1));

    g.bench_function("tcp_encode", |b| {
        let mut state = HeartbeatState::new(INTERVAL_MS);
        let mut buf = BytesMut::with_capacity(64);
        let (mut seq, mut ts, mut i) = (0u32, 0u32, 0usize);
        b.iter(|| {
            seq = seq.wrapping_add(1);
            ts = ts.wrapping_add(steps[i]);
            i = (i + 1) % SINGLE_FRAMES;
            let hb = state.encode(black_box(seq), black_box(ts), black_box(Status::Online));
            buf.clear();
            encode_frame(&Message::Heartbeat(hb), &mut buf).unwrap();
            black_box(&buf);
        })
    });

    g.bench_function("tcp_decode", |b| {
        let mut state = HeartbeatState::new(INTERVAL_MS);
        let mut codec = FrameCodec::default();
        let mut buf = BytesMut::with_capacity(4096);
        let mut i = 0usize;
        b.iter(|| {
            // What a socket read of one heartbeat leaves in the read buffer.
            buf.extend_from_slice(&frames[i]);
            i = (i + 1) % SINGLE_FRAMES;
            let frame = codec.decode(&mut buf).unwrap().unwrap();
            match Message::decode(frame).unwrap() {
                Message::Heartbeat(hb) => state.apply(&hb).unwrap(),
                _ => unreachable!(),
            }
            black_box(&state);
        })
    });

    g.bench_function("json_encode", |b| {
        let mut buf = Vec::with_capacity(64);
        let (mut seq, mut ts) = (123u64, 1_718_234_567u64);
        b.iter(|| {
            seq += 1;
            ts += 30;
            buf.clear();
            let hb = JsonHeartbeat { ts: black_box(ts), status: black_box("ok"), seq: black_box(seq) };
            serde_json::to_writer(&mut buf, &hb).unwrap();
            buf.push(b'\n');
            black_box(&buf);
        })
    });

    g.bench_function("json_decode", |b| {
        b.iter(|| {
            let hb: JsonHeartbeat = serde_json::from_slice(black_box(&json)).unwrap();
            black_box((hb.ts, hb.status, hb.seq));
        })
    });
    g.finish();
}

/// A batch's entries: `BATCH_SIZE` distinct sorted ids, `changes` of them
/// (at random positions) carrying a status change.
fn batch_entries(rng: &mut StdRng, changes: usize) -> Vec<BatchEntry> {
    let mut ids = rand::seq::index::sample(rng, ID_SPACE, BATCH_SIZE).into_vec();
    ids.sort_unstable();
    let mut entries: Vec<BatchEntry> = ids.into_iter().map(|id| (id as u64, None)).collect();
    for at in rand::seq::index::sample(rng, BATCH_SIZE, changes) {
        entries[at].1 = Some(Status::try_from(rng.gen_range(1..=4u8)).unwrap());
    }
    entries
}

/// A whole BATCH_HEARTBEAT frame written with `batch::write` straight into
/// `dst`: no `Batch`, no allocation, no validation pass. Like `encode_frame`,
/// writes behind a maximal length prefix and closes the gap.
fn write_batch_frame(dst: &mut BytesMut, entries: &[BatchEntry]) {
    const PREFIX: usize = 3;
    let start = dst.len();
    dst.extend_from_slice(&[0; PREFIX]);
    dst.put_u8(types::BATCH_HEARTBEAT);
    batch::write(dst, entries).unwrap();
    let len = dst.len() - start - PREFIX;
    let prefix_len = varint::len(len as u64);
    let gap = PREFIX - prefix_len;
    let mut prefix = [0u8; PREFIX];
    varint::put(&mut &mut prefix[..], len as u64);
    dst[start + gap..start + PREFIX].copy_from_slice(&prefix[..prefix_len]);
    if gap > 0 {
        dst.copy_within(start + gap.., start);
        dst.truncate(dst.len() - gap);
    }
}

/// The JSON baseline of a batch: one array of objects, newline-terminated.
fn json_batch_objects(entries: &[BatchEntry], seqs: &[u64]) -> Vec<JsonBatchEntry<'static>> {
    entries
        .iter()
        .zip(seqs)
        .map(|(&(session, status), &seq)| JsonBatchEntry {
            session,
            ts: 1_718_234_567,
            status: json_status(status),
            seq,
        })
        .collect()
}

fn write_json_batch(dst: &mut Vec<u8>, objects: &[JsonBatchEntry]) {
    serde_json::to_writer(&mut *dst, objects).unwrap();
    dst.push(b'\n');
}

/// Full batch decoding: every entry read, ids summed, status changes counted.
fn consume(entries: impl Iterator<Item = BatchEntry>) -> (u64, usize) {
    entries.fold((0u64, 0usize), |(sum, changes), (id, status)| {
        (sum.wrapping_add(id), changes + usize::from(status.is_some()))
    })
}

fn batch_variant(g: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>, name: &str, changes: usize, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let batches: Vec<Vec<BatchEntry>> = (0..BATCHES).map(|_| batch_entries(&mut rng, changes)).collect();
    let frames: Vec<BytesMut> = batches
        .iter()
        .map(|entries| {
            let mut frame = BytesMut::new();
            encode_frame(&Message::BatchHeartbeat(Batch::encode(entries).unwrap()), &mut frame).unwrap();
            frame
        })
        .collect();
    // Body of each frame: after the length prefix and the type byte.
    let bodies: Vec<&[u8]> = frames.iter().map(|f| &f[varint::get(f).unwrap().1 + 1..]).collect();
    // Per-session sequence numbers for the JSON objects: three digits, like the article's 123.
    let seqs: Vec<Vec<u64>> =
        (0..BATCHES).map(|_| (0..BATCH_SIZE).map(|_| rng.gen_range(100..1000)).collect()).collect();
    let json_objects: Vec<Vec<JsonBatchEntry>> =
        batches.iter().zip(&seqs).map(|(entries, seqs)| json_batch_objects(entries, seqs)).collect();
    let jsons: Vec<Vec<u8>> = json_objects
        .iter()
        .map(|objects| {
            let mut json = Vec::new();
            write_json_batch(&mut json, objects);
            json
        })
        .collect();

    // Both encode paths agree, and decoding gives back what was encoded.
    for ((entries, frame), body) in batches.iter().zip(&frames).zip(&bodies) {
        let mut direct = BytesMut::new();
        write_batch_frame(&mut direct, entries);
        assert_eq!(direct, *frame);
        let expected = consume(entries.iter().copied());
        assert_eq!(expected.1, changes);
        assert_eq!(consume(BatchView::parse(body).unwrap().iter()), expected);
        let whole = FrameCodec::default().decode(&mut frame.clone()).unwrap().unwrap();
        let Message::BatchHeartbeat(batch) = Message::decode(whole).unwrap() else {
            panic!("not a batch");
        };
        assert_eq!(batch.iter().collect::<Vec<_>>(), *entries);
    }

    let per_hb = |lens: Vec<usize>| median(lens.into_iter().map(|l| l as f64 / BATCH_SIZE as f64).collect());
    eprintln!(
        "bytes/heartbeat batch_1000/{name}: tcp frame {:.3} (median over {BATCHES} batches, frames {}..={} bytes), json {:.2}",
        per_hb(frames.iter().map(|f| f.len()).collect()),
        frames.iter().map(|f| f.len()).min().unwrap(),
        frames.iter().map(|f| f.len()).max().unwrap(),
        per_hb(jsons.iter().map(|j| j.len()).collect()),
    );

    g.bench_function(format!("{name}/tcp_encode_message"), |b| {
        let mut buf = BytesMut::with_capacity(8192);
        let mut i = 0usize;
        b.iter(|| {
            let entries = &batches[i];
            i = (i + 1) % BATCHES;
            buf.clear();
            let msg = Message::BatchHeartbeat(Batch::encode(entries).unwrap());
            encode_frame(&msg, &mut buf).unwrap();
            black_box(&buf);
        })
    });

    g.bench_function(format!("{name}/tcp_encode_direct"), |b| {
        let mut buf = BytesMut::with_capacity(8192);
        let mut i = 0usize;
        b.iter(|| {
            let entries = &batches[i];
            i = (i + 1) % BATCHES;
            buf.clear();
            write_batch_frame(&mut buf, black_box(entries));
            black_box(&buf);
        })
    });

    g.bench_function(format!("{name}/tcp_decode"), |b| {
        let mut codec = FrameCodec::default();
        let mut buf = BytesMut::with_capacity(8192);
        let mut i = 0usize;
        b.iter(|| {
            buf.extend_from_slice(&frames[i]);
            i = (i + 1) % BATCHES;
            let frame = codec.decode(&mut buf).unwrap().unwrap();
            let Message::BatchHeartbeat(batch) = Message::decode(frame).unwrap() else { unreachable!() };
            black_box(consume(batch.iter()));
        })
    });

    g.bench_function(format!("{name}/view_parse_iter"), |b| {
        let mut i = 0usize;
        b.iter(|| {
            let body = bodies[i];
            i = (i + 1) % BATCHES;
            let view = BatchView::parse(black_box(body)).unwrap();
            black_box(consume(view.iter()));
        })
    });

    g.bench_function(format!("{name}/json_encode"), |b| {
        let mut buf = Vec::with_capacity(64 * 1024);
        let mut i = 0usize;
        b.iter(|| {
            let objects = &json_objects[i];
            i = (i + 1) % BATCHES;
            buf.clear();
            write_json_batch(&mut buf, black_box(objects));
            black_box(&buf);
        })
    });

    g.bench_function(format!("{name}/json_decode"), |b| {
        let mut i = 0usize;
        b.iter(|| {
            let json = &jsons[i];
            i = (i + 1) % BATCHES;
            let objects: Vec<JsonBatchEntry> = serde_json::from_slice(black_box(json)).unwrap();
            let sum = objects.iter().fold(0u64, |sum, o| sum.wrapping_add(o.session));
            black_box(sum);
        })
    });
}

fn batches(c: &mut Criterion) {
    let mut g = c.benchmark_group("batch_1000");
    g.throughput(Throughput::Elements(BATCH_SIZE as u64));
    batch_variant(&mut g, "no_status", 0, 1);
    batch_variant(&mut g, "status_1pct", STATUS_CHANGES, 2);
    g.finish();
}

criterion_group!(benches, single, batches);
criterion_main!(benches);
