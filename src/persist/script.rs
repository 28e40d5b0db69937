//! One write to the backing Redis: a Lua script that checks the fences of
//! the slots it writes and applies a batch of changes in one atomic step.
//!
//! Why a script rather than a pipeline of HSETs:
//! - **Atomic.** A batch (a transaction's changes, or many clients' changes
//!   grouped) is applied whole or not at all: a crash of either side never
//!   leaves half of it.
//! - **Fenced.** Each slot's fence names its owner; a writer that lost a slot
//!   (paused past its lease, cut off) cannot write it (`FENCED`).
//! - **Loss seen.** A missing fence means the backing Redis lost what it had
//!   (FLUSHALL, a restart without persistence): `LOST`, and nothing is
//!   written until the writer has claimed the slots again and written its
//!   whole state back.
//! - **Exactly once.** Each batch carries a sequence number that the fences
//!   remember; a batch retried after its reply was lost (a timeout, a broken
//!   connection) finds it there and is skipped (`DUP`): no change is applied
//!   twice and, above all, no event is published twice.
//! - **Command errors isolated.** A data command that fails (WRONGTYPE on a
//!   key someone else wrote) is caught with `pcall`, reported with its
//!   position, and the rest of the batch is applied. Errors that refuse the
//!   whole script up front (`-OOM` past maxmemory, `-READONLY` on a replica,
//!   `-MISCONF`) come back as the call's error, before anything ran: the
//!   shebang line makes Redis treat the script as a writer and check them
//!   first.

use bytes::Bytes;
use std::collections::HashMap;

/// The script. KEYS: the batch's fences first (`ARGV[3]` of them), then the
/// keys its operations name. ARGV: owner, batch sequence, number of fences,
/// then the operations, each a code and its arguments (a key as its index
/// in KEYS):
///
/// | code | arguments | command |
/// | --- | --- | --- |
/// | `H` | key field value | HSET |
/// | `D` | key field | HDEL |
/// | `X` | key | DEL |
/// | `S` | key member | SADD |
/// | `R` | key member | SREM |
/// | `P` | channel message | PUBLISH |
/// | `W` | key offset bytes | SETRANGE |
/// | `V` | key bytes | SET (SETRANGE at 0 if the key is not a string: WRONGTYPE, as for `W`) |
/// | `C` | set prefix | DEL of `prefix .. m` for each member `m` of the set, and of the set |
///
/// Replies `{"OK", {op, error, op, error…}}`, `{"DUP"}`, `{"LOST", i}` or
/// `{"FENCED", i, owner}` (i: the fence's index in KEYS).
pub const SOURCE: &str = r#"#!lua
local owner = ARGV[1]
local seq = tonumber(ARGV[2])
local nf = tonumber(ARGV[3])
for i = 1, nf do
  local f = redis.call('HMGET', KEYS[i], 'owner', 'seq')
  if not f[1] then return {'LOST', i} end
  if f[1] ~= owner then return {'FENCED', i, f[1]} end
  if f[2] and tonumber(f[2]) >= seq then return {'DUP'} end
