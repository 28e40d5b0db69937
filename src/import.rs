//! `tokend import-seed`: brings the old service's tokens into a running
//! tokend.
//!
//! The old service kept, in a Redis, the sets `Token` (every token),
//! `Unassigned` and `Assigned` of members `token:<uuid>`, and per token
//! marker keys whose TTLs were its clocks: `token:<uuid>:tokens` (the
//! lifetime), `token:<uuid>:assigned` (the lease) and
//! `token:<uuid>:unassigned`. This reads that layout (it only reads: SSCAN
//! and PTTL) and sends each token to tokend as
//! `TOKEN.IMPORT pool token lifetime-ms [lease-ms]`, pipelined, so the
//! tokens come with the same states and the same time left. TOKEN.IMPORT
//! leaves a token the pool has already alone, so running the import again
//! changes nothing.
//!
//! What it cannot import it reports, with the reason: a member that is not
//! `token:<uuid>`, a token whose lifetime key is gone (the old service's
//! expiry listener missed it: it is dead) or has no TTL.

use clap::Parser;
use std::collections::{BTreeMap, HashSet};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// tokend import-seed: copy the old token service's tokens into tokend.
///
/// Reads the old service's Redis (sets Token, Unassigned, Assigned; keys
/// token:<uuid>:tokens and token:<uuid>:assigned whose TTLs are the lifetime
/// and the lease left) and creates the same tokens, in the same states and
/// with the same time left, in a pool of a running tokend. Safe to run twice:
/// tokens tokend has already are left alone.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "tokend import-seed",
    bin_name = "tokend import-seed",
    version,
    max_term_width = 100,
    verbatim_doc_comment
)]
pub struct ImportArgs {
    /// The old service's Redis, e.g. redis://127.0.0.1:6379/0.
    #[arg(long)]
    pub from: String,

    /// The pool to put the tokens in.
    #[arg(long, default_value = "default")]
    pub pool: String,

    /// The tokend to import into (a Redis URL: redis://:password@host:port).
    #[arg(long, default_value = "redis://127.0.0.1:6380")]
    pub to: String,

    /// Tokens per pipelined batch.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub batch: u64,
}

/// What an import did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    pub imported_free: u64,
    pub imported_assigned: u64,
    /// Already in the pool: left as they are.
    pub already_present: u64,
    /// Not imported, by reason.
    pub skipped: BTreeMap<String, u64>,
    /// Tokens tokend refused, by its error.
    pub refused: BTreeMap<String, u64>,
}

impl Report {
    pub fn skipped_total(&self) -> u64 {
        self.skipped.values().sum::<u64>() + self.refused.values().sum::<u64>()
    }

    fn skip(&mut self, why: &str) {
        *self.skipped.entry(why.to_string()).or_default() += 1;
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "imported: {} free, {} assigned", self.imported_free, self.imported_assigned)?;
        writeln!(f, "already in the pool (left as they are): {}", self.already_present)?;
        writeln!(f, "not imported: {}", self.skipped_total())?;
        for (why, n) in &self.skipped {
            writeln!(f, "  {n}: {why}")?;
        }
        for (why, n) in &self.refused {
            writeln!(f, "  {n}: tokend refused it: {why}")?;
        }
        Ok(())
    }
}

/// One token as the old layout has it.
struct OldToken {
    uuid: String,
    /// PTTL of `token:<uuid>:tokens`.
    life: i64,
    /// PTTL of `token:<uuid>:assigned`, if the token is in `Assigned`.
    lease: Option<i64>,
}

/// Every member of a set (SSCAN, so that a big set does not block Redis).
async fn members(con: &mut redis::aio::MultiplexedConnection, key: &str) -> redis::RedisResult<Vec<String>> {
    let mut out = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) =
            redis::cmd("SSCAN").arg(key).arg(cursor).arg("COUNT").arg(1000).query_async(con).await?;
        out.extend(batch);
        if next == 0 {
            return Ok(out);
        }
        cursor = next;
    }
}

/// Progress on stderr: a bar on a terminal, a line every 10% otherwise.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    total: u64,
    done: u64,
    next_line: u64,
    started: Instant,
}

impl Progress {
    fn new(total: u64) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = indicatif::ProgressBar::new(total);
            b.set_style(
                indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} tokens ({per_sec}, {eta} left)")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            b
        });
        Progress { bar, total, done: 0, next_line: 0, started: Instant::now() }
    }

    fn add(&mut self, n: u64) {
        self.done += n;
        match &self.bar {
            Some(b) => b.set_position(self.done),
            None => {
                if self.done >= self.next_line || self.done == self.total {
                    eprintln!(
                        "import-seed: {}/{} tokens ({:.1} s)",
                        self.done,
                        self.total,
                        self.started.elapsed().as_secs_f64()
                    );
                    self.next_line = self.done + (self.total / 10).max(1);
                }
            }
        }
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish();
        }
    }
}

