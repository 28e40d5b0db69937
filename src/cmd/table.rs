//! The command table: every command tokend implements, declared once.
//!
//! Lookups by name (with Redis's errors for unknown commands and arity)
//! are here too. Each entry is what Redis 7.0's `COMMAND INFO` and `COMMAND DOCS` report
//! about the command (so clients and `redis-cli` learn tokend's grammar
//! exactly as they learn Redis's) plus its handler and, for commands that
//! can be queued in MULTI, its argument check. Dispatch
//! ([`super::execute`]), `COMMAND` ([`super::command`]) and key extraction
//! ([`super::spec::CommandSpec::keys`]) all read this one table, so what is
//! advertised and what runs cannot drift apart.
//!
//! The entries for Redis's own commands were transcribed from a real Redis
//! 7.0.15 (`COMMAND INFO` / `COMMAND DOCS`), keeping only the subcommands
//! tokend implements; `CLIENT SETINFO`, which 7.0 lacks, follows Redis 7.2.

use super::spec::{Arg, ArgType, CommandSpec, KeySpec, flags};
use super::{
    check_pool, check_pool_token, client, cluster, command, conn, keyspace, monitor, multi, ops, pubsub, server_info,
};
use super::{
    token_acquire, token_del, token_delexpired, token_gen, token_import, token_info, token_keepalive, token_stats,
    token_unblock,
};
use crate::reply::Reply;
use bytes::Bytes;

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

