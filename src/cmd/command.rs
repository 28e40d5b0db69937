//! The `COMMAND` command: renders the command table ([`super::table`]).
//!
//! Clients learn what a server can do from `COMMAND`: `redis-cli` 7.0 builds
//! its argument hints from `COMMAND DOCS`, and cluster-aware clients find the
//! key of a command from `COMMAND INFO` (first/last/step and key specs). The
//! replies mirror Redis 7.0's reply types exactly: strict clients assert on
//! them (redis-cli aborts if an argument's `flags` are bulk strings instead
//! of status replies).
//!
//! Two known departures from Redis's reply types, both in RESP3 only, forced
//! by `Reply::Set` (it becomes a `redis-protocol` `FrameSet`, which hashes its
//! members and panics on a map or an array): non-empty key-spec lists and
//! command history are sent as arrays (`*`) where Redis sends sets (`~`).
//! Empty ones are still sets. RESP2 is unaffected (both are arrays there).

use super::spec::{Arg, ArgType, CommandSpec, KeySpec};
use super::table::{all, lookup_bytes, lookup_full};
use super::{Call, Outcome};
use crate::parse::{Parse, ParseError};
use crate::reply::Reply;
use bytes::Bytes;

/// `COMMAND` with no subcommand: `COMMAND INFO` of every command.
pub fn all_info(_: &mut Parse, _: &mut Call) -> Result<Outcome, ParseError> {
    Ok(Reply::Array(all().iter().map(info_reply).collect()).into())
}

/// `COMMAND COUNT`.
pub fn count(_: &mut Parse, _: &mut Call) -> Result<Outcome, ParseError> {
    Ok(Reply::Integer(i64::try_from(all().len()).unwrap_or(i64::MAX)).into())
}

/// `COMMAND INFO [name ...]`: nil for an unknown name.
pub fn info(p: &mut Parse, c: &mut Call) -> Result<Outcome, ParseError> {
    let rest = drain(p);
    if rest.is_empty() {
        return all_info(p, c);
    }
    Ok(Reply::Array(rest.iter().map(|n| lookup_full(n).map_or(Reply::Null, info_reply)).collect()).into())
}

/// `COMMAND DOCS [name ...]`: unknown names are left out.
pub fn docs(p: &mut Parse, _: &mut Call) -> Result<Outcome, ParseError> {
    let rest = drain(p);
    let specs: Vec<&CommandSpec> =
        if rest.is_empty() { all().iter().collect() } else { rest.iter().filter_map(|n| lookup_full(n)).collect() };
    Ok(Reply::Map(specs.into_iter().map(|c| (Reply::bulk_static(c.name), docs_reply(c))).collect()).into())
}

/// `COMMAND LIST [FILTERBY MODULE m | ACLCAT c | PATTERN p]`.
pub fn list(p: &mut Parse, _: &mut Call) -> Result<Outcome, ParseError> {
    Ok(list_reply(&drain(p)).into())
}

/// `COMMAND GETKEYS <full command>`.
pub fn getkeys(p: &mut Parse, _: &mut Call) -> Result<Outcome, ParseError> {
    Ok(getkeys_reply(&drain(p), false).into())
}

/// `COMMAND GETKEYSANDFLAGS <full command>`.
pub fn getkeysandflags(p: &mut Parse, _: &mut Call) -> Result<Outcome, ParseError> {
    Ok(getkeys_reply(&drain(p), true).into())
}

/// `COMMAND HELP`.
pub fn help(_: &mut Parse, _: &mut Call) -> Result<Outcome, ParseError> {
    Ok(help_reply().into())
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
        Reply::Set(c.flags.names().map(Reply::status).collect()),
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
fn list_reply(rest: &[Bytes]) -> Reply {
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
    for c in all() {
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
fn getkeys_reply(argv: &[Bytes], with_flags: bool) -> Reply {
    let invalid = || Reply::error("ERR Invalid command specified");
    let Some(base) = argv.first().and_then(|n| lookup_bytes(n)) else {
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
    // With flags, each key carries the flags of the key spec that found it
    // (tokend's commands have one key spec each).
    let flags =
        || Reply::Set(cmd.key_specs.first().map_or(&[][..], |ks| ks.flags).iter().map(|f| Reply::status(f)).collect());
    let keys: Vec<Reply> = cmd
        .keys(argv)
        .into_iter()
        .map(|k| if with_flags { Reply::Array(vec![Reply::Bulk(k.clone()), flags()]) } else { Reply::Bulk(k.clone()) })
        .collect();
    if keys.is_empty() { Reply::error("ERR Invalid arguments specified for command") } else { Reply::Array(keys) }
}

/// `COMMAND HELP`: Redis 7.0's text, one status reply per line.
fn help_reply() -> Reply {
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
    use crate::cmd::table::arity_error;
    use crate::reply::Protocol;
    use crate::testing::{Node, decode, shape};

    /// Runs `COMMAND <args>` through the dispatcher, as a client would.
    fn run(args: &[&str]) -> Reply {
        let mut argv = vec!["COMMAND"];
        argv.extend_from_slice(args);
        crate::testing::run(&argv)
    }

    fn enc(r: Reply, p: Protocol) -> Vec<u8> {
        crate::testing::encode(r, p)
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
        assert_eq!(all().len(), 52, "28, five transaction, eleven key, four operator and four cluster commands");
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

    #[test]
    fn list_with_pattern_token_star_lists_the_nine_token_commands() {
        let Reply::Array(items) = run(&["LIST", "FILTERBY", "PATTERN", "token.*"]) else { panic!() };
        let names: Vec<Reply> =
            ["gen", "import", "acquire", "keepalive", "unblock", "del", "delexpired", "info", "stats"]
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
        let config = ["config|get", "config|set", "config|resetstat", "config|help"].map(Reply::bulk).to_vec();
        assert_eq!(run(&["LIST", "FILTERBY", "PATTERN", "config|*"]), Reply::Array(config));
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
            let mut argv = vec![Bytes::from_static(b"COMMAND")];
            argv.extend(args);
            let r = crate::testing::run_bytes(argv);
            for p in PROTOCOLS {
                decode(&enc(r.clone(), p));
            }
        }
        assert!(run(&["\u{ff}\u{fe}", "x"]).is_error());
    }
}