/// Runs an import; the report, or why it could not run at all.
pub async fn run(args: &ImportArgs) -> Result<Report, String> {
    let old = redis::Client::open(args.from.as_str()).map_err(|e| format!("--from {}: {e}", args.from))?;
    let mut old = tokio::time::timeout(Duration::from_secs(10), old.get_multiplexed_async_connection())
        .await
        .map_err(|_| format!("--from {}: no answer within 10 s", args.from))?
        .map_err(|e| format!("--from {}: {e}", args.from))?;
    let to = redis::Client::open(args.to.as_str()).map_err(|e| format!("--to {}: {e}", args.to))?;
    let mut to = tokio::time::timeout(Duration::from_secs(10), to.get_multiplexed_async_connection())
        .await
        .map_err(|_| format!("--to {}: no answer within 10 s", args.to))?
        .map_err(|e| format!("--to {}: {e}", args.to))?;
    // A tokend answers TOKEN.STATS; a plain Redis does not: say so at once.
    let _: redis::Value = redis::cmd("TOKEN.STATS")
        .arg(&args.pool)
        .query_async(&mut to)
        .await
        .map_err(|e| format!("--to {} does not look like a tokend: {e}", args.to))?;

    let all = members(&mut old, "Token").await.map_err(|e| format!("reading the set Token: {e}"))?;
    let assigned: HashSet<String> = members(&mut old, "Assigned")
        .await
        .map_err(|e| format!("reading the set Assigned: {e}"))?
        .into_iter()
        .collect();
    let mut report = Report::default();
    let mut progress = Progress::new(all.len() as u64);
    for chunk in all.chunks(args.batch as usize) {
        // The clocks of the batch, read in one round trip.
        let mut tokens = Vec::with_capacity(chunk.len());
        let mut pipe = redis::pipe();
        for member in chunk {
            let Some(uuid) = member.strip_prefix("token:").filter(|u| uuid::Uuid::try_parse(u).is_ok()) else {
                report.skip("the member is not token:<uuid>");
                continue;
            };
            let canonical = uuid::Uuid::try_parse(uuid).map(|u| u.hyphenated().to_string()).unwrap_or_default();
            pipe.cmd("PTTL").arg(format!("{member}:tokens"));
            let is_assigned = assigned.contains(member);
            if is_assigned {
                pipe.cmd("PTTL").arg(format!("{member}:assigned"));
            }
            tokens.push((canonical, is_assigned));
        }
        let ttls: Vec<i64> = pipe.query_async(&mut old).await.map_err(|e| format!("reading TTLs: {e}"))?;
        let mut ttls = ttls.into_iter();
        let mut olds = Vec::with_capacity(tokens.len());
        for (uuid, is_assigned) in tokens {
            let life = ttls.next().unwrap_or(-2);
            let lease = if is_assigned { Some(ttls.next().unwrap_or(-2)) } else { None };
            olds.push(OldToken { uuid, life, lease });
        }
        // The imports of the batch, in one round trip.
        let mut pipe = redis::pipe();
        let mut sent = Vec::new();
        for t in olds {
            if t.life == -2 {
                report.skip("its lifetime key token:<uuid>:tokens is gone (the token is dead)");
                continue;
            }
            if t.life == -1 {
                report.skip("its lifetime key token:<uuid>:tokens has no TTL");
                continue;
            }
            // An assigned token whose lease key is gone had its lease end
            // (the old listener would have freed it): it comes in free.
            let lease = t.lease.filter(|&ms| ms > 0);
            let cmd = pipe.cmd("TOKEN.IMPORT").arg(&args.pool).arg(&t.uuid).arg(t.life.max(1));
            if let Some(ms) = lease {
                cmd.arg(ms);
            }
            sent.push(lease.is_some());
        }
        if !sent.is_empty() {
            let replies: Vec<redis::Value> =
                pipe.query_async(&mut to).await.map_err(|e| format!("importing into {}: {e}", args.to))?;
            for (assigned, reply) in sent.into_iter().zip(replies) {
                match reply {
                    redis::Value::Int(1) if assigned => report.imported_assigned += 1,
                    redis::Value::Int(1) => report.imported_free += 1,
                    redis::Value::Int(_) => report.already_present += 1,
                    redis::Value::ServerError(e) => {
                        *report.refused.entry(e.to_string()).or_default() += 1;
                    }
                    other => {
                        *report.refused.entry(format!("{other:?}")).or_default() += 1;
                    }
                }
            }
        }
        progress.add(chunk.len() as u64);
    }
    progress.finish();
    Ok(report)
}