/// FLUSHDB's and FLUSHALL's `[ASYNC | SYNC]`.
const FLUSH_MODE: Arg = Arg::new("async", ArgType::OneOf).flags(&["optional"]).args(&[
    Arg::new("async", ArgType::PureToken).token("ASYNC").since("4.0.0"),
    Arg::new("sync", ArgType::PureToken).token("SYNC").since("6.2.0"),
]);

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
pub(super) static COMMANDS: &[CommandSpec] = &[
    // TOKEN.GEN pool [EX s | PX ms] [COUNT n]: adds memory (denyoom), O(N)
    // with COUNT so not `fast`; its key spec inserts, like SADD's.
    CommandSpec {
        name: "token.gen",
        run: Some(token_gen::run),
        check: Some(token_gen::check),
        arity: -2,
        flags: flags![WRITE, DENYOOM, MODULE],
        acl_categories: &["@write", "@slow"],
        tips: &["nondeterministic_output"],
        key_specs: &[pool_key(&["RW", "insert"])],
        summary: "Generates new free tokens in a pool",
        complexity: "O(N) where N is the number of tokens generated",
        args: &[Arg::key("pool", 0), DURATION, Arg::new("count", ArgType::Integer).token("COUNT").flags(&["optional"])],
        ..TOKEN_BASE
    },
    // TOKEN.IMPORT pool token lifetime-ms [lease-ms]: inserts one element
    // (RW insert), O(1), may use memory.
    CommandSpec {
        name: "token.import",
        run: Some(token_import::run),
        check: Some(token_import::check),
        arity: -4,
        flags: flags![WRITE, DENYOOM, MODULE, FAST],
        acl_categories: &["@write", "@fast"],
        key_specs: &[pool_key(&["RW", "insert"])],
        summary: "Puts a token made elsewhere into a pool, free or assigned, with the time it has left",
        complexity: "O(1)",
        args: &[
            Arg::key("pool", 0),
            TOKEN_ARG,
            Arg::new("lifetime-ms", ArgType::Integer),
            Arg::new("lease-ms", ArgType::Integer).flags(&["optional"]),
        ],
        ..TOKEN_BASE
    },
    // TOKEN.ACQUIRE pool [EX s | PX ms] [BLOCK ms]: may block (like XREAD,
    // whose BLOCK is optional too); returns an existing token (access) and
    // changes its state (update); the pick is random, like SPOP's.
    CommandSpec {
        name: "token.acquire",
        run: Some(token_acquire::run),
        check: Some(token_acquire::check),
        arity: -2,
        flags: flags![WRITE, MODULE, BLOCKING],
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
        run: Some(token_keepalive::run),
        check: Some(check_pool_token),
        arity: 3,
        flags: flags![WRITE, MODULE, FAST, NAMES_TOKEN],
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
        run: Some(token_unblock::run),
        check: Some(check_pool_token),
        arity: 3,
        flags: flags![WRITE, MODULE, FAST, NAMES_TOKEN],
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
        run: Some(token_del::run),
        check: Some(check_pool_token),
        arity: 3,
        flags: flags![WRITE, MODULE, FAST, NAMES_TOKEN],
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
        run: Some(token_delexpired::run),
        check: Some(check_pool),
        arity: 2,
        flags: flags![WRITE, MODULE],
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
        run: Some(token_info::run),
        check: Some(check_pool_token),
        arity: 3,
        flags: flags![READONLY, MODULE, FAST, NAMES_TOKEN],
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
        run: Some(token_stats::run),
        check: Some(check_pool),
        arity: 2,
        flags: flags![READONLY, MODULE, FAST],
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
        run: Some(conn::ping),
        arity: -1,
        flags: flags![FAST, SUBSCRIBED_OK],
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
        run: Some(conn::echo),
        arity: 2,
        flags: flags![LOADING, STALE, FAST],
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
        run: Some(conn::hello),
        arity: -1,
        flags: flags![NOSCRIPT, LOADING, STALE, FAST, NO_AUTH, ALLOW_BUSY, NOT_IN_TXN],
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
        run: Some(conn::auth),
        arity: -2,
        flags: flags![NOSCRIPT, LOADING, STALE, FAST, NO_AUTH, ALLOW_BUSY, NOT_IN_TXN],
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
        run: Some(conn::select),
        arity: 2,
        flags: flags![LOADING, STALE, FAST],
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
        run: Some(conn::quit),
        arity: -1,
        flags: flags![NOSCRIPT, LOADING, STALE, FAST, NO_AUTH, ALLOW_BUSY, SUBSCRIBED_OK, TXN_CONTROL],
        acl_categories: &["@fast", "@connection"],
        summary: "Close the connection",
        since: "1.0.0",
        group: "connection",
        complexity: "O(1)",
        ..CommandSpec::BASE
    },
    CommandSpec {
        name: "reset",
        run: Some(conn::reset),
        arity: 1,
        flags: flags![NOSCRIPT, LOADING, STALE, FAST, NO_AUTH, ALLOW_BUSY, SUBSCRIBED_OK, TXN_CONTROL],
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
        flags: flags![],
        acl_categories: &["@slow"],
        summary: "A container for client connection commands",
        since: "2.4.0",
        group: "connection",
        complexity: "Depends on subcommand.",
        subcommands: &[
            CommandSpec {
                name: "client|id",
                run: Some(client::id),
                arity: 2,
                flags: flags![NOSCRIPT, LOADING, STALE],
                acl_categories: &["@slow", "@connection"],
                summary: "Returns the client ID for the current connection",
                since: "5.0.0",
                group: "connection",
                complexity: "O(1)",
                ..CommandSpec::BASE
            },
            CommandSpec {
                name: "client|setname",
                run: Some(client::setname),
                arity: 3,
                flags: flags![NOSCRIPT, LOADING, STALE],
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
                run: Some(client::getname),
                arity: 2,
                flags: flags![NOSCRIPT, LOADING, STALE],
                acl_categories: &["@slow", "@connection"],
                summary: "Get the current connection name",
                since: "2.6.9",
                group: "connection",
                complexity: "O(1)",
                ..CommandSpec::BASE
            },
            CommandSpec {
                name: "client|list",
                run: Some(client::list),
                arity: -2,
                flags: flags![ADMIN, NOSCRIPT, LOADING, STALE],
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
                run: Some(client::info),
                arity: 2,
                flags: flags![NOSCRIPT, LOADING, STALE],
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
                run: Some(client::setinfo),
                arity: 4,
                flags: flags![NOSCRIPT, LOADING, STALE],
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
                run: Some(client::kill),
                arity: -3,
                flags: flags![ADMIN, NOSCRIPT, LOADING, STALE],
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
            CommandSpec {
                name: "client|no-evict",
                run: Some(client::no_evict),
                arity: 3,
                flags: flags![ADMIN, NOSCRIPT, LOADING, STALE],
                acl_categories: &["@admin", "@slow", "@dangerous", "@connection"],
                summary: "Set client eviction mode for the current connection",
                since: "7.0.0",
                group: "connection",
                complexity: "O(1)",
                args: &[Arg::new("enabled", ArgType::OneOf).args(&[
                    Arg::new("on", ArgType::PureToken).token("ON"),
                    Arg::new("off", ArgType::PureToken).token("OFF"),
                ])],
                ..CommandSpec::BASE
            },
            CommandSpec {
                name: "client|help",
                run: Some(client::help),
                arity: 2,
                flags: flags![LOADING, STALE],
                acl_categories: &["@slow"],
                summary: "Show helpful text about the different subcommands",
                since: "5.0.0",
                group: "connection",
                complexity: "O(1)",
                ..CommandSpec::BASE
            },
        ],
        ..CommandSpec::BASE
    },
    CommandSpec {
        name: "command",
        run: Some(command::all_info),
        arity: -1,
        flags: flags![LOADING, STALE],
        acl_categories: &["@slow", "@connection"],
        tips: &["nondeterministic_output_order"],
        summary: "Get array of Redis command details",
        since: "2.8.13",
        group: "server",
        complexity: "O(N) where N is the total number of Redis commands",
        subcommands: &[
            CommandSpec {
                name: "command|count",
                run: Some(command::count),
                arity: 2,
                flags: flags![LOADING, STALE],
                acl_categories: &["@slow", "@connection"],
                summary: "Get total number of Redis commands",
                since: "2.8.13",
                group: "server",
                complexity: "O(1)",
                ..CommandSpec::BASE
            },
            CommandSpec {
                name: "command|info",
                run: Some(command::info),
                arity: -2,
                flags: flags![LOADING, STALE],
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
                run: Some(command::docs),
                arity: -2,
                flags: flags![LOADING, STALE],
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
                run: Some(command::list),
                arity: -2,
                flags: flags![LOADING, STALE],
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
                run: Some(command::help),
                arity: 2,
                flags: flags![LOADING, STALE],
                acl_categories: &["@slow", "@connection"],
                summary: "Show helpful text about the different subcommands",
                since: "5.0.0",
                group: "server",
                complexity: "O(1)",
                ..CommandSpec::BASE
            },
            CommandSpec {
                name: "command|getkeys",
                run: Some(command::getkeys),
                arity: -4,
                flags: flags![LOADING, STALE],
                acl_categories: &["@slow", "@connection"],
                summary: "Extract keys given a full Redis command",
                since: "2.8.13",
                group: "server",
                complexity: "O(N) where N is the number of arguments to the command",
                ..CommandSpec::BASE
            },
            CommandSpec {
                name: "command|getkeysandflags",
                run: Some(command::getkeysandflags),
                arity: -4,
                flags: flags![LOADING, STALE],
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
        run: Some(server_info::info),
        arity: -1,
        flags: flags![LOADING, STALE, WHOLE_STORE],
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
        run: Some(server_info::dbsize),
        arity: 1,
        flags: flags![READONLY, FAST, WHOLE_STORE],
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
        flags: flags![],
        acl_categories: &["@slow"],
        summary: "A container for server configuration commands",
        since: "2.0.0",
        group: "server",
        complexity: "Depends on subcommand.",
        subcommands: &[
            CommandSpec {
                name: "config|get",
                run: Some(server_info::config_get),
                arity: -3,
                flags: flags![ADMIN, NOSCRIPT, LOADING, STALE],
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
            },
            CommandSpec {
                name: "config|set",
                run: Some(server_info::config_set),
                arity: -4,
                flags: flags![ADMIN, NOSCRIPT, LOADING, STALE],
                acl_categories: &["@admin", "@slow", "@dangerous"],
                tips: &["request_policy:all_nodes", "response_policy:all_succeeded"],
                summary: "Set configuration parameters to the given values",
                since: "2.0.0",
                group: "server",
                complexity: "O(N) when N is the number of configuration parameters provided",
                history: &[("7.0.0", "Added the ability to set multiple parameters in one call.")],
                args: &[Arg::new("parameter_value", ArgType::Block)
                    .flags(&["multiple"])
                    .args(&[Arg::new("parameter", ArgType::String), Arg::new("value", ArgType::String)])],
                ..CommandSpec::BASE
            },
            CommandSpec {
                name: "config|resetstat",
                run: Some(server_info::config_resetstat),
                arity: 2,
                flags: flags![ADMIN, NOSCRIPT, LOADING, STALE, WHOLE_STORE],
                acl_categories: &["@admin", "@slow", "@dangerous"],
                summary: "Reset the stats returned by INFO",
                since: "2.0.0",
                group: "server",
                complexity: "O(1)",
                ..CommandSpec::BASE
            },
            CommandSpec {
                name: "config|help",
                run: Some(server_info::config_help),
                arity: 2,
                flags: flags![LOADING, STALE],
                acl_categories: &["@slow"],
                summary: "Show helpful text about the different subcommands",
                since: "5.0.0",
                group: "server",
                complexity: "O(1)",
                ..CommandSpec::BASE
            },
        ],
        ..CommandSpec::BASE
    },
    CommandSpec {
        name: "subscribe",
        run: Some(pubsub::subscribe),
        arity: -2,
        flags: flags![PUBSUB, NOSCRIPT, LOADING, STALE, SUBSCRIBED_OK, NOT_IN_TXN],
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
        run: Some(pubsub::psubscribe),
        arity: -2,
        flags: flags![PUBSUB, NOSCRIPT, LOADING, STALE, SUBSCRIBED_OK, NOT_IN_TXN],
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
        run: Some(pubsub::unsubscribe),
        arity: -1,
        flags: flags![PUBSUB, NOSCRIPT, LOADING, STALE, SUBSCRIBED_OK, NOT_IN_TXN],
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
        run: Some(pubsub::punsubscribe),
        arity: -1,
        flags: flags![PUBSUB, NOSCRIPT, LOADING, STALE, SUBSCRIBED_OK, NOT_IN_TXN],
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
        run: Some(pubsub::publish),
        arity: 3,
        flags: flags![PUBSUB, LOADING, STALE, FAST],
        acl_categories: &["@pubsub", "@fast"],
        summary: "Post a message to a channel",
        since: "2.0.0",
        group: "pubsub",
        complexity: "O(N+M) where N is the number of clients subscribed to the receiving channel and M is the total number of subscribed patterns (by any client).",
        args: &[Arg::new("channel", ArgType::String), Arg::new("message", ArgType::String)],
        ..CommandSpec::BASE
    },
    CommandSpec {
        name: "pubsub",
        arity: -2,
        flags: flags![],
        acl_categories: &["@slow"],
        summary: "A container for Pub/Sub commands",
        since: "2.8.0",
        group: "pubsub",
        complexity: "Depends on subcommand.",
        subcommands: &[
            CommandSpec {
                name: "pubsub|channels",
                run: Some(pubsub::pubsub_channels),
                arity: -2,
                flags: flags![PUBSUB, LOADING, STALE],
                acl_categories: &["@pubsub", "@slow"],
                summary: "Return the active channels",
                since: "2.8.0",
                group: "pubsub",
                complexity: "O(N) where N is the number of active channels, and assuming constant time pattern matching (relatively short channels and patterns)",
                args: &[Arg::new("pattern", ArgType::Pattern).flags(&["optional"])],
                ..CommandSpec::BASE
            },
            CommandSpec {
                name: "pubsub|numsub",
                run: Some(pubsub::pubsub_numsub),
                arity: -2,
                flags: flags![PUBSUB, LOADING, STALE],
                acl_categories: &["@pubsub", "@slow"],
                summary: "Get the count of subscribers for channels",
                since: "2.8.0",
                group: "pubsub",
                complexity: "O(N) for the NUMSUB subcommand, where N is the number of requested channels",
                args: &[Arg::new("channel", ArgType::String).flags(&["optional", "multiple"])],
                ..CommandSpec::BASE
            },
            CommandSpec {
                name: "pubsub|numpat",
                run: Some(pubsub::pubsub_numpat),
                arity: 2,
                flags: flags![PUBSUB, LOADING, STALE],
                acl_categories: &["@pubsub", "@slow"],
                summary: "Get the count of unique patterns pattern subscriptions",
                since: "2.8.0",
                group: "pubsub",
                complexity: "O(1)",
                ..CommandSpec::BASE
            },
            CommandSpec {
                name: "pubsub|help",
                run: Some(pubsub::pubsub_help),
                arity: 2,
                flags: flags![LOADING, STALE],
                acl_categories: &["@slow"],
                summary: "Show helpful text about the different subcommands",
                since: "6.2.0",
                group: "pubsub",
                complexity: "O(1)",
                ..CommandSpec::BASE
            },
        ],
        ..CommandSpec::BASE
    },
    CommandSpec {
        name: "time",
        run: Some(server_info::time),
        arity: 1,
        flags: flags![LOADING, STALE, FAST],
        acl_categories: &["@fast"],
        tips: &["nondeterministic_output"],
        summary: "Return the current server time",
        since: "2.6.0",
        group: "server",
        complexity: "O(1)",
        ..CommandSpec::BASE
    },
    // Pools as keys, as Redis 7.0.15 reports these commands.
    CommandSpec {
        name: "scan",
        run: Some(keyspace::scan),
        arity: -2,
        flags: flags![READONLY, WHOLE_STORE],
        acl_categories: &["@keyspace", "@read", "@slow"],
        tips: &["nondeterministic_output", "request_policy:special"],
        summary: "Incrementally iterate the keys space",
        since: "2.8.0",
        group: "generic",
        complexity: "O(1) for every call. O(N) for a complete iteration, including enough command calls for the cursor to return back to 0. N is the number of elements inside the collection.",
        history: &[("6.0.0", "Added the `TYPE` subcommand.")],
        args: &[
            Arg::new("cursor", ArgType::Integer),
            Arg::new("pattern", ArgType::Pattern).token("MATCH").flags(&["optional"]),
            Arg::new("count", ArgType::Integer).token("COUNT").flags(&["optional"]),
            Arg::new("type", ArgType::String).token("TYPE").since("6.0.0").flags(&["optional"]),
        ],
        ..CommandSpec::BASE
    },
    CommandSpec {
        name: "keys",
        run: Some(keyspace::keys),
        arity: 2,
        flags: flags![READONLY, WHOLE_STORE],
        acl_categories: &["@keyspace", "@read", "@slow", "@dangerous"],
        tips: &["request_policy:all_shards", "nondeterministic_output_order"],
        summary: "Find all keys matching the given pattern",
        since: "1.0.0",
        group: "generic",
        complexity: "O(N) with N being the number of keys in the database, under the assumption that the key names in the database and the given pattern have limited length.",
        args: &[Arg::new("pattern", ArgType::Pattern)],
        ..CommandSpec::BASE
    },
    CommandSpec {
        name: "exists",
        run: Some(keyspace::exists),
        arity: -2,
        flags: flags![READONLY, FAST],
        first_key: 1,
        last_key: -1,
        step: 1,
        acl_categories: &["@keyspace", "@read", "@fast"],
        tips: &["request_policy:multi_shard", "response_policy:agg_sum"],
        key_specs: &[KeySpec { notes: None, flags: &["RO"], begin_index: 1, last_key: -1, key_step: 1, limit: 0 }],
        summary: "Determine if a key exists",
        since: "1.0.0",
        group: "generic",
        complexity: "O(N) where N is the number of keys to check.",
        history: &[("3.0.3", "Accepts multiple `key` arguments.")],
        args: &[Arg::key("key", 0).flags(&["multiple"])],
        ..CommandSpec::BASE
    },
    CommandSpec {
        name: "type",
        run: Some(keyspace::type_of),
        arity: 2,
        flags: flags![READONLY, FAST],
        first_key: 1,
        last_key: 1,
        step: 1,
        acl_categories: &["@keyspace", "@read", "@fast"],
        key_specs: &[KeySpec { notes: None, flags: &["RO"], begin_index: 1, last_key: 0, key_step: 1, limit: 0 }],
        summary: "Determine the type stored at key",
        since: "1.0.0",
        group: "generic",
        complexity: "O(1)",
        args: &[Arg::key("key", 0)],
        ..CommandSpec::BASE
    },
    CommandSpec {
        name: "del",
        run: Some(keyspace::del),
        arity: -2,
        flags: flags![WRITE],
        first_key: 1,
        last_key: -1,
        step: 1,
        acl_categories: &["@keyspace", "@write", "@slow"],
        tips: &["request_policy:multi_shard", "response_policy:agg_sum"],
        key_specs: &[KeySpec {
            notes: None,
            flags: &["RM", "delete"],
            begin_index: 1,
            last_key: -1,
            key_step: 1,
            limit: 0,
        }],
        summary: "Delete a key",
        since: "1.0.0",
        group: "generic",
        complexity: "O(N) where N is the number of keys that will be removed. When a key to remove holds a value other than a string, the individual complexity for this key is O(M) where M is the number of elements in the list, set, sorted set or hash. Removing a single key that holds a string value is O(1).",
        args: &[Arg::key("key", 0).flags(&["multiple"])],
        ..CommandSpec::BASE
    },
    CommandSpec {
        name: "unlink",
        run: Some(keyspace::del),
        arity: -2,
        flags: flags![WRITE, FAST],
        first_key: 1,
        last_key: -1,
        step: 1,
        acl_categories: &["@keyspace", "@write", "@fast"],
        tips: &["request_policy:multi_shard", "response_policy:agg_sum"],
        key_specs: &[KeySpec {
            notes: None,
            flags: &["RM", "delete"],
            begin_index: 1,
            last_key: -1,
            key_step: 1,
            limit: 0,
        }],
        summary: "Delete a key asynchronously in another thread. Otherwise it is just as DEL, but non blocking.",
        since: "4.0.0",
        group: "generic",
        complexity: "O(1) for each key removed regardless of its size. Then the command does O(N) work in a different thread in order to reclaim memory, where N is the number of allocations the deleted objects where composed of.",
        args: &[Arg::key("key", 0).flags(&["multiple"])],
        ..CommandSpec::BASE
    },
    CommandSpec {
        name: "memory",
        arity: -2,
        flags: flags![],
        acl_categories: &["@slow"],
        summary: "A container for memory diagnostics commands",
        since: "4.0.0",
        group: "server",
        complexity: "Depends on subcommand.",
        subcommands: &[
            CommandSpec {
                name: "memory|usage",
                run: Some(keyspace::memory_usage),
                arity: -3,
                flags: flags![READONLY],
                first_key: 2,
                last_key: 2,
                step: 1,
                acl_categories: &["@read", "@slow"],
                key_specs: &[KeySpec {
                    notes: None,
                    flags: &["RO"],
                    begin_index: 2,
                    last_key: 0,
                    key_step: 1,
                    limit: 0,
                }],
                summary: "Estimate the memory usage of a key",
                since: "4.0.0",
                group: "server",
                complexity: "O(N) where N is the number of samples.",
                args: &[Arg::key("key", 0), Arg::new("count", ArgType::Integer).token("SAMPLES").flags(&["optional"])],
                ..CommandSpec::BASE
            },
            CommandSpec {
                name: "memory|help",
                run: Some(keyspace::memory_help),
                arity: 2,
                flags: flags![LOADING, STALE],
                acl_categories: &["@slow"],
                summary: "Show helpful text about the different subcommands",
                since: "4.0.0",
                group: "server",
                complexity: "O(1)",
                ..CommandSpec::BASE
            },
        ],
        ..CommandSpec::BASE
    },
    CommandSpec {
        name: "object",
        arity: -2,
        flags: flags![],
        acl_categories: &["@slow"],
        summary: "A container for object introspection commands",
        since: "2.2.3",
        group: "generic",
        complexity: "Depends on subcommand.",
        subcommands: &[
            CommandSpec {
                name: "object|encoding",
                run: Some(keyspace::object_encoding),
                arity: 3,
                flags: flags![READONLY],
                first_key: 2,
                last_key: 2,
                step: 1,
                acl_categories: &["@keyspace", "@read", "@slow"],
                tips: &["nondeterministic_output"],
                key_specs: &[KeySpec {
                    notes: None,
                    flags: &["RO"],
                    begin_index: 2,
                    last_key: 0,
                    key_step: 1,
                    limit: 0,
                }],
                summary: "Inspect the internal encoding of a Redis object",
                since: "2.2.3",
                group: "generic",
                complexity: "O(1)",
                args: &[Arg::key("key", 0)],
                ..CommandSpec::BASE
            },
            CommandSpec {
                name: "object|help",
                run: Some(keyspace::object_help),
                arity: 2,
                flags: flags![LOADING, STALE],
                acl_categories: &["@keyspace", "@slow"],
                summary: "Show helpful text about the different subcommands",
                since: "6.2.0",
                group: "generic",
                complexity: "O(1)",
                ..CommandSpec::BASE
            },
        ],
        ..CommandSpec::BASE
    },
    CommandSpec {
        name: "flushdb",
        run: Some(keyspace::flush),
        check: Some(keyspace::check_flush),
        arity: -1,
        flags: flags![WRITE, WHOLE_STORE],
        acl_categories: &["@keyspace", "@write", "@slow", "@dangerous"],
        tips: &["request_policy:all_shards", "response_policy:all_succeeded"],
        summary: "Remove all keys from the current database",
        since: "1.0.0",
        group: "server",
        complexity: "O(N) where N is the number of keys in the selected database",
        history: &[
            ("4.0.0", "Added the `ASYNC` flushing mode modifier."),
            ("6.2.0", "Added the `SYNC` flushing mode modifier."),
        ],
        args: &[FLUSH_MODE],
        ..CommandSpec::BASE
    },
    CommandSpec {
        name: "flushall",
        run: Some(keyspace::flush),
        check: Some(keyspace::check_flush),
        arity: -1,
        flags: flags![WRITE, WHOLE_STORE],
        acl_categories: &["@keyspace", "@write", "@slow", "@dangerous"],
        tips: &["request_policy:all_shards", "response_policy:all_succeeded"],
        summary: "Remove all keys from all databases",
        since: "1.0.0",
        group: "server",
        complexity: "O(N) where N is the total number of keys in all databases",
        history: &[
            ("4.0.0", "Added the `ASYNC` flushing mode modifier."),
            ("6.2.0", "Added the `SYNC` flushing mode modifier."),
        ],
        args: &[FLUSH_MODE],
        ..CommandSpec::BASE
    },
    CommandSpec {
        name: "monitor",
        run: Some(monitor::monitor),
        arity: 1,
        flags: flags![ADMIN, NOSCRIPT, LOADING, STALE, NOT_IN_TXN],
        acl_categories: &["@admin", "@slow", "@dangerous"],
        summary: "Listen for all requests received by the server in real time",
        since: "1.0.0",
        group: "server",
        ..CommandSpec::BASE
    },
    // Operator commands, as Redis 7.0.15 reports them (LATENCY DOCTOR and
    // GRAPH are left out: their text reports are about Redis's own events).
    CommandSpec {
        name: "slowlog",
        arity: -2,
        flags: flags![],
        acl_categories: &["@slow"],
        summary: "A container for slow log commands",
        since: "2.2.12",
        group: "server",
        complexity: "Depends on subcommand.",
        subcommands: &[
            CommandSpec {
                name: "slowlog|get",
                run: Some(ops::slowlog_get),
                arity: -2,
                flags: flags![ADMIN, LOADING, STALE],
                acl_categories: &["@admin", "@slow", "@dangerous"],
                tips: &["request_policy:all_nodes", "nondeterministic_output"],
                summary: "Get the slow log's entries",
                since: "2.2.12",
                group: "server",
                complexity: "O(N) where N is the number of entries returned",
                history: &[("4.0.0", "Added client IP address, port and name to the reply.")],
                args: &[Arg::new("count", ArgType::Integer).flags(&["optional"])],
                ..CommandSpec::BASE
            },
            CommandSpec {
                name: "slowlog|len",
                run: Some(ops::slowlog_len),
                arity: 2,
                flags: flags![ADMIN, LOADING, STALE],
                acl_categories: &["@admin", "@slow", "@dangerous"],
                tips: &["request_policy:all_nodes", "response_policy:agg_sum", "nondeterministic_output"],
                summary: "Get the slow log's length",
                since: "2.2.12",
                group: "server",
                complexity: "O(1)",
                ..CommandSpec::BASE
            },
            CommandSpec {
                name: "slowlog|reset",
                run: Some(ops::slowlog_reset),
                arity: 2,
                flags: flags![ADMIN, LOADING, STALE],
                acl_categories: &["@admin", "@slow", "@dangerous"],
                tips: &["request_policy:all_nodes", "response_policy:all_succeeded"],
                summary: "Clear all entries from the slow log",
                since: "2.2.12",
                group: "server",
                complexity: "O(N) where N is the number of entries in the slowlog",
                ..CommandSpec::BASE
            },
            CommandSpec {
                name: "slowlog|help",
                run: Some(ops::slowlog_help),
                arity: 2,
                flags: flags![LOADING, STALE],
                acl_categories: &["@slow"],
                summary: "Show helpful text about the different subcommands",
                since: "6.2.0",
                group: "server",
                complexity: "O(1)",
                ..CommandSpec::BASE
            },
        ],
        ..CommandSpec::BASE
    },
    CommandSpec {
        name: "latency",
        arity: -2,
        flags: flags![],
        acl_categories: &["@slow"],
        summary: "A container for latency diagnostics commands",
        since: "2.8.13",
        group: "server",
        complexity: "Depends on subcommand.",
        subcommands: &[
            CommandSpec {
                name: "latency|latest",
                run: Some(ops::latency_latest),
                arity: 2,
                flags: flags![ADMIN, NOSCRIPT, LOADING, STALE],
                acl_categories: &["@admin", "@slow", "@dangerous"],
                tips: &["nondeterministic_output", "request_policy:all_nodes", "response_policy:special"],
                summary: "Return the latest latency samples for all events.",
                since: "2.8.13",
                group: "server",
                complexity: "O(1)",
                ..CommandSpec::BASE
            },
            CommandSpec {
                name: "latency|history",
                run: Some(ops::latency_history),
                arity: 3,
                flags: flags![ADMIN, NOSCRIPT, LOADING, STALE],
                acl_categories: &["@admin", "@slow", "@dangerous"],
                tips: &["nondeterministic_output", "request_policy:all_nodes", "response_policy:special"],
                summary: "Return timestamp-latency samples for the event.",
                since: "2.8.13",
                group: "server",
                complexity: "O(1)",
                args: &[Arg::new("event", ArgType::String)],
                ..CommandSpec::BASE
            },
            CommandSpec {
                name: "latency|reset",
                run: Some(ops::latency_reset),
                arity: -2,
                flags: flags![ADMIN, NOSCRIPT, LOADING, STALE],
                acl_categories: &["@admin", "@slow", "@dangerous"],
                tips: &["request_policy:all_nodes", "response_policy:all_succeeded"],
                summary: "Reset latency data for one or more events.",
                since: "2.8.13",
                group: "server",
                complexity: "O(1)",
                args: &[Arg::new("event", ArgType::String).flags(&["optional", "multiple"])],
                ..CommandSpec::BASE
            },
            CommandSpec {
                name: "latency|histogram",
                run: Some(ops::latency_histogram),
                arity: -2,
                flags: flags![ADMIN, NOSCRIPT, LOADING, STALE],
                acl_categories: &["@admin", "@slow", "@dangerous"],
                tips: &["nondeterministic_output", "request_policy:all_nodes", "response_policy:special"],
                summary: "Return the cumulative distribution of latencies of a subset of commands or all.",
                since: "7.0.0",
                group: "server",
                complexity: "O(N) where N is the number of commands with latency information being retrieved.",
                args: &[Arg::new("command", ArgType::String).flags(&["optional", "multiple"])],
                ..CommandSpec::BASE
            },
            CommandSpec {
                name: "latency|help",
                run: Some(ops::latency_help),
                arity: 2,
                flags: flags![LOADING, STALE],
                acl_categories: &["@slow"],
                summary: "Show helpful text about the different subcommands.",
                since: "2.8.13",
                group: "server",
                complexity: "O(1)",
                ..CommandSpec::BASE
            },
        ],
        ..CommandSpec::BASE
    },
    CommandSpec {
        name: "cluster",
        arity: -2,
        flags: flags![],
        acl_categories: &["@slow"],
        summary: "A container for Redis Cluster commands.",
        since: "3.0.0",
        group: "cluster",
        complexity: "Depends on subcommand.",
        subcommands: &[
            CommandSpec {
                name: "cluster|info",
                run: Some(cluster::info),
                arity: 2,
                flags: flags![LOADING, STALE],
                acl_categories: &["@slow"],
                tips: &["nondeterministic_output"],
                summary: "Returns information about the state of a node.",
                since: "3.0.0",
                group: "cluster",
                complexity: "O(1)",
                ..CommandSpec::BASE
            },
            CommandSpec {
                name: "cluster|myid",
                run: Some(cluster::myid),
                arity: 2,
                flags: flags![LOADING, STALE],
                acl_categories: &["@slow"],
                summary: "Returns the ID of a node.",
                since: "3.0.0",
                group: "cluster",
                complexity: "O(1)",
                ..CommandSpec::BASE
            },
            CommandSpec {
                name: "cluster|keyslot",
                run: Some(cluster::keyslot_cmd),
                arity: 3,
                flags: flags![LOADING, STALE],
                acl_categories: &["@slow"],
                summary: "Returns the hash slot for a key.",
                since: "3.0.0",
                group: "cluster",
                complexity: "O(N) where N is the number of bytes in the key",
                args: &[Arg::new("key", ArgType::String)],
                ..CommandSpec::BASE
            },
            CommandSpec {
                name: "cluster|slots",
                run: Some(cluster::slots),
                arity: 2,
                flags: flags![LOADING, STALE],
                acl_categories: &["@slow"],
                tips: &["nondeterministic_output"],
                summary: "Returns the mapping of cluster slots to nodes.",
                since: "3.0.0",
                group: "cluster",
                complexity: "O(N) where N is the total number of Cluster nodes",
                ..CommandSpec::BASE
            },
            CommandSpec {
                name: "cluster|shards",
                run: Some(cluster::shards),
                arity: 2,
                flags: flags![LOADING, STALE],
                acl_categories: &["@slow"],
                tips: &["nondeterministic_output"],
                summary: "Returns the mapping of cluster slots to shards.",
                since: "7.0.0",
                group: "cluster",
                complexity: "O(N) where N is the total number of cluster nodes",
                ..CommandSpec::BASE
            },
            CommandSpec {
                name: "cluster|nodes",
                run: Some(cluster::nodes),
                arity: 2,
                flags: flags![LOADING, STALE],
                acl_categories: &["@slow"],
                tips: &["nondeterministic_output"],
                summary: "Returns the cluster configuration for a node.",
                since: "3.0.0",
                group: "cluster",
                complexity: "O(N) where N is the total number of Cluster nodes",
                ..CommandSpec::BASE
            },
            CommandSpec {
                name: "cluster|countkeysinslot",
                run: Some(cluster::countkeysinslot),
                arity: 3,
                flags: flags![STALE, WHOLE_STORE],
                acl_categories: &["@slow"],
                summary: "Returns the number of keys in a hash slot.",
                since: "3.0.0",
                group: "cluster",
                complexity: "O(N) where N is the number of pools held by this node",
                args: &[Arg::new("slot", ArgType::Integer)],
                ..CommandSpec::BASE
            },
            CommandSpec {
                name: "cluster|getkeysinslot",
                run: Some(cluster::getkeysinslot),
                arity: 4,
                flags: flags![STALE, WHOLE_STORE],
                acl_categories: &["@slow"],
                tips: &["nondeterministic_output"],
                summary: "Returns the key names in a hash slot.",
                since: "3.0.0",
                group: "cluster",
                complexity: "O(N) where N is the number of pools held by this node",
                args: &[Arg::new("slot", ArgType::Integer), Arg::new("count", ArgType::Integer)],
                ..CommandSpec::BASE
            },
            CommandSpec {
                name: "cluster|replicas",
                run: Some(cluster::replicas),
                arity: 3,
                flags: flags![ADMIN, STALE],
                acl_categories: &["@admin", "@slow", "@dangerous"],
                tips: &["nondeterministic_output"],
                summary: "Lists the replica nodes of a master node.",
                since: "5.0.0",
                group: "cluster",
                complexity: "O(1)",
                args: &[Arg::new("node-id", ArgType::String)],
                ..CommandSpec::BASE
            },
            CommandSpec {
                name: "cluster|links",
                run: Some(cluster::links),
                arity: 2,
                flags: flags![STALE],
                acl_categories: &["@slow"],
                tips: &["nondeterministic_output"],
                summary: "Returns a list of all TCP links to and from peer nodes.",
                since: "7.0.0",
                group: "cluster",
                complexity: "O(1)",
                ..CommandSpec::BASE
            },
            CommandSpec {
                name: "cluster|help",
                run: Some(cluster::help),
                arity: 2,
                flags: flags![LOADING, STALE],
                acl_categories: &["@slow"],
                summary: "Show helpful text about the different subcommands",
                since: "5.0.0",
                group: "cluster",
                complexity: "O(1)",
                ..CommandSpec::BASE
            },
        ],
        ..CommandSpec::BASE
    },
    CommandSpec {
        name: "readonly",
        run: Some(cluster::accept),
        arity: 1,
        flags: flags![LOADING, STALE, FAST],
        acl_categories: &["@keyspace", "@fast", "@connection"],
        summary: "Enables read-only queries for a connection to a Redis Cluster replica node.",
        since: "3.0.0",
        group: "cluster",
        complexity: "O(1)",
        ..CommandSpec::BASE
    },
    CommandSpec {
        name: "readwrite",
        run: Some(cluster::accept),
        arity: 1,
        flags: flags![LOADING, STALE, FAST],
        acl_categories: &["@keyspace", "@fast", "@connection"],
        summary: "Enables read-write queries for a connection to a Redis Cluster replica node.",
        since: "3.0.0",
        group: "cluster",
        complexity: "O(1)",
        ..CommandSpec::BASE
    },
    CommandSpec {
        name: "asking",
        run: Some(cluster::accept),
        arity: 1,
        flags: flags![FAST],
        acl_categories: &["@fast", "@connection"],
        summary: "Signals that a cluster client is following an -ASK redirect.",
        since: "3.0.0",
        group: "cluster",
        complexity: "O(1)",
        ..CommandSpec::BASE
    },
    CommandSpec {
        name: "role",
        run: Some(ops::role),
        arity: 1,
        flags: flags![NOSCRIPT, LOADING, STALE, FAST],
        acl_categories: &["@admin", "@fast", "@dangerous"],
        summary: "Return the role of the instance in the context of replication",
        since: "2.8.12",
        group: "server",
        complexity: "O(1)",
        ..CommandSpec::BASE
    },
    CommandSpec {
        name: "shutdown",
        run: Some(ops::shutdown),
        arity: -1,
        flags: flags![ADMIN, NOSCRIPT, LOADING, STALE, NO_MULTI, ALLOW_BUSY],
        acl_categories: &["@admin", "@slow", "@dangerous"],
        summary: "Synchronously save the dataset to disk and then shut down the server",
        since: "1.0.0",
        group: "server",
        complexity: "O(N) when saving, where N is the total number of keys in all databases when saving data, otherwise O(1)",
        history: &[("7.0.0", "Added the `NOW`, `FORCE` and `ABORT` modifiers.")],
        args: &[
            Arg::new("nosave_save", ArgType::OneOf).flags(&["optional"]).args(&[
                Arg::new("nosave", ArgType::PureToken).token("NOSAVE"),
                Arg::new("save", ArgType::PureToken).token("SAVE"),
            ]),
            Arg::new("now", ArgType::PureToken).token("NOW").since("7.0.0").flags(&["optional"]),
            Arg::new("force", ArgType::PureToken).token("FORCE").since("7.0.0").flags(&["optional"]),
            Arg::new("abort", ArgType::PureToken).token("ABORT").since("7.0.0").flags(&["optional"]),
        ],
        ..CommandSpec::BASE
    },
    // Transactions, as Redis 7.0.15 reports them.
    CommandSpec {
        name: "multi",
        run: Some(multi::multi),
        arity: 1,
        flags: flags![NOSCRIPT, LOADING, STALE, FAST, ALLOW_BUSY, TXN_CONTROL],
        acl_categories: &["@fast", "@transaction"],
        summary: "Mark the start of a transaction block",
        since: "1.2.0",
        group: "transactions",
        complexity: "O(1)",
        ..CommandSpec::BASE
    },
    CommandSpec {
        name: "exec",
        run: Some(multi::exec),
        arity: 1,
        flags: flags![NOSCRIPT, LOADING, STALE, SKIP_SLOWLOG, TXN_CONTROL],
        acl_categories: &["@slow", "@transaction"],
        summary: "Execute all commands issued after MULTI",
        since: "1.2.0",
        group: "transactions",
        complexity: "Depends on commands in the transaction",
        ..CommandSpec::BASE
    },
    CommandSpec {
        name: "discard",
        run: Some(multi::discard),
        arity: 1,
        flags: flags![NOSCRIPT, LOADING, STALE, FAST, ALLOW_BUSY, TXN_CONTROL],
        acl_categories: &["@fast", "@transaction"],
        summary: "Discard all commands issued after MULTI",
        since: "2.0.0",
        group: "transactions",
        complexity: "O(N), when N is the number of queued commands",
        ..CommandSpec::BASE
    },
    CommandSpec {
        name: "watch",
        run: Some(multi::watch),
        arity: -2,
        flags: flags![NOSCRIPT, LOADING, STALE, FAST, ALLOW_BUSY, TXN_CONTROL],
        first_key: 1,
        last_key: -1,
        step: 1,
        acl_categories: &["@fast", "@transaction"],
        key_specs: &[KeySpec { notes: None, flags: &["RO"], begin_index: 1, last_key: -1, key_step: 1, limit: 0 }],
        summary: "Watch the given keys to determine execution of the MULTI/EXEC block",
        since: "2.2.0",
        group: "transactions",
        complexity: "O(1) for every key.",
        args: &[Arg::key("key", 0).flags(&["multiple"])],
        ..CommandSpec::BASE
    },
    CommandSpec {
        name: "unwatch",
        run: Some(multi::unwatch),
        arity: 1,
        flags: flags![NOSCRIPT, LOADING, STALE, FAST, ALLOW_BUSY],
        acl_categories: &["@fast", "@transaction"],
        summary: "Forget about all watched keys",
        since: "2.2.0",
        group: "transactions",
        complexity: "O(1)",
        ..CommandSpec::BASE
    },
];

/// Finds a top-level command by name, ignoring ASCII case as Redis does.
fn find(name: &[u8]) -> Option<&'static CommandSpec> {
    top_index(name).map(|i| &COMMANDS[i])
}

/// The place in [`COMMANDS`] of the top-level command called `name`, case
/// ignored.
fn top_index(name: &[u8]) -> Option<usize> {
    let same = by_len().get(name.len())?;
    // Most clients send names in capitals (redis-py, redis-benchmark):
    // a plain comparison finds those.
    same.iter()
        .find(|(_, upper)| upper.as_bytes() == name)
        .or_else(|| same.iter().find(|&&(i, _)| COMMANDS[usize::from(i)].name.as_bytes().eq_ignore_ascii_case(name)))
        .map(|&(i, _)| usize::from(i))
}

/// Looks up a top-level command by name (`"token.gen"`, `"client"`); case is
/// ignored. A `container|sub` name is not resolved here, because a client
/// sending it as a command name gets "unknown command" from Redis.
pub fn lookup(name: &str) -> Option<&'static CommandSpec> {
    find(name.as_bytes())
}

/// [`lookup`] on the raw name bytes (no allocation on the request path).
pub fn lookup_bytes(name: &[u8]) -> Option<&'static CommandSpec> {
    find(name)
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
pub(super) fn lookup_full(name: &[u8]) -> Option<&'static CommandSpec> {
    let mut parts = name.split(|&b| b == b'|');
    let base = find(parts.next()?)?;
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
    resolve_id(argv).map(|(spec, _)| spec).map_err(|(_, r)| r)
}

