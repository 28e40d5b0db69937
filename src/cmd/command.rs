//! The command table and the `COMMAND` command.
//!
//! Clients learn what a server can do from `COMMAND`: `redis-cli` 7.0 builds
//! its argument hints from `COMMAND DOCS`, and cluster-aware clients find the
//! key of a command from `COMMAND INFO` (first/last/step and key specs). So
//! this module holds one static table describing every command tokend
//! implements, with the metadata Redis 7.0 exposes, and answers `COMMAND` from
//! it with reply types that mirror Redis 7.0's exactly: strict clients assert
//! on them (redis-cli aborts if an argument's `flags` are bulk strings instead
//! of status replies).
//!
//! The entries for Redis's own commands were transcribed from a real Redis
//! 7.0.15 (`COMMAND INFO` / `COMMAND DOCS`), keeping only the subcommands
//! tokend implements; `CLIENT SETINFO`, which 7.0 lacks, follows Redis 7.2.
//!
//! The dispatcher uses the same table for arity checks ([`CommandSpec::arity_ok`],
//! [`arity_error`]) or the whole Redis lookup sequence ([`resolve`]), so the
//! arity advertised and the arity enforced cannot drift apart.
//!
//! Two known departures from Redis's reply types, both in RESP3 only, forced
//! by `Reply::Set` (it becomes a `redis-protocol` `FrameSet`, which hashes its
//! members and panics on a map or an array): non-empty key-spec lists and
//! command history are sent as arrays (`*`) where Redis sends sets (`~`).
//! Empty ones are still sets. RESP2 is unaffected (both are arrays there).

use crate::parse::Parse;
use crate::reply::Reply;
use bytes::Bytes;

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
    /// Command flags as Redis names them (`write`, `denyoom`, `fast`…).
    pub flags: &'static [&'static str],
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
}

impl CommandSpec {
    /// The defaults every table entry starts from (`..CommandSpec::BASE`),
    /// so entries only spell out what they have.
    pub const BASE: CommandSpec = CommandSpec {
        name: "",
        arity: 0,
        flags: &[],
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
    };

    /// Whether `argc` arguments (counting the command name, and the
    /// subcommand name for a subcommand) satisfy the arity, as Redis checks it.
    pub fn arity_ok(&self, argc: usize) -> bool {
        let argc = i64::try_from(argc).unwrap_or(i64::MAX);
        let arity = i64::from(self.arity);
        if arity >= 0 { argc == arity } else { argc >= -arity }
    }

    /// The subcommand called `sub` (lower case, without the `container|`).
    pub fn subcommand(&self, sub: &[u8]) -> Option<&'static CommandSpec> {
        self.subcommands
            .iter()
            .find(|c| c.name.rsplit('|').next().is_some_and(|s| s.as_bytes().eq_ignore_ascii_case(sub)))
    }
}

/// The `module` name tokend's own commands report, and the argument that
/// `COMMAND LIST FILTERBY MODULE` matches them with.
pub const MODULE_NAME: &str = "tokend";

/// The version the TOKEN commands debuted in. Redis asks modules for their
/// own version here, not Redis's; it must not follow later releases.
const TOKEN_SINCE: &str = "0.1.0";

/// A key spec for the pool, the first argument: begin at index 1, one key,
/// exactly as Redis describes GET's and SET's key.
const fn pool_key(flags: &'static [&'static str]) -> KeySpec {
    KeySpec { notes: None, flags, begin_index: 1, last_key: 0, key_step: 1, limit: 0 }
}

/// `[EX seconds | PX milliseconds]`, shaped like SET's `expiration` argument.
const DURATION: Arg = Arg::new("expiration", ArgType::OneOf)
    .flags(&["optional"])
    .args(&[Arg::new("seconds", ArgType::Integer).token("EX"), Arg::new("milliseconds", ArgType::Integer).token("PX")]);

/// The `token` argument of the commands that address one token.
const TOKEN_ARG: Arg = Arg::new("token", ArgType::String);

/// Fields shared by every TOKEN command.
///
/// Group: Redis has no group for tokend's commands, and `generic` means
/// type-agnostic keyspace commands (DEL, EXPIRE…), which these are not. Their
/// dotted names are the module convention (`JSON.GET`, `FT.SEARCH`), so they
/// are described exactly as Redis 7.0 describes a module's commands (checked
/// against a test module loaded into Redis 7.0.15): group `module`, a `module`
/// field in `COMMAND DOCS`, and the `module` command flag in `COMMAND INFO`.
/// That also gives `COMMAND LIST FILTERBY MODULE tokend` a meaning.
///
/// ACL categories: Redis 7.0 gives module commands none, but clients filter
/// on them, so they get the ones Redis derives from the flags for its own
/// commands (write → @write, readonly → @read, fast → @fast else @slow,
/// blocking → @blocking); no data-type category fits a pool.
const TOKEN_BASE: CommandSpec = CommandSpec {
    first_key: 1,
    last_key: 1,
    step: 1,
    since: TOKEN_SINCE,
    group: "module",
    module: Some(MODULE_NAME),
    ..CommandSpec::BASE
};

