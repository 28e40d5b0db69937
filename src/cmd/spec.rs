//! The shape of the command table: what every command declares (name,
//! arity, typed flags, key positions, documentation, handler), and the key
//! extraction every front end uses. The table itself, with its lookups, is
//! `table`; `COMMAND` renders it (`command`).

use super::{Call, Ctx, Outcome};
use crate::parse::{Parse, ParseError};
use bytes::Bytes;

/// Runs a command: its arguments, and everything it may touch.
pub type Run = fn(&mut Parse, &mut Call<'_, '_>) -> Result<Outcome, ParseError>;

/// Checks a command's arguments without running it (MULTI queueing).
pub type Check = fn(&mut Parse, &Ctx) -> Result<(), ParseError>;

/// Command flags, as a bit set. The first twenty are Redis's, in the order
/// Redis's `COMMAND INFO` prints them (`addReplyCommandFlags`), so the set
/// renders exactly as Redis renders it; the last three are tokend's own and
/// never shown.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct Flags(u32);

impl Flags {
    pub const NONE: Flags = Flags(0);
    pub const WRITE: Flags = Flags(1 << 0);
    pub const READONLY: Flags = Flags(1 << 1);
    pub const DENYOOM: Flags = Flags(1 << 2);
    pub const MODULE: Flags = Flags(1 << 3);
    pub const ADMIN: Flags = Flags(1 << 4);
    pub const PUBSUB: Flags = Flags(1 << 5);
    pub const NOSCRIPT: Flags = Flags(1 << 6);
    pub const BLOCKING: Flags = Flags(1 << 7);
    /// Allowed while the dataset loads (others get `-LOADING`).
    pub const LOADING: Flags = Flags(1 << 8);
    pub const STALE: Flags = Flags(1 << 9);
    pub const SKIP_MONITOR: Flags = Flags(1 << 10);
    pub const SKIP_SLOWLOG: Flags = Flags(1 << 11);
    pub const ASKING: Flags = Flags(1 << 12);
    pub const FAST: Flags = Flags(1 << 13);
    /// Allowed before AUTH.
    pub const NO_AUTH: Flags = Flags(1 << 14);
    pub const NO_MANDATORY_KEYS: Flags = Flags(1 << 15);
    pub const NO_ASYNC_LOADING: Flags = Flags(1 << 16);
    /// Refused inside MULTI.
    pub const NO_MULTI: Flags = Flags(1 << 17);
    pub const MOVABLE_KEYS: Flags = Flags(1 << 18);
    pub const ALLOW_BUSY: Flags = Flags(1 << 19);
    /// tokend: allowed in a RESP2 connection that has subscriptions.
    pub const SUBSCRIBED_OK: Flags = Flags(1 << 24);
    /// tokend: runs at once inside MULTI instead of being queued (EXEC,
    /// DISCARD, MULTI, WATCH, QUIT, RESET, as in Redis).
    pub const TXN_CONTROL: Flags = Flags(1 << 25);
    /// tokend: reads the whole store (INFO, DBSIZE), so a transaction that
    /// holds it locks every shard.
    pub const WHOLE_STORE: Flags = Flags(1 << 26);
    /// tokend: refused inside MULTI (it answers more than once, or changes
    /// the connection: SUBSCRIBE and friends, HELLO, AUTH).
    pub const NOT_IN_TXN: Flags = Flags(1 << 27);
    /// tokend: `NAME pool token` on an existing token, whose slot the store
    /// can prefetch ahead of a pipelined batch.
    pub const NAMES_TOKEN: Flags = Flags(1 << 28);

    /// Redis's names of the shown flags, in bit order.
    const NAMES: [&'static str; 20] = [
        "write",
        "readonly",
        "denyoom",
        "module",
        "admin",
        "pubsub",
        "noscript",
        "blocking",
        "loading",
        "stale",
        "skip_monitor",
        "skip_slowlog",
        "asking",
        "fast",
        "no_auth",
        "no_mandatory_keys",
        "no_async_loading",
        "no_multi",
        "movablekeys",
        "allow_busy",
    ];

    /// Both sets (a `const fn`, for the table).
    pub const fn with(self, other: Flags) -> Flags {
        Flags(self.0 | other.0)
    }

    /// True if every flag of `other` is set.
    pub const fn has(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }

    /// The shown flags' names, in Redis's order.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        Self::NAMES.iter().enumerate().filter(move |(i, _)| self.0 & (1 << i) != 0).map(|(_, n)| *n)
    }
}