/// [`resolve`], with the command's number in [`flat`] (also on an arity
/// error, which Redis counts as a rejected call of that command).
pub fn resolve_id(argv: &[Bytes]) -> Result<(&'static CommandSpec, usize), (Option<usize>, Reply)> {
    let Some(name) = argv.first() else {
        return Err((None, unknown_command_error(argv)));
    };
    let Some(top) = top_index(name) else {
        return Err((None, unknown_command_error(argv)));
    };
    let base = &COMMANDS[top];
    let mut id = offsets()[top];
    let spec = match argv.get(1) {
        Some(sub) if !base.subcommands.is_empty() => {
            let found = base
                .subcommands
                .iter()
                .position(|c| c.name.rsplit('|').next().is_some_and(|s| s.as_bytes().eq_ignore_ascii_case(sub)));
            match found {
                Some(j) => {
                    id += 1 + j;
                    &base.subcommands[j]
                }
                None => return Err((None, unknown_subcommand_error(name, sub))),
            }
        }
        _ => base,
    };
    if spec.arity_ok(argv.len()) { Ok((spec, id)) } else { Err((Some(id), arity_error(spec.name))) }
}

/// The places in [`COMMANDS`] of the commands with names of each length,
/// with their names in capitals: a request's name is compared with those
/// of its length only (a scan of the whole table was 130 instructions of
/// a PING's 1,700).
fn by_len() -> &'static [Vec<(u16, String)>] {
    static BY_LEN: std::sync::OnceLock<Vec<Vec<(u16, String)>>> = std::sync::OnceLock::new();
    BY_LEN.get_or_init(|| {
        let mut by_len = vec![Vec::new(); COMMANDS.iter().map(|c| c.name.len() + 1).max().unwrap_or(0)];
        for (i, c) in COMMANDS.iter().enumerate() {
            by_len[c.name.len()].push((i as u16, c.name.to_ascii_uppercase()));
        }
        by_len
    })
}