/// Every command tokend implements. Order is that of `COMMAND` replies.
static COMMANDS: &[CommandSpec] = &[
    // TOKEN.GEN pool [EX s | PX ms] [COUNT n]: adds memory (denyoom), O(N)
    // with COUNT so not `fast`; its key spec inserts, like SADD's.
    CommandSpec {
        name: "token.gen",
        arity: -2,
        flags: &["write", "denyoom", "module"],
        acl_categories: &["@write", "@slow"],
        tips: &["nondeterministic_output"],
        key_specs: &[pool_key(&["RW", "insert"])],
        summary: "Generates new free tokens in a pool",
        complexity: "O(N) where N is the number of tokens generated",
        args: &[Arg::key("pool", 0), DURATION, Arg::new("count", ArgType::Integer).token("COUNT").flags(&["optional"])],
        ..TOKEN_BASE
    },
    // TOKEN.ACQUIRE pool [EX s | PX ms] [BLOCK ms]: may block (like XREAD,
    // whose BLOCK is optional too); returns an existing token (access) and
    // changes its state (update); the pick is random, like SPOP's.
    CommandSpec {
        name: "token.acquire",
        arity: -2,
        flags: &["write", "module", "blocking"],
        acl_categories: &["@write", "@slow", "@blocking"],
        tips: &["nondeterministic_output"],
        key_specs: &[pool_key(&["RW", "access", "update"])],
        summary: "Assigns a random free token of a pool with a lease, optionally waiting for one",
        complexity: "O(1)",
        args: &[
            Arg::key("pool", 0),
            DURATION,
            Arg::new("milliseconds", ArgType::Integer).token("BLOCK").flags(&["optional"]),
        ],
        ..TOKEN_BASE
    },
    // TOKEN.KEEPALIVE pool token: restarts deadlines (update), like PEXPIRE.
    CommandSpec {
        name: "token.keepalive",
        arity: 3,
        flags: &["write", "module", "fast"],
        acl_categories: &["@write", "@fast"],
        key_specs: &[pool_key(&["RW", "update"])],
        summary: "Restarts a token's lifetime and, if assigned, its lease",
        complexity: "O(1)",
        args: &[Arg::key("pool", 0), TOKEN_ARG],
        ..TOKEN_BASE
    },
    // TOKEN.UNBLOCK pool token: assigned → free (update).
    CommandSpec {
        name: "token.unblock",
        arity: 3,
        flags: &["write", "module", "fast"],
        acl_categories: &["@write", "@fast"],
        key_specs: &[pool_key(&["RW", "update"])],
        summary: "Returns an assigned token to the free set of its pool",
        complexity: "O(1)",
        args: &[Arg::key("pool", 0), TOKEN_ARG],
        ..TOKEN_BASE
    },
    // TOKEN.DEL pool token: removes one element, like SREM (RW delete).
    CommandSpec {
        name: "token.del",
        arity: 3,
        flags: &["write", "module", "fast"],
        acl_categories: &["@write", "@fast"],
        key_specs: &[pool_key(&["RW", "delete"])],
        summary: "Deletes a token in any state",
        complexity: "O(1)",
        args: &[Arg::key("pool", 0), TOKEN_ARG],
        ..TOKEN_BASE
    },
    // TOKEN.DELEXPIRED pool: O(N) purge (RW delete), so not `fast`.
    CommandSpec {
        name: "token.delexpired",
        arity: 2,
        flags: &["write", "module"],
        acl_categories: &["@write", "@slow"],
        key_specs: &[pool_key(&["RW", "delete"])],
        summary: "Forgets the expired tokens a pool still remembers",
        complexity: "O(N) where N is the number of expired tokens remembered",
        args: &[Arg::key("pool", 0)],
        ..TOKEN_BASE
    },
    // TOKEN.INFO pool token: reads one token's data and time left, like
    // PTTL (RO access, nondeterministic output).
    CommandSpec {
        name: "token.info",
        arity: 3,
        flags: &["readonly", "module", "fast"],
        acl_categories: &["@read", "@fast"],
        tips: &["nondeterministic_output"],
        key_specs: &[pool_key(&["RO", "access"])],
        summary: "Returns a token's state, time left and times acquired",
        complexity: "O(1)",
        args: &[Arg::key("pool", 0), TOKEN_ARG],
        ..TOKEN_BASE
    },
    // TOKEN.STATS pool: counts only, no token data, like SCARD, whose key
    // spec is RO without `access` (which means "returns user data").
    CommandSpec {
        name: "token.stats",
        arity: 2,
        flags: &["readonly", "module", "fast"],
        acl_categories: &["@read", "@fast"],
        key_specs: &[pool_key(&["RO"])],
        summary: "Returns a pool's token counts",
        complexity: "O(1)",
        args: &[Arg::key("pool", 0)],
        ..TOKEN_BASE
    },
    // Redis's own commands, as Redis 7.0.15 reports them.
    CommandSpec {
        name: "ping",
        arity: -1,
        flags: &["fast"],
        acl_categories: &["@fast", "@connection"],
        tips: &["request_policy:all_shards", "response_policy:all_succeeded"],
        summary: "Ping the server",
        since: "1.0.0",
        group: "connection",
        complexity: "O(1)",
        args: &[Arg::new("message", ArgType::String).flags(&["optional"])],
        ..CommandSpec::BASE
    },
    CommandSpec {
        name: "echo",
        arity: 2,
        flags: &["loading", "stale", "fast"],
        acl_categories: &["@fast", "@connection"],
        summary: "Echo the given string",
        since: "1.0.0",
        group: "connection",
        complexity: "O(1)",
        args: &[Arg::new("message", ArgType::String)],
        ..CommandSpec::BASE
    },
    CommandSpec {
        name: "hello",
        arity: -1,
        flags: &["noscript", "loading", "stale", "fast", "no_auth", "allow_busy"],
        acl_categories: &["@fast", "@connection"],
        summary: "Handshake with Redis",
        since: "6.0.0",
        group: "connection",
        complexity: "O(1)",
        history: &[(
            "6.2.0",
            "`protover` made optional; when called without arguments the command reports the current connection's context.",
        )],
        args: &[Arg::new("arguments", ArgType::Block).flags(&["optional"]).args(&[
            Arg::new("protover", ArgType::Integer),
            Arg::new("username_password", ArgType::Block)
                .token("AUTH")
                .flags(&["optional"])
                .args(&[Arg::new("username", ArgType::String), Arg::new("password", ArgType::String)]),
            Arg::new("clientname", ArgType::String).token("SETNAME").flags(&["optional"]),
        ])],
        ..CommandSpec::BASE
    },
    CommandSpec {
        name: "auth",
        arity: -2,
        flags: &["noscript", "loading", "stale", "fast", "no_auth", "allow_busy"],
        acl_categories: &["@fast", "@connection"],
        summary: "Authenticate to the server",
        since: "1.0.0",
        group: "connection",
        complexity: "O(N) where N is the number of passwords defined for the user",
        history: &[("6.0.0", "Added ACL style (username and password).")],
        args: &[
            Arg::new("username", ArgType::String).since("6.0.0").flags(&["optional"]),
            Arg::new("password", ArgType::String),
        ],
        ..CommandSpec::BASE
    },
    CommandSpec {
        name: "select",
        arity: 2,
        flags: &["loading", "stale", "fast"],
        acl_categories: &["@fast", "@connection"],
        summary: "Change the selected database for the current connection",
        since: "1.0.0",
        group: "connection",
        complexity: "O(1)",
        args: &[Arg::new("index", ArgType::Integer)],
        ..CommandSpec::BASE
    },
    CommandSpec {
        name: "quit",
        arity: -1,
        flags: &["noscript", "loading", "stale", "fast", "no_auth", "allow_busy"],
        acl_categories: &["@fast", "@connection"],
        summary: "Close the connection",
        since: "1.0.0",
        group: "connection",
        complexity: "O(1)",
        ..CommandSpec::BASE
    },
    CommandSpec {
        name: "reset",
        arity: 1,
        flags: &["noscript", "loading", "stale", "fast", "no_auth", "allow_busy"],
        acl_categories: &["@fast", "@connection"],
        summary: "Reset the connection",
        since: "6.2.0",
        group: "connection",
        complexity: "O(1)",
        ..CommandSpec::BASE
    },
    // Containers list only the subcommands tokend implements (Redis has more).
    CommandSpec {
        name: "client",
        arity: -2,
        flags: &[],
        acl_categories: &["@slow"],
        summary: "A container for client connection commands",
        since: "2.4.0",
        group: "connection",
        complexity: "Depends on subcommand.",
        subcommands: &[
            CommandSpec {
                name: "client|id",
                arity: 2,
                flags: &["noscript", "loading", "stale"],
                acl_categories: &["@slow", "@connection"],
                summary: "Returns the client ID for the current connection",
                since: "5.0.0",
                group: "connection",
                complexity: "O(1)",
                ..CommandSpec::BASE
            },
            CommandSpec {
                name: "client|setname",
                arity: 3,
                flags: &["noscript", "loading", "stale"],
                acl_categories: &["@slow", "@connection"],
                summary: "Set the current connection name",
                since: "2.6.9",
                group: "connection",
                complexity: "O(1)",
                args: &[Arg::new("connection-name", ArgType::String)],
                ..CommandSpec::BASE
            },
            CommandSpec {
                name: "client|getname",
                arity: 2,
                flags: &["noscript", "loading", "stale"],
                acl_categories: &["@slow", "@connection"],
                summary: "Get the current connection name",
                since: "2.6.9",
                group: "connection",
                complexity: "O(1)",
                ..CommandSpec::BASE
            },
            CommandSpec {
                name: "client|list",
                arity: -2,
                flags: &["admin", "noscript", "loading", "stale"],
                acl_categories: &["@admin", "@slow", "@dangerous", "@connection"],
                tips: &["nondeterministic_output"],
                summary: "Get the list of client connections",
                since: "2.4.0",
                group: "connection",
                complexity: "O(N) where N is the number of client connections",
                history: &[
                    ("2.8.12", "Added unique client `id` field."),
                    ("5.0.0", "Added optional `TYPE` filter."),
                    ("6.0.0", "Added `user` field."),
                    ("6.2.0", "Added `argv-mem`, `tot-mem`, `laddr` and `redir` fields and the optional `ID` filter."),
                    ("7.0.0", "Added `resp`, `multi-mem`, `rbs` and `rbp` fields."),
                    ("7.0.3", "Added `ssub` field."),
                ],
                args: &[
                    Arg::new("normal_master_replica_pubsub", ArgType::OneOf)
                        .token("TYPE")
                        .since("5.0.0")
                        .flags(&["optional"])
                        .args(&[
                            Arg::new("normal", ArgType::PureToken).token("NORMAL"),
                            Arg::new("master", ArgType::PureToken).token("MASTER"),
                            Arg::new("replica", ArgType::PureToken).token("REPLICA"),
                            Arg::new("pubsub", ArgType::PureToken).token("PUBSUB"),
                        ]),
                    Arg::new("id", ArgType::Block).token("ID").since("6.2.0").flags(&["optional"]).args(&[Arg::new(
                        "client-id",
                        ArgType::Integer,
                    )
                    .flags(&["multiple"])]),
                ],
                ..CommandSpec::BASE
            },
            CommandSpec {
                name: "client|info",
                arity: 2,
                flags: &["noscript", "loading", "stale"],
                acl_categories: &["@slow", "@connection"],
                tips: &["nondeterministic_output"],
                summary: "Returns information about the current client connection.",
                since: "6.2.0",
                group: "connection",
                complexity: "O(1)",
                ..CommandSpec::BASE
            },
            // Not in Redis 7.0: as in Redis 7.2's client-setinfo.json (libraries
            // send it at connect and ignore errors, so it must exist).
            CommandSpec {
                name: "client|setinfo",
                arity: 4,
                flags: &["noscript", "loading", "stale"],
                acl_categories: &["@slow", "@connection"],
                summary: "Sets information specific to the client or connection.",
                since: "7.2.0",
                group: "connection",
                complexity: "O(1)",
                args: &[Arg::new("attr", ArgType::OneOf).args(&[
                    Arg::new("libname", ArgType::String).token("lib-name"),
                    Arg::new("libver", ArgType::String).token("lib-ver"),
                ])],
                ..CommandSpec::BASE
            },
            CommandSpec {
                name: "client|kill",
                arity: -3,
                flags: &["admin", "noscript", "loading", "stale"],
                acl_categories: &["@admin", "@slow", "@dangerous", "@connection"],
                summary: "Kill the connection of a client",
                since: "2.4.0",
                group: "connection",
                complexity: "O(N) where N is the number of client connections",
                history: &[
                    ("2.8.12", "Added new filter format."),
                    ("2.8.12", "`ID` option."),
                    ("3.2.0", "Added `master` type in for `TYPE` option."),
                    (
                        "5.0.0",
                        "Replaced `slave` `TYPE` with `replica`. `slave` still supported for backward compatibility.",
                    ),
                    ("6.2.0", "`LADDR` option."),
                ],
                args: &[Arg::new("filter", ArgType::OneOf).args(&[
                    Arg::new("ip:port", ArgType::String).deprecated_since("2.8.12"),
                    Arg::new("new-format", ArgType::OneOf).flags(&["multiple"]).args(&[
                        Arg::new("client-id", ArgType::Integer).token("ID").since("2.8.12").flags(&["optional"]),
                        Arg::new("normal_master_slave_pubsub", ArgType::OneOf)
                            .token("TYPE")
                            .since("2.8.12")
                            .flags(&["optional"])
                            .args(&[
                                Arg::new("normal", ArgType::PureToken).token("NORMAL"),
                                Arg::new("master", ArgType::PureToken).token("MASTER").since("3.2.0"),
                                Arg::new("slave", ArgType::PureToken).token("SLAVE"),
                                Arg::new("replica", ArgType::PureToken).token("REPLICA").since("5.0.0"),
                                Arg::new("pubsub", ArgType::PureToken).token("PUBSUB"),
                            ]),
                        Arg::new("username", ArgType::String).token("USER").flags(&["optional"]),
                        Arg::new("ip:port", ArgType::String).token("ADDR").flags(&["optional"]),
                        Arg::new("ip:port", ArgType::String).token("LADDR").since("6.2.0").flags(&["optional"]),
                        Arg::new("yes/no", ArgType::String).token("SKIPME").flags(&["optional"]),
                    ]),
                ])],
                ..CommandSpec::BASE
            },
        ],
        ..CommandSpec::BASE
    },
    CommandSpec {
        name: "command",
        arity: -1,
        flags: &["loading", "stale"],
        acl_categories: &["@slow", "@connection"],
        tips: &["nondeterministic_output_order"],
        summary: "Get array of Redis command details",
        since: "2.8.13",
        group: "server",
        complexity: "O(N) where N is the total number of Redis commands",
        subcommands: &[
            CommandSpec {
                name: "command|count",
                arity: 2,
                flags: &["loading", "stale"],
                acl_categories: &["@slow", "@connection"],
                summary: "Get total number of Redis commands",
                since: "2.8.13",
                group: "server",
                complexity: "O(1)",
                ..CommandSpec::BASE
            },
            CommandSpec {
                name: "command|info",
                arity: -2,
                flags: &["loading", "stale"],
                acl_categories: &["@slow", "@connection"],
                tips: &["nondeterministic_output_order"],
                summary: "Get array of specific Redis command details, or all when no argument is given.",
                since: "2.8.13",
                group: "server",
                complexity: "O(N) where N is the number of commands to look up",
                history: &[("7.0.0", "Allowed to be called with no argument to get info on all commands.")],
                args: &[Arg::new("command-name", ArgType::String).flags(&["optional", "multiple"])],
                ..CommandSpec::BASE
            },
            CommandSpec {
                name: "command|docs",
                arity: -2,
                flags: &["loading", "stale"],
                acl_categories: &["@slow", "@connection"],
                tips: &["nondeterministic_output_order"],
                summary: "Get array of specific Redis command documentation",
                since: "7.0.0",
                group: "server",
                complexity: "O(N) where N is the number of commands to look up",
                args: &[Arg::new("command-name", ArgType::String).flags(&["optional", "multiple"])],
                ..CommandSpec::BASE
            },
            CommandSpec {
                name: "command|list",
                arity: -2,
                flags: &["loading", "stale"],
                acl_categories: &["@slow", "@connection"],
                tips: &["nondeterministic_output_order"],
                summary: "Get an array of Redis command names",
                since: "7.0.0",
                group: "server",
                complexity: "O(N) where N is the total number of Redis commands",
                args: &[Arg::new("filterby", ArgType::OneOf).token("FILTERBY").flags(&["optional"]).args(&[
                    Arg::new("module-name", ArgType::String).token("MODULE"),
                    Arg::new("category", ArgType::String).token("ACLCAT"),
                    Arg::new("pattern", ArgType::Pattern).token("PATTERN"),
                ])],
                ..CommandSpec::BASE
            },
            CommandSpec {
                name: "command|help",
                arity: 2,
                flags: &["loading", "stale"],
                acl_categories: &["@slow", "@connection"],
                summary: "Show helpful text about the different subcommands",
                since: "5.0.0",
                group: "server",
                complexity: "O(1)",
                ..CommandSpec::BASE
            },
            CommandSpec {
                name: "command|getkeys",
                arity: -4,
                flags: &["loading", "stale"],
                acl_categories: &["@slow", "@connection"],
                summary: "Extract keys given a full Redis command",
                since: "2.8.13",
                group: "server",
                complexity: "O(N) where N is the number of arguments to the command",
                ..CommandSpec::BASE
            },
            CommandSpec {
                name: "command|getkeysandflags",
                arity: -4,
                flags: &["loading", "stale"],
                acl_categories: &["@slow", "@connection"],
                summary: "Extract keys and access flags given a full Redis command",
                since: "7.0.0",
                group: "server",
                complexity: "O(N) where N is the number of arguments to the command",
                ..CommandSpec::BASE
            },
        ],
        ..CommandSpec::BASE
    },
    CommandSpec {
        name: "info",
        arity: -1,
        flags: &["loading", "stale"],
        acl_categories: &["@slow", "@dangerous"],
        tips: &["nondeterministic_output", "request_policy:all_shards", "response_policy:special"],
        summary: "Get information and statistics about the server",
        since: "1.0.0",
        group: "server",
        complexity: "O(1)",
        history: &[("7.0.0", "Added support for taking multiple section arguments.")],
        args: &[Arg::new("section", ArgType::String).flags(&["optional", "multiple"])],
        ..CommandSpec::BASE
    },
    CommandSpec {
        name: "dbsize",
        arity: 1,
        flags: &["readonly", "fast"],
        acl_categories: &["@keyspace", "@read", "@fast"],
        tips: &["request_policy:all_shards", "response_policy:agg_sum"],
        summary: "Return the number of keys in the selected database",
        since: "1.0.0",
        group: "server",
        complexity: "O(1)",
        ..CommandSpec::BASE
    },
    CommandSpec {
        name: "config",
        arity: -2,
        flags: &[],
        acl_categories: &["@slow"],
        summary: "A container for server configuration commands",
        since: "2.0.0",
        group: "server",
        complexity: "Depends on subcommand.",
        subcommands: &[CommandSpec {
            name: "config|get",
            arity: -3,
            flags: &["admin", "noscript", "loading", "stale"],
            acl_categories: &["@admin", "@slow", "@dangerous"],
            summary: "Get the values of configuration parameters",
            since: "2.0.0",
            group: "server",
            complexity: "O(N) when N is the number of configuration parameters provided",
            history: &[("7.0.0", "Added the ability to pass multiple pattern parameters in one call")],
            args: &[Arg::new("parameter", ArgType::Block)
                .flags(&["multiple"])
                .args(&[Arg::new("parameter", ArgType::String)])],
            ..CommandSpec::BASE
        }],
        ..CommandSpec::BASE
    },
    CommandSpec {
        name: "subscribe",
        arity: -2,
        flags: &["pubsub", "noscript", "loading", "stale"],
        acl_categories: &["@pubsub", "@slow"],
        summary: "Listen for messages published to the given channels",
        since: "2.0.0",
        group: "pubsub",
        complexity: "O(N) where N is the number of channels to subscribe to.",
        args: &[Arg::new("channel", ArgType::String).flags(&["multiple"])],
        ..CommandSpec::BASE
    },
    CommandSpec {
        name: "psubscribe",
        arity: -2,
        flags: &["pubsub", "noscript", "loading", "stale"],
        acl_categories: &["@pubsub", "@slow"],
        summary: "Listen for messages published to channels matching the given patterns",
        since: "2.0.0",
        group: "pubsub",
        complexity: "O(N) where N is the number of patterns the client is already subscribed to.",
        args: &[Arg::new("pattern", ArgType::Block)
            .flags(&["multiple"])
            .args(&[Arg::new("pattern", ArgType::Pattern)])],
        ..CommandSpec::BASE
    },
    CommandSpec {
        name: "unsubscribe",
        arity: -1,
        flags: &["pubsub", "noscript", "loading", "stale"],
        acl_categories: &["@pubsub", "@slow"],
        summary: "Stop listening for messages posted to the given channels",
        since: "2.0.0",
        group: "pubsub",
        complexity: "O(N) where N is the number of clients already subscribed to a channel.",
        args: &[Arg::new("channel", ArgType::String).flags(&["optional", "multiple"])],
        ..CommandSpec::BASE
    },
    CommandSpec {
        name: "punsubscribe",
        arity: -1,
        flags: &["pubsub", "noscript", "loading", "stale"],
        acl_categories: &["@pubsub", "@slow"],
        summary: "Stop listening for messages posted to channels matching the given patterns",
        since: "2.0.0",
        group: "pubsub",
        complexity: "O(N+M) where N is the number of patterns the client is already subscribed and M is the number of total patterns subscribed in the system (by any client).",
        args: &[Arg::new("pattern", ArgType::Pattern).flags(&["optional", "multiple"])],
        ..CommandSpec::BASE
    },
    CommandSpec {
        name: "publish",
        arity: 3,
        flags: &["pubsub", "loading", "stale", "fast"],
        acl_categories: &["@pubsub", "@fast"],
        summary: "Post a message to a channel",
        since: "2.0.0",
        group: "pubsub",
        complexity: "O(N+M) where N is the number of clients subscribed to the receiving channel and M is the total number of subscribed patterns (by any client).",
        args: &[Arg::new("channel", ArgType::String), Arg::new("message", ArgType::String)],
        ..CommandSpec::BASE
    },
    CommandSpec {
        name: "time",
        arity: 1,
        flags: &["loading", "stale", "fast"],
        acl_categories: &["@fast"],
        tips: &["nondeterministic_output"],
        summary: "Return the current server time",
        since: "2.6.0",
        group: "server",
        complexity: "O(1)",
        ..CommandSpec::BASE
    },
];