impl std::fmt::Debug for Flags {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

/// A flag set from names: `flags![WRITE, FAST]`.
macro_rules! flags {
    ($($f:ident),* $(,)?) => { $crate::cmd::spec::Flags::NONE$(.with($crate::cmd::spec::Flags::$f))* };
}
pub(crate) use flags;

/// The kind of an argument in `COMMAND DOCS`, as Redis names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgType {
    /// Any string.
    String,
    /// A 64-bit integer.
    Integer,
    /// A floating-point number.
    Double,
    /// A key name; the argument also names the key spec that finds it.
    Key,
    /// A glob-style pattern.
    Pattern,
    /// A Unix timestamp.
    UnixTime,
    /// A keyword alone, with no value (like SET's `NX`).
    PureToken,
    /// Exactly one of the nested arguments.
    OneOf,
    /// All of the nested arguments, in order.
    Block,
}

impl ArgType {
    /// The name `COMMAND DOCS` reports (`"pure-token"`, `"oneof"`…).
    pub const fn as_str(self) -> &'static str {
        match self {
            ArgType::String => "string",
            ArgType::Integer => "integer",
            ArgType::Double => "double",
            ArgType::Key => "key",
            ArgType::Pattern => "pattern",
            ArgType::UnixTime => "unix-time",
            ArgType::PureToken => "pure-token",
            ArgType::OneOf => "oneof",
            ArgType::Block => "block",
        }
    }
}

/// One argument of a command's grammar, as `COMMAND DOCS` describes it; this
/// is what `redis-cli` turns into its inline hints.
#[derive(Debug, Clone, Copy)]
pub struct Arg {
    /// The name hints show for the value (`seconds`, `pool`).
    pub name: &'static str,
    /// The argument's `type` in `COMMAND DOCS` (a Rust keyword, hence `kind`).
    pub kind: ArgType,
    /// Shown instead of `name` by Redis 7.2+ clients; Redis 7.0 has no such
    /// field, so it is only sent when set (no entry sets it today).
    pub display_text: Option<&'static str>,
    /// For `key` arguments: the index of the key spec that finds this key.
    pub key_spec_index: Option<u32>,
    /// The literal keyword that introduces the argument (`EX`, `COUNT`…).
    pub token: Option<&'static str>,
    /// The version that added the argument.
    pub since: Option<&'static str>,
    /// The version that deprecated the argument.
    pub deprecated_since: Option<&'static str>,
    /// Any of `optional`, `multiple`, `multiple_token`.
    pub flags: &'static [&'static str],
    /// The alternatives of a `oneof`, the parts of a `block`.
    pub args: &'static [Arg],
}

impl Arg {
    /// A plain argument; the builder methods below add the rest, so the
    /// table reads like Redis's JSON command files.
    pub const fn new(name: &'static str, kind: ArgType) -> Arg {
        Arg {
            name,
            kind,
            display_text: None,
            key_spec_index: None,
            token: None,
            since: None,
            deprecated_since: None,
            flags: &[],
            args: &[],
        }
    }

    /// A key argument found by key spec number `spec`.
    pub const fn key(name: &'static str, spec: u32) -> Arg {
        Arg { key_spec_index: Some(spec), ..Arg::new(name, ArgType::Key) }
    }

    /// Sets the keyword that introduces the argument.
    pub const fn token(self, token: &'static str) -> Arg {
        Arg { token: Some(token), ..self }
    }

    /// Sets the version that added the argument.
    pub const fn since(self, since: &'static str) -> Arg {
        Arg { since: Some(since), ..self }
    }

    /// Sets the version that deprecated the argument.
    pub const fn deprecated_since(self, since: &'static str) -> Arg {
        Arg { deprecated_since: Some(since), ..self }
    }

    /// Sets the argument flags (`optional`, `multiple`, `multiple_token`).
    pub const fn flags(self, flags: &'static [&'static str]) -> Arg {
        Arg { flags, ..self }
    }

    /// Sets the nested arguments of a `oneof` or `block`.
    pub const fn args(self, args: &'static [Arg]) -> Arg {
        Arg { args, ..self }
    }
}

/// How to find one key in a command's arguments, as Redis 7 key specs say it.
///
/// Only the kinds tokend's commands need are modelled: `begin_search` of type
/// `index` and `find_keys` of type `range` (the shape of GET's and SET's).
#[derive(Debug, Clone, Copy)]
pub struct KeySpec {
    /// A remark Redis prints first in the key spec, when there is one.
    pub notes: Option<&'static str>,
    /// `RO`/`RW`/`OW`/`RM` plus `access`, `update`, `insert`, `delete`…
    pub flags: &'static [&'static str],
    /// `begin_search.spec.index`: the argument index of the first key.
    pub begin_index: i32,
    /// `find_keys.spec.lastkey`, relative to `begin_index` (negative: from the end).
    pub last_key: i32,
    /// `find_keys.spec.keystep`.
    pub key_step: i32,
    /// `find_keys.spec.limit`.
    pub limit: i32,
}

