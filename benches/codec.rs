//! The codec on a pipelined batch: decoding 16 and 64 requests of the cycle
//! workload (TOKEN.ACQUIRE, TOKEN.KEEPALIVE, TOKEN.UNBLOCK) from one buffer,
//! and encoding their replies (token, integer, integer) in RESP2 and RESP3.
//!
//! `cargo bench --bench codec` (about 30 seconds).

use bytes::BytesMut;
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::time::Duration;
use tokend::codec::{Limits, decode_request};
use tokend::reply::{Protocol, Reply};

const TOKEN: &str = "3f2b4c1e-9a0d-4e57-8c2b-6f1d2a7e9b10";

fn resp(args: &[&str]) -> Vec<u8> {
    let mut v = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        v.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
    }
    v
}

/// `n` requests of the cycle workload, back to back as a client pipelines them.
fn request_batch(n: usize) -> Vec<u8> {
    let cycle = [
        resp(&["TOKEN.ACQUIRE", "bench", "PX", "60000"]),
        resp(&["TOKEN.KEEPALIVE", "bench", TOKEN]),
        resp(&["TOKEN.UNBLOCK", "bench", TOKEN]),
    ];
    (0..n).flat_map(|i| cycle[i % 3].clone()).collect()
}

/// Their replies.
fn reply_batch(n: usize) -> Vec<Reply> {
    (0..n)
        .map(|i| match i % 3 {
            0 => Reply::bulk(TOKEN),
            1 => Reply::Integer(300_000),
            _ => Reply::Integer(1),
        })
        .collect()
}

fn bench_codec(c: &mut Criterion) {
    let mut g = c.benchmark_group("codec");
    g.sample_size(20).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(1));
    let limits = Limits::default();
    for n in [16usize, 64] {
        g.throughput(Throughput::Elements(n as u64));
        let wire = request_batch(n);
        g.bench_function(BenchmarkId::new("decode pipelined batch", n), |b| {
            b.iter_batched_ref(
                || BytesMut::from(&wire[..]),
                |buf| {
                    let mut k = 0;
                    while let Some(args) = decode_request(buf, &limits).expect("valid requests") {
                        k += args.len();
                    }
                    k
                },
                BatchSize::SmallInput,
            )
        });
        for (proto, name) in [(Protocol::Resp2, "encode batch RESP2"), (Protocol::Resp3, "encode batch RESP3")] {
            let replies = reply_batch(n);
            g.bench_function(BenchmarkId::new(name, n), |b| {
                b.iter_batched(
                    || (replies.clone(), BytesMut::with_capacity(4096)),
                    |(rs, mut out)| {
                        for r in rs {
                            r.encode(proto, &mut out);
                        }
                        out
                    },
                    BatchSize::SmallInput,
                )
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench_codec);
criterion_main!(benches);