/// Finds a command in `list` by name, ignoring ASCII case as Redis does.
fn find(list: &'static [CommandSpec], name: &[u8]) -> Option<&'static CommandSpec> {
    list.iter().find(|c| c.name.as_bytes().eq_ignore_ascii_case(name))
}

/// Looks up a top-level command by name (`"token.gen"`, `"client"`); case is
/// ignored. A `container|sub` name is not resolved here, because a client
/// sending it as a command name gets "unknown command" from Redis.
pub fn lookup(name: &str) -> Option<&'static CommandSpec> {
    find(COMMANDS, name.as_bytes())
}

/// [`lookup`] on the raw name bytes (no allocation on the request path).
pub fn lookup_bytes(name: &[u8]) -> Option<&'static CommandSpec> {
    find(COMMANDS, name)
}

/// Looks up a subcommand of a container (`"client"`, `"id"`); case is ignored.
pub fn lookup_sub(cmd: &str, sub: &str) -> Option<&'static CommandSpec> {
    lookup(cmd)?.subcommand(sub.as_bytes())
}

/// All top-level commands, in table order.
pub fn all() -> &'static [CommandSpec] {
    COMMANDS
}

/// Resolves a name the way `COMMAND INFO`/`DOCS` do (Redis's
/// `lookupCommandBySds`): `name` or `container|sub`, case ignored.
fn lookup_full(name: &[u8]) -> Option<&'static CommandSpec> {
    let mut parts = name.split(|&b| b == b'|');
    let base = find(COMMANDS, parts.next()?)?;
    match (parts.next(), parts.next()) {
        (None, _) => Some(base),
        (Some(sub), None) => base.subcommand(sub),
        (Some(_), Some(_)) => None,
    }
}

