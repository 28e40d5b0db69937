//! TEMPORARY stub until the command table lands.
use crate::parse::Parse;
use crate::reply::Reply;
pub struct CommandSpec {
    pub name: &'static str,
    pub arity: i32,
}
static ALL: &[CommandSpec] = &[
    CommandSpec { name: "token.gen", arity: -2 },
    CommandSpec { name: "token.acquire", arity: -2 },
    CommandSpec { name: "token.keepalive", arity: 3 },
    CommandSpec { name: "token.unblock", arity: 3 },
    CommandSpec { name: "token.del", arity: 3 },
    CommandSpec { name: "token.delexpired", arity: 2 },
    CommandSpec { name: "token.info", arity: 3 },
    CommandSpec { name: "token.stats", arity: 2 },
    CommandSpec { name: "ping", arity: -1 },
    CommandSpec { name: "echo", arity: 2 },
    CommandSpec { name: "hello", arity: -1 },
    CommandSpec { name: "auth", arity: -2 },
    CommandSpec { name: "select", arity: 2 },
    CommandSpec { name: "quit", arity: -1 },
    CommandSpec { name: "reset", arity: 1 },
    CommandSpec { name: "client", arity: -2 },
    CommandSpec { name: "command", arity: -1 },
    CommandSpec { name: "info", arity: -1 },
    CommandSpec { name: "dbsize", arity: 1 },
    CommandSpec { name: "time", arity: 1 },
    CommandSpec { name: "config", arity: -2 },
    CommandSpec { name: "subscribe", arity: -2 },
    CommandSpec { name: "psubscribe", arity: -2 },
    CommandSpec { name: "unsubscribe", arity: -1 },
    CommandSpec { name: "punsubscribe", arity: -1 },
    CommandSpec { name: "publish", arity: 3 },
];
pub fn lookup(name: &str) -> Option<&'static CommandSpec> {
    ALL.iter().find(|c| c.name == name)
}
pub fn lookup_sub(_c: &str, _s: &str) -> Option<&'static CommandSpec> {
    None
}
pub fn apply(_p: &mut Parse) -> Reply {
    Reply::Array(vec![])
}