/// Everything Redis's `COMMAND INFO` and `COMMAND DOCS` report about one
/// command (or one subcommand of a container such as `CLIENT`).
#[derive(Debug, Clone, Copy)]
pub struct CommandSpec {
    /// Lower case; a subcommand is `container|sub`, as Redis names it.
    pub name: &'static str,
    /// Redis semantics, counting the name (and the subcommand): `N` exactly
    /// N arguments, `-N` at least N.
    pub arity: i32,
    /// Command flags (typed; `COMMAND INFO` shows them by Redis's names).
    pub flags: Flags,
    /// The legacy key range that pre-7 cluster clients read: the index of the
    /// first key, 0 for commands without keys.
    pub first_key: i32,
    /// The index of the last key (negative: counted from the end).
    pub last_key: i32,
    /// The distance between keys.
    pub step: i32,
    /// ACL categories with their `@`, from Redis's existing set only.
    pub acl_categories: &'static [&'static str],
    /// Hints for clients and proxies (`nondeterministic_output`…).
    pub tips: &'static [&'static str],
    /// How cluster-aware clients find the keys (Redis 7 key specs).
    pub key_specs: &'static [KeySpec],
    /// One line for `COMMAND DOCS` and redis-cli's `HELP`.
    pub summary: &'static str,
    /// The version that introduced the command.
    pub since: &'static str,
    /// The documentation group (`connection`, `server`, `module`…).
    pub group: &'static str,
    /// The time complexity, in words.
    pub complexity: &'static str,
    /// The `module` field of `COMMAND DOCS`, set for commands in group
    /// `module` (tokend's own) so `COMMAND LIST FILTERBY MODULE` finds them.
    pub module: Option<&'static str>,
    /// `(version, what changed)` pairs.
    pub history: &'static [(&'static str, &'static str)],
    /// The argument grammar, without the command name.
    pub args: &'static [Arg],
    /// The subcommands of a container (`CLIENT`, `COMMAND`, `CONFIG`).
    pub subcommands: &'static [CommandSpec],
    /// Runs the command (its arguments after the name, and after the
    /// subcommand for a subcommand).
    pub run: Option<Run>,
    /// Checks the arguments without running anything: what a command must
    /// pass to be queued inside MULTI (besides arity). `None`: arity only.
    pub check: Option<Check>,
}

impl CommandSpec {
    /// The defaults every table entry starts from (`..CommandSpec::BASE`),
    /// so entries only spell out what they have.
    pub const BASE: CommandSpec = CommandSpec {
        name: "",
        arity: 0,
        flags: Flags::NONE,
        first_key: 0,
        last_key: 0,
        step: 0,
        acl_categories: &[],
        tips: &[],
        key_specs: &[],
        summary: "",
        since: "",
        group: "",
        complexity: "",
        module: None,
        history: &[],
        args: &[],
        subcommands: &[],
        run: None,
        check: None,
    };

    /// Whether `argc` arguments (counting the command name, and the
    /// subcommand name for a subcommand) satisfy the arity, as Redis checks it.
    pub fn arity_ok(&self, argc: usize) -> bool {
        let argc = i64::try_from(argc).unwrap_or(i64::MAX);
        let arity = i64::from(self.arity);
        if arity >= 0 { argc == arity } else { argc >= -arity }
    }

    /// How many words name the command: 1, or 2 for a subcommand.
    pub fn depth(&self) -> usize {
        if self.name.contains('|') { 2 } else { 1 }
    }

    /// The subcommand called `sub` (lower case, without the `container|`).
    pub fn subcommand(&self, sub: &[u8]) -> Option<&'static CommandSpec> {
        self.subcommands
            .iter()
            .find(|c| c.name.rsplit('|').next().is_some_and(|s| s.as_bytes().eq_ignore_ascii_case(sub)))
    }
}