/// Redis's arity error: `ERR wrong number of arguments for 'token.gen' command`.
/// `fullname` is the table name (`client|id` for a subcommand).
pub fn arity_error(fullname: &str) -> Reply {
    Reply::error(format!("ERR wrong number of arguments for '{fullname}' command"))
}

/// At most 128 bytes of a client argument, as Redis's `%.128s` prints it.
fn clip(arg: &[u8], max: usize) -> String {
    String::from_utf8_lossy(&arg[..arg.len().min(max)]).into_owned()
}

/// Redis's reply for a container called with an unknown subcommand, e.g.
/// `ERR unknown subcommand 'x'. Try CLIENT HELP.` (`container` as the client typed it).
pub fn unknown_subcommand_error(container: &[u8], sub: &[u8]) -> Reply {
    let container = String::from_utf8_lossy(container).to_ascii_uppercase();
    Reply::error(format!("ERR unknown subcommand '{}'. Try {container} HELP.", clip(sub, 128)))
}

/// Redis's reply for an unknown command, with its exact wording:
/// `ERR unknown command 'x', with args beginning with: 'a' 'b' ` (each
/// argument quoted and followed by a space, at most about 128 bytes of them).
pub fn unknown_command_error(argv: &[Bytes]) -> Reply {
    let name = argv.first().map(|n| clip(n, 128)).unwrap_or_default();
    let mut args = String::new();
    for arg in argv.iter().skip(1) {
        if args.len() >= 128 {
            break;
        }
        let room = 128 - args.len();
        args.push('\'');
        args.push_str(&clip(arg, room));
        args.push_str("' ");
    }
    Reply::error(format!("ERR unknown command '{name}', with args beginning with: {args}"))
}

/// The whole lookup a dispatcher needs, in Redis's order and with Redis's
/// errors: unknown command, unknown subcommand of a container, wrong arity.
/// `argv` is the full command including its name. On success the spec is the
/// subcommand's for a container called with a subcommand.
pub fn resolve(argv: &[Bytes]) -> Result<&'static CommandSpec, Reply> {
    let Some(name) = argv.first() else {
        return Err(unknown_command_error(argv));
    };
    let Some(base) = find(COMMANDS, name) else {
        return Err(unknown_command_error(argv));
    };
    let spec = match argv.get(1) {
        Some(sub) if !base.subcommands.is_empty() => match base.subcommand(sub) {
            Some(s) => s,
            None => return Err(unknown_subcommand_error(name, sub)),
        },
        _ => base,
    };
    if spec.arity_ok(argv.len()) { Ok(spec) } else { Err(arity_error(spec.name)) }
}

/// Executes `COMMAND`; `args` holds what follows the word COMMAND.
///
/// Subcommands: none (info on every command), COUNT, INFO, DOCS, LIST,
/// GETKEYS, GETKEYSANDFLAGS, HELP. Arity and unknown subcommands get
/// Redis's exact errors (`ERR wrong number of arguments for 'command|info'
/// command`, `ERR unknown subcommand 'x'. Try COMMAND HELP.`).
pub fn apply(args: &mut Parse) -> Reply {
    let argc = args.remaining() + 1;
    let Ok(sub) = args.next_bytes() else {
        return Reply::Array(COMMANDS.iter().map(info_reply).collect());
    };
    let Some(spec) = find(COMMANDS, b"command").and_then(|c| c.subcommand(&sub)) else {
        return unknown_subcommand_error(b"COMMAND", &sub);
    };
    if !spec.arity_ok(argc) {
        return arity_error(spec.name);
    }
    let rest = drain(args);
    match spec.name {
        "command|count" => Reply::Integer(i64::try_from(COMMANDS.len()).unwrap_or(i64::MAX)),
        "command|info" if rest.is_empty() => Reply::Array(COMMANDS.iter().map(info_reply).collect()),
        "command|info" => Reply::Array(rest.iter().map(|n| lookup_full(n).map_or(Reply::Null, info_reply)).collect()),
        "command|docs" => {
            let specs: Vec<&CommandSpec> = if rest.is_empty() {
                COMMANDS.iter().collect()
            } else {
                rest.iter().filter_map(|n| lookup_full(n)).collect()
            };
            Reply::Map(specs.into_iter().map(|c| (Reply::bulk_static(c.name), docs_reply(c))).collect())
        }
        "command|list" => list(&rest),
        "command|getkeys" => getkeys(&rest, false),
        "command|getkeysandflags" => getkeys(&rest, true),
        "command|help" => help(),
        // A subcommand added to the table but not handled here.
        _ => unknown_subcommand_error(b"COMMAND", &sub),
    }
}

/// The arguments left in the cursor.
fn drain(args: &mut Parse) -> Vec<Bytes> {
    let mut out = Vec::with_capacity(args.remaining());
    while let Ok(b) = args.next_bytes() {
        out.push(b);
    }
    out
}