/// Every command and subcommand, each container followed by its
/// subcommands: a command's number (for per-command statistics) is its
/// place here.
pub fn flat() -> &'static [&'static CommandSpec] {
    static FLAT: std::sync::OnceLock<Vec<&'static CommandSpec>> = std::sync::OnceLock::new();
    FLAT.get_or_init(|| COMMANDS.iter().flat_map(|c| std::iter::once(c).chain(c.subcommands)).collect())
}

/// Where each top-level command sits in [`flat`].
fn offsets() -> &'static [usize] {
    static OFFSETS: std::sync::OnceLock<Vec<usize>> = std::sync::OnceLock::new();
    OFFSETS.get_or_init(|| {
        let mut at = 0;
        COMMANDS
            .iter()
            .map(|c| {
                let here = at;
                at += 1 + c.subcommands.len();
                here
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::spec::Flags;

    /// Every command and subcommand in the table.
    fn every_spec() -> Vec<&'static CommandSpec> {
        flat().to_vec()
    }

    #[test]
    fn a_command_s_number_is_its_place_in_the_flat_list() {
        for (i, spec) in flat().iter().enumerate() {
            // A container alone is an arity error unless it runs alone (COMMAND).
            if !spec.subcommands.is_empty() && !spec.arity_ok(1) {
                continue;
            }
            let mut argv = vec![Bytes::from_static(spec.name.split('|').next().unwrap().as_bytes())];
            if let Some(sub) = spec.name.split('|').nth(1) {
                argv.push(Bytes::from_static(sub.as_bytes()));
            }
            // Fill the arity with dummies.
            while !spec.arity_ok(argv.len()) {
                argv.push(Bytes::from_static(b"x"));
            }
            let (got, id) = resolve_id(&argv).unwrap_or_else(|_| panic!("{}", spec.name));
            assert_eq!((got.name, id), (spec.name, i));
        }
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
            ("token.import", -4),
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
            assert!(c.flags.has(Flags::MODULE));
            let read_only = name == "token.info" || name == "token.stats";
            assert_eq!(c.flags.names().next(), Some(if read_only { "readonly" } else { "write" }), "{name}");
            assert_eq!(ks.flags[0], if read_only { "RO" } else { "RW" }, "{name}");
            assert_eq!(c.acl_categories[0], if read_only { "@read" } else { "@write" }, "{name}");
            assert_eq!(c.flags.has(Flags::FAST), c.acl_categories.contains(&"@fast"), "{name}");
            assert_eq!(!c.flags.has(Flags::FAST), c.acl_categories.contains(&"@slow"), "{name}");
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
            for list in [c.acl_categories, c.tips] {
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
        for sub in ["id", "setname", "getname", "list", "info", "setinfo", "kill", "no-evict", "help"] {
            assert!(lookup_sub("client", sub).is_some(), "client {sub}");
        }
        for sub in ["count", "info", "docs", "list", "help", "getkeys", "getkeysandflags"] {
            assert!(lookup_sub("command", sub).is_some(), "command {sub}");
        }
        for sub in ["get", "set", "resetstat", "help"] {
            assert!(lookup_sub("config", sub).is_some(), "config {sub}");
        }
        for name in ["multi", "exec", "discard", "watch", "unwatch"] {
            assert!(lookup(name).is_some(), "{name}");
        }
        assert!(lookup_sub("config", "rewrite").is_none());
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
    fn requests_find_every_command_in_any_case() {
        let name = |argv: &[&str]| {
            let argv: Vec<Bytes> = argv.iter().map(|a| Bytes::copy_from_slice(a.as_bytes())).collect();
            match resolve_id(&argv) {
                Ok((spec, id)) => {
                    assert!(std::ptr::eq(flat()[id], spec), "{argv:?}: id {id} is another command");
                    Ok(spec.name)
                }
                Err((_, r)) => Err(crate::testing::encode(r, crate::reply::Protocol::Resp2)),
            }
        };
        for c in COMMANDS {
            let mixed: String = c
                .name
                .chars()
                .enumerate()
                .map(|(i, ch)| if i % 2 == 0 { ch.to_ascii_uppercase() } else { ch })
                .collect();
            for n in [c.name.to_string(), c.name.to_ascii_uppercase(), mixed] {
                let mut argv = vec![n.as_str()];
                // Enough arguments for any arity; a container gets its first subcommand.
                let sub = c.subcommands.first().map(|s| s.name.rsplit('|').next().unwrap_or_default());
                argv.extend(sub);
                let want = c.subcommands.first().unwrap_or(c);
                while !want.arity_ok(argv.len()) {
                    argv.push("x");
                }
                assert_eq!(name(&argv), Ok(want.name), "{argv:?}");
            }
        }
        assert_eq!(name(&["PiNg"]), Ok("ping"));
        assert!(name(&["PINGS"]).is_err());
        assert!(name(&["PIN"]).is_err());
        assert!(name(&[""]).is_err());
        assert!(name(&["token.gen.x", "p"]).is_err());
    }
}