impl CommandSpec {
    /// The keys (pools) `argv` names, as its key specs find them: what
    /// cluster routing, WATCH and transactions lock on. `argv` is the whole
    /// command, name included; it has passed the arity check.
    pub fn keys<'a>(&self, argv: &'a [Bytes]) -> Vec<&'a Bytes> {
        let argc = i64::try_from(argv.len()).unwrap_or(i64::MAX);
        let mut out = Vec::new();
        for ks in self.key_specs {
            let first = i64::from(ks.begin_index);
            let last = if ks.last_key >= 0 { first + i64::from(ks.last_key) } else { argc + i64::from(ks.last_key) };
            let step = usize::try_from(ks.key_step.max(1)).unwrap_or(1);
            let (Ok(first), Ok(last)) = (usize::try_from(first), usize::try_from(last)) else {
                continue;
            };
            for i in (first..=last).step_by(step) {
                let Some(key) = argv.get(i) else { break };
                out.push(key);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::table::{lookup, resolve};
    use crate::reply::Reply;

    #[test]
    fn arity_rules() {
        let spec = |arity| CommandSpec { arity, ..CommandSpec::BASE };
        assert!(spec(2).arity_ok(2));
        assert!(!spec(2).arity_ok(3));
        assert!(spec(-2).arity_ok(5));
        assert!(!spec(-2).arity_ok(1));
    }

    #[test]
    fn flags_render_in_redis_order_and_hide_tokends_own() {
        let f = flags![FAST, WRITE, LOADING, WHOLE_STORE, NAMES_TOKEN];
        assert_eq!(f.names().collect::<Vec<_>>(), ["write", "loading", "fast"]);
        assert!(f.has(Flags::WHOLE_STORE) && f.has(Flags::WRITE.with(Flags::FAST)));
        assert!(!f.has(Flags::READONLY));
    }

    #[test]
    fn keys_follow_the_key_specs() {
        let argv: Vec<Bytes> = ["WATCH", "a", "b", "c"].iter().map(|s| Bytes::from_static(s.as_bytes())).collect();
        let watch = lookup("watch").unwrap();
        assert_eq!(watch.keys(&argv), [&argv[1], &argv[2], &argv[3]]);
        let argv: Vec<Bytes> =
            ["TOKEN.GEN", "p", "COUNT", "3"].iter().map(|s| Bytes::from_static(s.as_bytes())).collect();
        assert_eq!(lookup("token.gen").unwrap().keys(&argv), [&argv[1]]);
        assert!(lookup("ping").unwrap().keys(&argv).is_empty());
    }

    #[test]
    fn resolve_gives_redis_errors_in_redis_order() {
        let argv = |a: &[&str]| a.iter().map(|s| Bytes::copy_from_slice(s.as_bytes())).collect::<Vec<_>>();
        assert_eq!(resolve(&argv(&["TOKEN.GEN", "p"])).map(|c| c.name), Ok("token.gen"));
        assert_eq!(resolve(&argv(&["client", "ID"])).map(|c| c.name), Ok("client|id"));
        assert_eq!(resolve(&argv(&["COMMAND"])).map(|c| c.name), Ok("command"));
        assert_eq!(
            resolve(&argv(&["token.gen"])).err(),
            Some(Reply::error("ERR wrong number of arguments for 'token.gen' command"))
        );
        assert_eq!(
            resolve(&argv(&["client"])).err(),
            Some(Reply::error("ERR wrong number of arguments for 'client' command"))
        );
        assert_eq!(
            resolve(&argv(&["client", "id", "x"])).err(),
            Some(Reply::error("ERR wrong number of arguments for 'client|id' command"))
        );
        assert_eq!(
            resolve(&argv(&["Client", "nope"])).err(),
            Some(Reply::error("ERR unknown subcommand 'nope'. Try CLIENT HELP."))
        );
        // Checked byte for byte against Redis 7.0.15, long arguments included.
        assert_eq!(
            resolve(&argv(&["NOPE", "a", "b"])).err(),
            Some(Reply::error("ERR unknown command 'NOPE', with args beginning with: 'a' 'b' "))
        );
        assert_eq!(
            resolve(&argv(&["nope"])).err(),
            Some(Reply::error("ERR unknown command 'nope', with args beginning with: "))
        );
        let (x, y) = ("x".repeat(100), "y".repeat(100));
        assert_eq!(
            resolve(&argv(&["nope", &x, &y, "z"])).err(),
            Some(Reply::error(format!(
                "ERR unknown command 'nope', with args beginning with: '{x}' '{}' ",
                "y".repeat(25)
            )))
        );
        assert_eq!(
            resolve(&argv(&["client|id"])).err(),
            Some(Reply::error("ERR unknown command 'client|id', with args beginning with: "))
        );
        assert!(resolve(&[]).is_err());
    }

    #[test]
    fn arity_semantics() {
        let g = lookup("token.gen").unwrap();
        assert!(!g.arity_ok(1) && g.arity_ok(2) && g.arity_ok(6));
        let del = lookup("token.del").unwrap();
        assert!(!del.arity_ok(2) && del.arity_ok(3) && !del.arity_ok(4));
    }
}