/// Status replies from static strings: Redis sends command flags, ACL
/// categories and argument flags as `+status`, never as bulk strings.
fn statuses(items: &[&'static str]) -> Vec<Reply> {
    items.iter().map(|s| Reply::status(s)).collect()
}

/// A collection that Redis sends as a RESP3 set but whose members are maps
/// or arrays. `Reply::Set` cannot carry those (its RESP3 encoding hashes the
/// members and panics on aggregates), so a non-empty one goes as an array;
/// an empty one is still an (empty) set, as Redis sends it.
fn set_of_aggregates(items: Vec<Reply>) -> Reply {
    if items.is_empty() { Reply::Set(items) } else { Reply::Array(items) }
}

/// A `"name" → value` map entry with a static bulk-string name.
fn field(name: &'static str, value: Reply) -> (Reply, Reply) {
    (Reply::bulk_static(name), value)
}

fn int(v: i32) -> Reply {
    Reply::Integer(i64::from(v))
}

/// One key spec as `COMMAND INFO` shows it: a map of `notes`, `flags`,
/// `begin_search` and `find_keys`, the last two maps of `type` and `spec`.
fn key_spec_reply(ks: &KeySpec) -> Reply {
    let mut m = Vec::with_capacity(4);
    if let Some(notes) = ks.notes {
        m.push(field("notes", Reply::bulk_static(notes)));
    }
    m.push(field("flags", Reply::Set(statuses(ks.flags))));
    m.push(field(
        "begin_search",
        Reply::Map(vec![
            field("type", Reply::bulk_static("index")),
            field("spec", Reply::Map(vec![field("index", int(ks.begin_index))])),
        ]),
    ));
    m.push(field(
        "find_keys",
        Reply::Map(vec![
            field("type", Reply::bulk_static("range")),
            field(
                "spec",
                Reply::Map(vec![
                    field("lastkey", int(ks.last_key)),
                    field("keystep", int(ks.key_step)),
                    field("limit", int(ks.limit)),
                ]),
            ),
        ]),
    ));
    Reply::Map(m)
}

/// One `COMMAND INFO` entry: the ten-element array Redis 7.0 sends.
fn info_reply(c: &CommandSpec) -> Reply {
    let subcommands = if c.subcommands.is_empty() {
        Reply::Set(Vec::new())
    } else {
        Reply::Array(c.subcommands.iter().map(info_reply).collect())
    };
    Reply::Array(vec![
        Reply::bulk_static(c.name),
        int(c.arity),
        Reply::Set(statuses(c.flags)),
        int(c.first_key),
        int(c.last_key),
        int(c.step),
        Reply::Set(statuses(c.acl_categories)),
        Reply::Set(c.tips.iter().map(|t| Reply::bulk_static(t)).collect()),
        set_of_aggregates(c.key_specs.iter().map(key_spec_reply).collect()),
        subcommands,
    ])
}

/// The `arguments` array of `COMMAND DOCS`: one map per argument, fields in
/// Redis's order, strings as bulk strings and `flags` as status replies.
fn args_reply(args: &[Arg]) -> Reply {
    Reply::Array(
        args.iter()
            .map(|a| {
                let mut m =
                    vec![field("name", Reply::bulk_static(a.name)), field("type", Reply::bulk_static(a.kind.as_str()))];
                if let Some(t) = a.display_text {
                    m.push(field("display_text", Reply::bulk_static(t)));
                }
                if let Some(i) = a.key_spec_index {
                    m.push(field("key_spec_index", Reply::Integer(i64::from(i))));
                }
                if let Some(t) = a.token {
                    m.push(field("token", Reply::bulk_static(t)));
                }
                if let Some(s) = a.since {
                    m.push(field("since", Reply::bulk_static(s)));
                }
                if let Some(s) = a.deprecated_since {
                    m.push(field("deprecated_since", Reply::bulk_static(s)));
                }
                if !a.flags.is_empty() {
                    m.push(field("flags", Reply::Set(statuses(a.flags))));
                }
                if matches!(a.kind, ArgType::OneOf | ArgType::Block) {
                    m.push(field("arguments", args_reply(a.args)));
                }
                Reply::Map(m)
            })
            .collect(),
    )
}

/// One command's `COMMAND DOCS` map, fields in Redis 7.0's order.
fn docs_reply(c: &CommandSpec) -> Reply {
    let mut m = vec![
        field("summary", Reply::bulk_static(c.summary)),
        field("since", Reply::bulk_static(c.since)),
        field("group", Reply::bulk_static(c.group)),
        field("complexity", Reply::bulk_static(c.complexity)),
    ];
    if let Some(module) = c.module {
        m.push(field("module", Reply::bulk_static(module)));
    }
    if !c.history.is_empty() {
        let history =
            c.history.iter().map(|(v, what)| Reply::Array(vec![Reply::bulk_static(v), Reply::bulk_static(what)]));
        m.push(field("history", set_of_aggregates(history.collect())));
    }
    if !c.args.is_empty() {
        m.push(field("arguments", args_reply(c.args)));
    }
    if !c.subcommands.is_empty() {
        let subs = c.subcommands.iter().map(|s| (Reply::bulk_static(s.name), docs_reply(s)));
        m.push(field("subcommands", Reply::Map(subs.collect())));
    }
    Reply::Map(m)
}

/// A `COMMAND LIST` filter.
enum Filter {
    Module(Bytes),
    AclCat(Bytes),
    Pattern(Bytes),
}

impl Filter {
    /// Whether `c` passes, with Redis's rules: module and category names
    /// ignore case, a category is named without its `@`, patterns are
    /// case-insensitive globs on the full `container|sub` name.
    fn keeps(&self, c: &CommandSpec) -> bool {
        match self {
            Filter::Module(m) => c.module.is_some_and(|name| name.as_bytes().eq_ignore_ascii_case(m)),
            Filter::AclCat(cat) => c
                .acl_categories
                .iter()
                .any(|a| a.strip_prefix('@').is_some_and(|a| a.as_bytes().eq_ignore_ascii_case(cat))),
            Filter::Pattern(p) => crate::glob::glob_match(p, c.name.as_bytes(), true),
        }
    }
}

/// `COMMAND LIST [FILTERBY MODULE m | ACLCAT c | PATTERN p]`: names of all
/// commands and subcommands (each subcommand right after its container).
/// Like Redis, FILTERBY must be the last three arguments and anything else is
/// a syntax error.
fn list(rest: &[Bytes]) -> Reply {
    let filter = match rest {
        [] => None,
        [kw, kind, arg] if kw.eq_ignore_ascii_case(b"filterby") => {
            let arg = arg.clone();
            Some(if kind.eq_ignore_ascii_case(b"module") {
                Filter::Module(arg)
            } else if kind.eq_ignore_ascii_case(b"aclcat") {
                Filter::AclCat(arg)
            } else if kind.eq_ignore_ascii_case(b"pattern") {
                Filter::Pattern(arg)
            } else {
                return Reply::error("ERR syntax error");
            })
        }
        _ => return Reply::error("ERR syntax error"),
    };
    let mut out = Vec::new();
    for c in COMMANDS {
        for c in std::iter::once(c).chain(c.subcommands) {
            if filter.as_ref().is_none_or(|f| f.keeps(c)) {
                out.push(Reply::bulk_static(c.name));
            }
        }
    }
    Reply::Array(out)
}

/// `COMMAND GETKEYS` / `GETKEYSANDFLAGS <full command>`: the keys the table's
/// key specs find in the given command, with Redis's errors and their order.
fn getkeys(argv: &[Bytes], with_flags: bool) -> Reply {
    let invalid = || Reply::error("ERR Invalid command specified");
    let Some(base) = argv.first().and_then(|n| find(COMMANDS, n)) else {
        return invalid();
    };
    let cmd = match argv.get(1) {
        Some(sub) if !base.subcommands.is_empty() => match base.subcommand(sub) {
            Some(s) => s,
            None => return invalid(),
        },
        _ => base,
    };
    if cmd.key_specs.is_empty() {
        return Reply::error("ERR The command has no key arguments");
    }
    if !cmd.arity_ok(argv.len()) {
        return Reply::error("ERR Invalid number of arguments specified for command");
    }
    let argc = i64::try_from(argv.len()).unwrap_or(i64::MAX);
    let mut keys = Vec::new();
    for ks in cmd.key_specs {
        let first = i64::from(ks.begin_index);
        let last = if ks.last_key >= 0 { first + i64::from(ks.last_key) } else { argc + i64::from(ks.last_key) };
        let step = usize::try_from(ks.key_step.max(1)).unwrap_or(1);
        let (Ok(first), Ok(last)) = (usize::try_from(first), usize::try_from(last)) else {
            continue;
        };
        for i in (first..=last).step_by(step) {
            let Some(key) = argv.get(i) else { break };
            keys.push(if with_flags {
                Reply::Array(vec![Reply::Bulk(key.clone()), Reply::Set(statuses(ks.flags))])
            } else {
                Reply::Bulk(key.clone())
            });
        }
    }
    if keys.is_empty() { Reply::error("ERR Invalid arguments specified for command") } else { Reply::Array(keys) }
}

/// `COMMAND HELP`: Redis 7.0's text, one status reply per line.
fn help() -> Reply {
    const LINES: &[&str] = &[
        "COMMAND <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
        "(no subcommand)",
        "    Return details about all Redis commands.",
        "COUNT",
        "    Return the total number of commands in this Redis server.",
        "LIST",
        "    Return a list of all commands in this Redis server.",
        "INFO [<command-name> ...]",
        "    Return details about multiple Redis commands.",
        "    If no command names are given, documentation details for all",
        "    commands are returned.",
        "DOCS [<command-name> ...]",
        "    Return documentation details about multiple Redis commands.",
        "    If no command names are given, documentation details for all",
        "    commands are returned.",
        "GETKEYS <full-command>",
        "    Return the keys from a full Redis command.",
        "GETKEYSANDFLAGS <full-command>",
        "    Return the keys and the access flags from a full Redis command.",
        "HELP",
        "    Prints this help.",
    ];
    Reply::Array(statuses(LINES))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reply::Protocol;
    use bytes::BytesMut;

    fn run(args: &[&str]) -> Reply {
        apply(&mut Parse::new(args.iter().map(|a| Bytes::copy_from_slice(a.as_bytes())).collect()))
    }

    fn enc(r: Reply, p: Protocol) -> Vec<u8> {
        let mut b = BytesMut::new();
        r.encode(p, &mut b);
        b.to_vec()
    }

    /// A decoded RESP value: a scalar with its type byte and payload, or an
    /// aggregate with its type byte and children (a map's flattened k, v, k, v…).
    #[derive(Debug)]
    enum Node {
        Scalar(u8, Vec<u8>),
        Agg(u8, Vec<Node>),
    }

    impl Node {
        fn kind(&self) -> u8 {
            match self {
                Node::Scalar(k, _) | Node::Agg(k, _) => *k,
            }
        }
        fn children(&self) -> &[Node] {
            match self {
                Node::Agg(_, c) => c,
                Node::Scalar(..) => panic!("not an aggregate: {self:?}"),
            }
        }
        fn text(&self) -> &[u8] {
            match self {
                Node::Scalar(_, t) => t,
                Node::Agg(..) => panic!("not a scalar: {self:?}"),
            }
        }
        /// A map's fields, whether sent as `%` (RESP3) or a flat array (RESP2);
        /// field names must be bulk strings, as Redis sends them.
        fn fields(&self) -> Vec<(&str, &Node)> {
            let c = self.children();
            let pairs = c.chunks_exact(2);
            assert!(matches!(self.kind(), b'%' | b'*') && pairs.remainder().is_empty(), "not a map: {self:?}");
            pairs
                .map(|kv| {
                    assert_eq!(kv[0].kind(), b'$', "map key not a bulk string: {:?}", kv[0]);
                    (std::str::from_utf8(kv[0].text()).unwrap(), &kv[1])
                })
                .collect()
        }
        fn field(&self, name: &str) -> Option<&Node> {
            self.fields().into_iter().find(|(k, _)| *k == name).map(|(_, v)| v)
        }
    }

    fn decode(buf: &[u8]) -> Node {
        fn line<'a>(buf: &'a [u8], pos: &mut usize) -> &'a [u8] {
            let end = *pos + buf[*pos..].windows(2).position(|w| w == b"\r\n").unwrap();
            let l = &buf[*pos..end];
            *pos = end + 2;
            l
        }
        fn node(buf: &[u8], pos: &mut usize) -> Node {
            let l = line(buf, pos);
            let (kind, rest) = (l[0], &l[1..]);
            let n = || std::str::from_utf8(rest).unwrap().parse::<i64>().unwrap();
            match kind {
                b'$' | b'=' if n() >= 0 => {
                    let len = usize::try_from(n()).unwrap();
                    let data = buf[*pos..*pos + len].to_vec();
                    *pos += len + 2;
                    Node::Scalar(kind, data)
                }
                b'*' | b'~' | b'>' if n() >= 0 => Node::Agg(kind, (0..n()).map(|_| node(buf, pos)).collect()),
                b'%' => Node::Agg(kind, (0..2 * n()).map(|_| node(buf, pos)).collect()),
                _ => Node::Scalar(kind, rest.to_vec()),
            }
        }
        let mut pos = 0;
        let n = node(buf, &mut pos);
        assert_eq!(pos, buf.len(), "trailing bytes");
        n
    }

    /// The type bytes of an encoded reply with aggregate lengths, values left
    /// out: `*2 $ *12 $ $ …`.
    fn shape(buf: &[u8]) -> String {
        fn walk(n: &Node, out: &mut Vec<String>) {
            match n {
                Node::Scalar(k, _) => out.push((*k as char).to_string()),
                Node::Agg(k, c) => {
                    let len = if *k == b'%' { c.len() / 2 } else { c.len() };
                    out.push(format!("{}{len}", *k as char));
                    c.iter().for_each(|c| walk(c, out));
                }
            }
        }
        let mut out = Vec::new();
        walk(&decode(buf), &mut out);
        out.join(" ")
    }

    const PROTOCOLS: [Protocol; 2] = [Protocol::Resp2, Protocol::Resp3];

    /// Every command and subcommand in the table.
    fn every_spec() -> Vec<&'static CommandSpec> {
        all().iter().flat_map(|c| std::iter::once(c).chain(c.subcommands)).collect()
    }

    #[test]
    fn docs_token_gen_has_the_shape_redis_gives_a_module_command_with_that_grammar() {
        // Captured from Redis 7.0.15 with a test module registering `tok.gen`
        // with the same arguments (key pool, optional oneof EX|PX, optional COUNT)
        // and summary/since/complexity: `COMMAND DOCS tok.gen`.
        let redis_resp2 = "*2 $ *12 $ $ $ $ $ $ $ $ $ $ $ *3 *6 $ $ $ $ $ : *8 $ $ $ $ $ *1 + $ *2 *6 $ $ $ $ $ $ \
                           *6 $ $ $ $ $ $ *8 $ $ $ $ $ $ $ *1 +";
        let redis_resp3 = "%1 $ %6 $ $ $ $ $ $ $ $ $ $ $ *3 %3 $ $ $ $ $ : %4 $ $ $ $ $ ~1 + $ *2 %3 $ $ $ $ $ $ \
                           %3 $ $ $ $ $ $ %4 $ $ $ $ $ $ $ ~1 +";
        assert_eq!(shape(&enc(run(&["DOCS", "token.gen"]), Protocol::Resp2)), redis_resp2);
        assert_eq!(shape(&enc(run(&["DOCS", "token.gen"]), Protocol::Resp3)), redis_resp3);
    }

    #[test]
    fn byte_exact_with_redis_for_mirrored_commands() {
        // Redis 7.0.15: `COMMAND INFO echo` (RESP2), `COMMAND DOCS ping` and
        // `COMMAND INFO client|id` (RESP3).
        let echo = "*1\r\n*10\r\n$4\r\necho\r\n:2\r\n*3\r\n+loading\r\n+stale\r\n+fast\r\n:0\r\n:0\r\n:0\r\n\
                    *2\r\n+@fast\r\n+@connection\r\n*0\r\n*0\r\n*0\r\n";
        assert_eq!(String::from_utf8(enc(run(&["INFO", "echo"]), Protocol::Resp2)).unwrap(), echo);
        let ping = "%1\r\n$4\r\nping\r\n%5\r\n$7\r\nsummary\r\n$15\r\nPing the server\r\n$5\r\nsince\r\n$5\r\n1.0.0\r\n\
                    $5\r\ngroup\r\n$10\r\nconnection\r\n$10\r\ncomplexity\r\n$4\r\nO(1)\r\n$9\r\narguments\r\n*1\r\n%3\r\n\
                    $4\r\nname\r\n$7\r\nmessage\r\n$4\r\ntype\r\n$6\r\nstring\r\n$5\r\nflags\r\n~1\r\n+optional\r\n";
        assert_eq!(String::from_utf8(enc(run(&["DOCS", "ping"]), Protocol::Resp3)).unwrap(), ping);
        let client_id = "*1\r\n*10\r\n$9\r\nclient|id\r\n:2\r\n~3\r\n+noscript\r\n+loading\r\n+stale\r\n:0\r\n:0\r\n:0\r\n\
                         ~2\r\n+@slow\r\n+@connection\r\n~0\r\n~0\r\n~0\r\n";
        assert_eq!(String::from_utf8(enc(run(&["INFO", "CLIENT|ID"]), Protocol::Resp3)).unwrap(), client_id);
    }

    /// Checks one `arguments` array of `COMMAND DOCS` against Redis's types.
    fn check_args(args: &Node, p: Protocol, cmd: &str) {
        assert_eq!(args.kind(), b'*', "{cmd}: arguments must be an array");
        for a in args.children() {
            assert_eq!(a.kind(), if p == Protocol::Resp3 { b'%' } else { b'*' }, "{cmd}: argument must be a map");
            let f = a.fields();
            assert_eq!(f[0].0, "name", "{cmd}");
            assert_eq!(f[1].0, "type", "{cmd}");
            for (k, v) in f {
                match k {
                    "name" | "type" | "token" | "display_text" | "since" | "deprecated_since" | "summary" => {
                        assert_eq!(v.kind(), b'$', "{cmd}: argument {k} must be a bulk string")
                    }
                    "key_spec_index" => assert_eq!(v.kind(), b':', "{cmd}"),
                    "flags" => {
                        assert_eq!(
                            v.kind(),
                            if p == Protocol::Resp3 { b'~' } else { b'*' },
                            "{cmd}: flags must be a set"
                        );
                        assert!(!v.children().is_empty(), "{cmd}: empty flags are left out, as Redis does");
                        for fl in v.children() {
                            assert_eq!(
                                fl.kind(),
                                b'+',
                                "{cmd}: argument flags must be status replies (redis-cli asserts)"
                            );
                        }
                    }
                    "arguments" => check_args(v, p, cmd),
                    other => panic!("{cmd}: unexpected argument field {other}"),
                }
            }
        }
    }

    #[test]
    fn docs_for_every_command_have_redis_types_in_both_protocols() {
        for p in PROTOCOLS {
            let docs = decode(&enc(run(&["DOCS"]), p));
            assert_eq!(docs.kind(), if p == Protocol::Resp3 { b'%' } else { b'*' });
            let entries = docs.fields();
            assert_eq!(entries.len(), all().len());
            fn check_doc(name: &str, d: &Node, p: Protocol) {
                let keys: Vec<&str> = d.fields().iter().map(|(k, _)| *k).collect();
                let order =
                    ["summary", "since", "group", "complexity", "module", "history", "arguments", "subcommands"];
                let mut last = 0;
                for k in &keys {
                    let at = order.iter().position(|o| o == k).unwrap_or_else(|| panic!("{name}: unknown field {k}"));
                    assert!(at >= last, "{name}: fields out of Redis's order: {keys:?}");
                    last = at;
                }
                for (k, v) in d.fields() {
                    match k {
                        "arguments" => check_args(v, p, name),
                        "history" => {
                            for h in v.children() {
                                assert!(h.children().iter().all(|x| x.kind() == b'$'), "{name}");
                            }
                        }
                        "subcommands" => {
                            for (sub, sd) in v.fields() {
                                assert!(sub.starts_with(&format!("{name}|")), "{sub}");
                                check_doc(sub, sd, p);
                            }
                        }
                        _ => assert_eq!(v.kind(), b'$', "{name}: {k} must be a bulk string"),
                    }
                }
            }
            for (name, d) in entries {
                check_doc(name, d, p);
            }
        }
    }

    #[test]
    fn info_for_every_command_has_redis_types_in_both_protocols() {
        for p in PROTOCOLS {
            let set = if p == Protocol::Resp3 { b'~' } else { b'*' };
            let map = if p == Protocol::Resp3 { b'%' } else { b'*' };
            fn check(e: &Node, set: u8, map: u8) {
                let c = e.children();
                assert_eq!(c.len(), 10);
                let name = String::from_utf8(c[0].text().to_vec()).unwrap();
                let kinds: Vec<u8> = c[..7].iter().map(Node::kind).collect();
                assert_eq!(kinds, [b'$', b':', set, b':', b':', b':', set], "{name}");
                assert!(c[2].children().iter().chain(c[6].children()).all(|f| f.kind() == b'+'), "{name}");
                assert_eq!(c[7].kind(), set, "{name}: tips");
                assert!(c[7].children().iter().all(|t| t.kind() == b'$'), "{name}: tips are bulk strings");
                // Key specs: a set in Redis; an array here when non-empty (see module docs).
                let specs = &c[8];
                assert!(specs.kind() == set || specs.kind() == b'*', "{name}");
                for ks in specs.children() {
                    assert_eq!(ks.kind(), map, "{name}");
                    assert!(ks.field("flags").unwrap().children().iter().all(|f| f.kind() == b'+'));
                    assert_eq!(ks.field("flags").unwrap().kind(), set);
                    let bs = ks.field("begin_search").unwrap();
                    assert_eq!(bs.field("type").unwrap().text(), b"index");
                    assert_eq!(bs.field("spec").unwrap().field("index").unwrap().kind(), b':');
                    let fk = ks.field("find_keys").unwrap();
                    assert_eq!(fk.field("type").unwrap().text(), b"range");
                    let spec: Vec<&str> = fk.field("spec").unwrap().fields().iter().map(|(k, _)| *k).collect();
                    assert_eq!(spec, ["lastkey", "keystep", "limit"]);
                }
                // Subcommands: an empty set, or an array of entries.
                if c[9].children().is_empty() {
                    assert_eq!(c[9].kind(), set, "{name}");
                } else {
                    assert_eq!(c[9].kind(), b'*', "{name}");
                    c[9].children().iter().for_each(|s| check(s, set, map));
                }
            }
            let info = decode(&enc(run(&[]), p));
            assert_eq!(info.children().len(), all().len());
            info.children().iter().for_each(|e| check(e, set, map));
            assert_eq!(enc(run(&[]), p), enc(run(&["info"]), p), "COMMAND and COMMAND INFO agree");
        }
    }

    #[test]
    fn count_is_the_number_of_top_level_commands() {
        assert_eq!(run(&["COUNT"]), Reply::Integer(all().len() as i64));
        assert_eq!(all().len(), 26);
    }

    #[test]
    fn info_of_unknown_names_is_null() {
        let r = run(&["INFO", "nope", "token.gen", "client|nope", "client|id|x"]);
        let Reply::Array(items) = &r else { panic!("{r:?}") };
        assert_eq!(items.len(), 4);
        assert_eq!(items[0], Reply::Null);
        assert!(matches!(items[1], Reply::Array(_)));
        assert_eq!(items[2], Reply::Null);
        assert_eq!(items[3], Reply::Null);
        assert_eq!(enc(run(&["INFO", "nope"]), Protocol::Resp2), b"*1\r\n$-1\r\n");
        assert_eq!(enc(run(&["INFO", "nope"]), Protocol::Resp3), b"*1\r\n_\r\n");
    }

    #[test]
    fn docs_omit_unknown_names() {
        assert_eq!(run(&["DOCS", "nope"]), Reply::Map(vec![]));
        let Reply::Map(m) = run(&["DOCS", "nope", "TOKEN.GEN", "client|ID"]) else { panic!() };
        let names: Vec<Reply> = m.into_iter().map(|(k, _)| k).collect();
        assert_eq!(names, [Reply::bulk_static("token.gen"), Reply::bulk_static("client|id")]);
    }

    /// (min, variable) argument counts implied by an argument grammar.
    fn grammar_arity(args: &[Arg]) -> (i32, bool) {
        let mut min = 0;
        let mut variable = false;
        for a in args {
            let (m, v) = match a.kind {
                ArgType::Block => grammar_arity(a.args),
                ArgType::OneOf => {
                    (a.args.iter().map(|x| grammar_arity(std::slice::from_ref(x)).0).min().unwrap_or(0), false)
                }
                _ => (i32::from(a.token.is_some() && a.kind != ArgType::PureToken) + 1, false),
            };
            let optional = a.flags.contains(&"optional");
            variable |= v || optional || a.flags.contains(&"multiple") || a.kind == ArgType::OneOf && a.args.len() > 1;
            if !optional {
                min += m;
            }
        }
        (min, variable)
    }

    #[test]
    fn token_arities_match_the_grammar() {
        let expected = [
            ("token.gen", -2),
            ("token.acquire", -2),
            ("token.keepalive", 3),
            ("token.unblock", 3),
            ("token.del", 3),
            ("token.delexpired", 2),
            ("token.info", 3),
            ("token.stats", 2),
        ];
        for (name, arity) in expected {
            let c = lookup(name).unwrap();
            assert_eq!(c.arity, arity, "{name}");
            let (min, variable) = grammar_arity(c.args);
            assert_eq!(if variable { -(min + 1) } else { min + 1 }, arity, "{name}: arity disagrees with its args");
            assert_eq!((c.first_key, c.last_key, c.step), (1, 1, 1), "{name}");
            assert_eq!(c.key_specs.len(), 1, "{name}");
            let ks = c.key_specs[0];
            assert_eq!((ks.begin_index, ks.last_key, ks.key_step, ks.limit), (1, 0, 1, 0), "{name}");
            assert_eq!(c.args[0].key_spec_index, Some(0), "{name}: the pool is the key");
            assert_eq!(c.group, "module");
            assert_eq!(c.module, Some(MODULE_NAME));
            assert!(c.flags.contains(&"module"));
            let read_only = name == "token.info" || name == "token.stats";
            assert_eq!(c.flags[0], if read_only { "readonly" } else { "write" }, "{name}");
            assert_eq!(ks.flags[0], if read_only { "RO" } else { "RW" }, "{name}");
            assert_eq!(c.acl_categories[0], if read_only { "@read" } else { "@write" }, "{name}");
            assert_eq!(c.flags.contains(&"fast"), c.acl_categories.contains(&"@fast"), "{name}");
            assert_eq!(!c.flags.contains(&"fast"), c.acl_categories.contains(&"@slow"), "{name}");
        }
    }

    #[test]
    fn table_is_consistent() {
        let specs = every_spec();
        let mut names: Vec<&str> = specs.iter().map(|c| c.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), specs.len(), "duplicate names");
        for c in &specs {
            assert_eq!(c.name, c.name.to_ascii_lowercase());
            assert!(c.arity != 0 && !c.summary.is_empty() && !c.since.is_empty() && !c.group.is_empty(), "{}", c.name);
            // Sets must not repeat members: a RESP3 set would silently drop one.
            for list in [c.flags, c.acl_categories, c.tips] {
                let mut l = list.to_vec();
                l.sort_unstable();
                l.dedup();
                assert_eq!(l.len(), list.len(), "{}: repeated set member", c.name);
            }
            assert!(c.acl_categories.iter().all(|a| a.starts_with('@')), "{}", c.name);
            for sub in c.subcommands {
                assert!(sub.name.starts_with(&format!("{}|", c.name)), "{}", sub.name);
            }
            fn keys(args: &[Arg], n: usize, name: &str) {
                for a in args {
                    assert_eq!(a.kind == ArgType::Key, a.key_spec_index.is_some(), "{name}: {}", a.name);
                    assert!(a.key_spec_index.is_none_or(|i| (i as usize) < n), "{name}: key spec index out of range");
                    assert_eq!(matches!(a.kind, ArgType::OneOf | ArgType::Block), !a.args.is_empty(), "{name}");
                    keys(a.args, n, name);
                }
            }
            keys(c.args, c.key_specs.len(), c.name);
        }
        for name in ["ping", "echo", "hello", "auth", "select", "quit", "reset", "info", "dbsize", "time"] {
            assert!(lookup(name).is_some(), "{name}");
        }
        for name in ["subscribe", "psubscribe", "unsubscribe", "punsubscribe", "publish"] {
            assert!(lookup(name).is_some(), "{name}");
        }
        for sub in ["id", "setname", "getname", "list", "info", "setinfo", "kill"] {
            assert!(lookup_sub("client", sub).is_some(), "client {sub}");
        }
        for sub in ["count", "info", "docs", "list", "help", "getkeys", "getkeysandflags"] {
            assert!(lookup_sub("command", sub).is_some(), "command {sub}");
        }
        assert!(lookup_sub("config", "get").is_some());
        assert!(lookup_sub("config", "set").is_none());
    }

    #[test]
    fn lookups_ignore_case_and_keep_subcommands_apart() {
        assert_eq!(lookup("TOKEN.Gen").map(|c| c.name), Some("token.gen"));
        assert_eq!(lookup_sub("Client", "ID").map(|c| c.name), Some("client|id"));
        assert!(lookup("client|id").is_none(), "a subcommand is not a command name");
        assert!(lookup("nope").is_none());
        assert!(lookup_sub("token.gen", "x").is_none());
        assert!(lookup_sub("nope", "id").is_none());
    }

    #[test]
    fn list_with_pattern_token_star_lists_the_eight_token_commands() {
        let Reply::Array(items) = run(&["LIST", "FILTERBY", "PATTERN", "token.*"]) else { panic!() };
        let names: Vec<Reply> = ["gen", "acquire", "keepalive", "unblock", "del", "delexpired", "info", "stats"]
            .iter()
            .map(|n| Reply::bulk(format!("token.{n}")))
            .collect();
        assert_eq!(items, names);
        // Case is ignored, as in Redis.
        assert_eq!(run(&["list", "filterby", "pattern", "TOKEN.*"]), Reply::Array(names.clone()));
        assert_eq!(run(&["LIST", "FILTERBY", "MODULE", "TokenD"]), Reply::Array(names));
    }

    #[test]
    fn list_filters_and_errors_as_redis() {
        let Reply::Array(everything) = run(&["LIST"]) else { panic!() };
        assert_eq!(everything.len(), every_spec().len(), "subcommands are listed too");
        assert_eq!(run(&["LIST", "FILTERBY", "PATTERN", "config|*"]), Reply::Array(vec![Reply::bulk("config|get")]));
        assert_eq!(run(&["LIST", "FILTERBY", "ACLCAT", "blocking"]), Reply::Array(vec![Reply::bulk("token.acquire")]));
        assert_eq!(run(&["LIST", "FILTERBY", "ACLCAT", "@blocking"]), Reply::Array(vec![]), "named without @");
        assert_eq!(run(&["LIST", "FILTERBY", "ACLCAT", "nope"]), Reply::Array(vec![]));
        assert_eq!(run(&["LIST", "FILTERBY", "MODULE", "nope"]), Reply::Array(vec![]));
        let syntax = Reply::error("ERR syntax error");
        for bad in [
            &["LIST", "x"][..],
            &["LIST", "FILTERBY"],
            &["LIST", "FILTERBY", "PATTERN"],
            &["LIST", "FILTERBY", "FOO", "x"],
            &["LIST", "FILTERBY", "PATTERN", "a", "b"],
            &["LIST", "x", "FILTERBY", "PATTERN", "a"],
        ] {
            assert_eq!(run(bad), syntax, "{bad:?}");
        }
    }

    #[test]
    fn subcommand_errors_use_redis_wording() {
        assert_eq!(run(&["COUNT", "x"]), Reply::error("ERR wrong number of arguments for 'command|count' command"));
        assert_eq!(run(&["help", "x"]), Reply::error("ERR wrong number of arguments for 'command|help' command"));
        assert_eq!(
            run(&["GETKEYS", "get"]),
            Reply::error("ERR wrong number of arguments for 'command|getkeys' command")
        );
        assert_eq!(run(&["foo"]), Reply::error("ERR unknown subcommand 'foo'. Try COMMAND HELP."));
        let long = "x".repeat(200);
        assert_eq!(
            run(&[&long]),
            Reply::error(format!("ERR unknown subcommand '{}'. Try COMMAND HELP.", "x".repeat(128)))
        );
        assert_eq!(arity_error("token.gen"), Reply::error("ERR wrong number of arguments for 'token.gen' command"));
    }

    #[test]
    fn help_is_an_array_of_status_lines() {
        let Reply::Array(lines) = run(&["HELP"]) else { panic!() };
        assert_eq!(lines.len(), 21);
        assert!(lines.iter().all(|l| matches!(l, Reply::Simple(_))));
        assert_eq!(lines[0], Reply::status("COMMAND <subcommand> [<arg> [value] [opt] ...]. Subcommands are:"));
    }

    #[test]
    fn getkeys_finds_the_pool() {
        let p = || Reply::bulk("p");
        assert_eq!(run(&["GETKEYS", "token.gen", "p", "EX", "5"]), Reply::Array(vec![p()]));
        assert_eq!(run(&["getkeys", "TOKEN.DEL", "p", "t"]), Reply::Array(vec![p()]));
        assert_eq!(
            run(&["GETKEYSANDFLAGS", "token.info", "p", "t"]),
            Reply::Array(vec![Reply::Array(vec![p(), Reply::Set(vec![Reply::status("RO"), Reply::status("access")])])])
        );
        assert_eq!(run(&["GETKEYS", "nope", "x"]), Reply::error("ERR Invalid command specified"));
        assert_eq!(run(&["GETKEYS", "client", "nope"]), Reply::error("ERR Invalid command specified"));
        assert_eq!(run(&["GETKEYS", "ping", "x"]), Reply::error("ERR The command has no key arguments"));
        assert_eq!(run(&["GETKEYS", "client", "id"]), Reply::error("ERR The command has no key arguments"));
        assert_eq!(
            run(&["GETKEYS", "token.del", "p"]),
            Reply::error("ERR Invalid number of arguments specified for command")
        );
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

    #[test]
    fn garbage_arguments_never_panic() {
        // A small deterministic generator over tricky words; every reply must encode.
        let words =
            ["", "|", "||", "client|", "|id", "FILTERBY", "PATTERN", "MODULE", "ACLCAT", "[", "\\", "*", "token.gen"];
        let subs = ["INFO", "DOCS", "LIST", "GETKEYS", "GETKEYSANDFLAGS", "COUNT", "HELP", "\u{ff}", "\0"];
        let mut seed: u32 = 1;
        let mut next = |n: usize| {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            (seed >> 16) as usize % n
        };
        for _ in 0..2000 {
            let mut args = vec![Bytes::from_static(subs[next(subs.len())].as_bytes())];
            for _ in 0..next(6) {
                args.push(Bytes::from_static(words[next(words.len())].as_bytes()));
            }
            let r = apply(&mut Parse::new(args));
            for p in PROTOCOLS {
                decode(&enc(r.clone(), p));
            }
        }
        let mut invalid_utf8 = Parse::new(vec![Bytes::from_static(b"\xff\xfe"), Bytes::from_static(b"x")]);
        assert!(apply(&mut invalid_utf8).is_error());
    }

    #[test]
    fn glob_basics() {
        let m = |p: &str, s: &str| crate::glob::glob_match(p.as_bytes(), s.as_bytes(), false);
        assert!(m("*", "anything"));
        assert!(!m("*", ""), "Redis: a lone * does not match the empty string");
        assert!(m("", ""));
        assert!(!m("", "a"));
        assert!(m("token.*", "token.gen"));
        assert!(!m("token.*", "tokenXgen"), "the dot is literal");
        assert!(m("h?llo", "hello") && !m("h?llo", "hllo"));
        assert!(m("h*llo", "hllo") && m("h*llo", "heeeello"));
        assert!(m("a**b", "ab") && m("a*", "a") && !m("a*?", "a"));
        assert!(m("h[ae]llo", "hallo") && !m("h[ae]llo", "hillo"));
        assert!(m("h[^e]llo", "hallo") && !m("h[^e]llo", "hello"));
        assert!(m("h[a-b]llo", "hbllo") && m("h[b-a]llo", "hallo"), "reversed ranges are swapped");
        assert!(m("a\\*b", "a*b") && !m("a\\*b", "axb"));
        // Edge cases checked against Redis 7.0.15's KEYS.
        assert!(m("[\\]]", "]"));
        assert!(!m("[]]", "]") && !m("[]]]", "]]"), "[] is an empty class");
        assert!(m("[^]", "x") && m("[^]", "]") && m("[^]b", "]b"), "[^] is any byte");
        assert!(m("x\\", "x\\"), "a trailing backslash is literal");
        assert!(m("[abc", "a") && !m("[abc", "d"), "an unclosed class runs to the end");
        assert!(!m("a[", "a[") && !m("a[", "a"));
    }

    #[test]
    fn glob_case_folding_follows_redis() {
        assert!(crate::glob::glob_match(b"CLIENT|*", b"client|id", true));
        assert!(!crate::glob::glob_match(b"CLIENT|*", b"client|id", false));
        assert!(crate::glob::glob_match(b"[A-C]x", b"bx", true));
        assert!(
            crate::glob::glob_match(b"[\\G]et", b"Get", true) && !crate::glob::glob_match(b"[\\G]et", b"get", true),
            "escapes in classes keep case"
        );
        assert!(crate::glob::glob_match(b"\\Get", b"get", true), "escapes outside classes fold case");
    }

    #[test]
    fn glob_stays_fast_on_hostile_patterns() {
        let pattern = "*a".repeat(40) + "*b";
        let text = "a".repeat(200);
        let t = std::time::Instant::now();
        assert!(!crate::glob::glob_match(pattern.as_bytes(), text.as_bytes(), false));
        assert!(t.elapsed() < std::time::Duration::from_secs(1));
        let deep = "*x".repeat(2000);
        assert!(!crate::glob::glob_match(deep.as_bytes(), "x".repeat(3000).as_bytes(), false), "nesting is capped");
    }
}