end
local errs = {}
local i = 4
local n = 0
local r
while i <= #ARGV do
  local op = ARGV[i]
  n = n + 1
  if op == 'H' then
    r = redis.pcall('HSET', KEYS[tonumber(ARGV[i + 1])], ARGV[i + 2], ARGV[i + 3]); i = i + 4
  elseif op == 'D' then
    r = redis.pcall('HDEL', KEYS[tonumber(ARGV[i + 1])], ARGV[i + 2]); i = i + 3
  elseif op == 'X' then
    r = redis.pcall('DEL', KEYS[tonumber(ARGV[i + 1])]); i = i + 2
  elseif op == 'S' then
    r = redis.pcall('SADD', KEYS[tonumber(ARGV[i + 1])], ARGV[i + 2]); i = i + 3
  elseif op == 'R' then
    r = redis.pcall('SREM', KEYS[tonumber(ARGV[i + 1])], ARGV[i + 2]); i = i + 3
  elseif op == 'P' then
    r = redis.pcall('PUBLISH', ARGV[i + 1], ARGV[i + 2]); i = i + 3
  elseif op == 'V' then
    local k = KEYS[tonumber(ARGV[i + 1])]
    local t = redis.call('TYPE', k).ok
    if t == 'none' or t == 'string' then
      r = redis.pcall('SET', k, ARGV[i + 2])
    else
      r = redis.pcall('SETRANGE', k, 0, ARGV[i + 2])
    end
    i = i + 3
  elseif op == 'W' then
    r = redis.pcall('SETRANGE', KEYS[tonumber(ARGV[i + 1])], ARGV[i + 2], ARGV[i + 3]); i = i + 4
  elseif op == 'C' then
    local set = KEYS[tonumber(ARGV[i + 1])]
    r = redis.pcall('SMEMBERS', set)
    if not r.err then
      for _, m in ipairs(r) do redis.call('DEL', ARGV[i + 2] .. m) end
      r = redis.pcall('DEL', set)
    end
    i = i + 3
  else
    return redis.error_reply('ERR tokend write script: unknown operation ' .. tostring(op))
  end
  if type(r) == 'table' and r.err then
    errs[#errs + 1] = n
    errs[#errs + 1] = r.err
  end
end
for j = 1, nf do
  redis.call('HSET', KEYS[j], 'seq', seq)
end
return {'OK', errs}
"#;

/// Claims slots: for each fence in KEYS, makes ARGV[1] its owner with the
/// next epoch, unless another owner holds it and ARGV[3] is not "force"
/// (then its index is returned as the first not claimed). ARGV[2]: the
/// owner's address. Replies the number claimed.
pub const CLAIM: &str = r#"#!lua
for i = 1, #KEYS do
  local f = redis.call('HMGET', KEYS[i], 'owner', 'epoch')
  if f[1] and f[1] ~= ARGV[1] and ARGV[3] ~= 'force' then return {i - 1, f[1]} end
  local epoch = (tonumber(f[2]) or 0) + 1
  redis.call('HSET', KEYS[i], 'owner', ARGV[1], 'epoch', epoch, 'addr', ARGV[2], 'seq', 0)
end
return {#KEYS, ''}
"#;

/// One operation of a batch.
pub enum Op<'a> {
    HSet(&'a [u8], &'a [u8], &'a [u8]),
    HDel(&'a [u8], &'a [u8]),
    Del(&'a [u8]),
    SAdd(&'a [u8], &'a [u8]),
    SRem(&'a [u8], &'a [u8]),
    Publish(&'a [u8], &'a [u8]),
    SetRange(&'a [u8], usize, &'a [u8]),
    Set(&'a [u8], &'a [u8]),
    /// A set of numbers, and the prefix that makes them keys.
    DelSlabs(&'a [u8], &'a [u8]),
}

/// A batch being built: fences, keys (each once), and the flat argument
/// list of its operations.
pub struct Batch {
    fences: Vec<String>,
    fence_index: HashMap<String, usize>,
    keys: Vec<Bytes>,
    key_index: HashMap<Bytes, usize>,
    /// Slab strings the batch lists in their pool's set already.
    listed: std::collections::HashSet<Vec<u8>>,
    args: Vec<Bytes>,
    ops: usize,
    /// The unit each operation belongs to, in order.
    units: Vec<u64>,
    /// The unit operations are added for now.
    unit: u64,
}

impl Batch {
    pub fn new() -> Batch {
        Batch {
            fences: Vec::new(),
            fence_index: HashMap::new(),
            keys: Vec::new(),
            key_index: HashMap::new(),
            listed: std::collections::HashSet::new(),
            args: Vec::new(),
            ops: 0,
            units: Vec::new(),
            unit: 0,
        }
    }

    /// Operations so far.
    pub fn ops(&self) -> usize {
        self.ops
    }

    /// Operations added from now on belong to unit `seq`.
    pub fn set_unit(&mut self, seq: u64) {
        self.unit = seq;
    }

    /// The unit operation `op` (1-based, as the script reports it) belongs to.
    pub fn unit_of(&self, op: usize) -> Option<u64> {
        op.checked_sub(1).and_then(|i| self.units.get(i)).copied()
    }

    /// Makes the batch check `fence`.
    pub fn fence(&mut self, fence: String) {
        if !self.fence_index.contains_key(&fence) {
            self.fence_index.insert(fence.clone(), self.fences.len());
            self.fences.push(fence);
        }
    }

    /// The fences, in KEYS order.
    pub fn fences(&self) -> &[String] {
        &self.fences
    }

    fn key(&mut self, key: &[u8]) -> Bytes {
        let n = match self.key_index.get(key) {
            Some(&n) => n,
            None => {
                let b = Bytes::copy_from_slice(key);
                self.keys.push(b.clone());
                self.key_index.insert(b, self.keys.len() - 1);
                self.keys.len() - 1
            }
        };
        // KEYS is 1-based, fences first.
        Bytes::from((n + 1).to_string())
    }

    /// True the first time it is asked about slab string `key` (which the
    /// batch then lists in its pool's set), until [`Batch::unlist`] drops
    /// it.
    pub fn first_listing(&mut self, key: &[u8]) -> bool {
        !self.listed.contains(key) && self.listed.insert(key.to_vec())
    }

    /// A pool's slab strings (those starting with `prefix`) were deleted:
    /// the next write of one lists it again.
    pub fn unlist(&mut self, prefix: &[u8]) {
        self.listed.retain(|k| !k.starts_with(prefix));
    }

    /// Adds an operation.
    pub fn push(&mut self, op: Op) {
        self.ops += 1;
        self.units.push(self.unit);
        let b = Bytes::copy_from_slice;
        match op {
            Op::HSet(k, f, v) => {
                let k = self.key(k);
                self.args.extend([Bytes::from_static(b"H"), k, b(f), b(v)]);
            }
            Op::HDel(k, f) => {
                let k = self.key(k);
                self.args.extend([Bytes::from_static(b"D"), k, b(f)]);
            }
            Op::Del(k) => {
                let k = self.key(k);
                self.args.extend([Bytes::from_static(b"X"), k]);
            }
            Op::SAdd(k, m) => {
                let k = self.key(k);
                self.args.extend([Bytes::from_static(b"S"), k, b(m)]);
            }
            Op::SRem(k, m) => {
                let k = self.key(k);
                self.args.extend([Bytes::from_static(b"R"), k, b(m)]);
            }
            Op::Publish(c, m) => self.args.extend([Bytes::from_static(b"P"), b(c), b(m)]),
            Op::SetRange(k, offset, v) => {
                let k = self.key(k);
                self.args.extend([Bytes::from_static(b"W"), k, Bytes::from(offset.to_string()), b(v)]);
            }
            Op::Set(k, v) => {
                let k = self.key(k);
                self.args.extend([Bytes::from_static(b"V"), k, b(v)]);
            }
            Op::DelSlabs(set, prefix) => {
                let set = self.key(set);
                self.args.extend([Bytes::from_static(b"C"), set, b(prefix)]);
            }
        }
    }

    /// The script invocation: KEYS (fences then data keys, whose indexes
    /// were taken counting the fences first) and ARGV.
    pub fn invocation<'s>(&self, script: &'s redis::Script, owner: &str, seq: u64) -> redis::ScriptInvocation<'s> {
        let mut inv = script.prepare_invoke();
        for f in &self.fences {
            inv.key(f.as_str());
        }
        for k in &self.keys {
            inv.key(k.as_ref());
        }
        inv.arg(owner).arg(seq).arg(self.fences.len());
        let nf = self.fences.len();
        let mut i = 0;
        while i < self.args.len() {
            let code = &self.args[i];
            inv.arg(code.as_ref());
            match code.as_ref() {
                b"P" => {
                    inv.arg(self.args[i + 1].as_ref()).arg(self.args[i + 2].as_ref());
                    i += 3;
                }
                _ => {
                    // Key indexes count from the first data key: shift past the fences.
                    let idx: usize =
                        std::str::from_utf8(&self.args[i + 1]).ok().and_then(|s| s.parse().ok()).unwrap_or(1);
                    inv.arg(idx + nf);
                    let width = match code.as_ref() {
                        b"H" | b"W" => 4,
                        b"X" => 2,
                        _ => 3,
                    };
                    for a in &self.args[i + 2..i + width] {
                        inv.arg(a.as_ref());
                    }
                    i += width;
                }
            }
        }
        inv
    }
}

impl Default for Batch {
    fn default() -> Self {
        Batch::new()
    }
}

/// What the script answered.
#[derive(Debug, PartialEq)]
pub enum Answer {
    /// Applied; the operations (1-based, in batch order) that failed, with
    /// Redis's error.
    Ok(Vec<(usize, String)>),
    /// Applied before (a retried batch).
    Dup,
    /// The fence at this index (in the batch's fences) is missing.
    Lost(usize),
    /// The fence at this index belongs to another owner.
    Fenced(usize, String),
}

impl Answer {
    /// Reads the script's reply.
    pub fn parse(v: redis::Value) -> Result<Answer, String> {
        use redis::Value;
        let text = |v: &Value| match v {
            Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
            Value::SimpleString(s) => Some(s.clone()),
            Value::Int(i) => Some(i.to_string()),
            _ => None,
        };
        let int = |v: &Value| text(v).and_then(|t| t.parse::<usize>().ok());
        let Value::Array(items) = v else { return Err(format!("unexpected reply {v:?}")) };
        match items.first().and_then(text).as_deref() {
            Some("OK") => {
                let mut errs = Vec::new();
                if let Some(Value::Array(e)) = items.get(1) {
                    for pair in e.chunks(2) {
                        if let [op, msg] = pair {
                            errs.push((int(op).unwrap_or(0), text(msg).unwrap_or_default()));
                        }
                    }
                }
                Ok(Answer::Ok(errs))
            }
            Some("DUP") => Ok(Answer::Dup),
            Some("LOST") => Ok(Answer::Lost(items.get(1).and_then(int).unwrap_or(1).saturating_sub(1))),
            Some("FENCED") => Ok(Answer::Fenced(
                items.get(1).and_then(int).unwrap_or(1).saturating_sub(1),
                items.get(2).and_then(text).unwrap_or_default(),
            )),
            _ => Err(format!("unexpected reply {items:?}")),
        }
    }
}
