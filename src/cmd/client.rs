//! `CLIENT ID | SETNAME | GETNAME | LIST | INFO | SETINFO | KILL | HELP`.

use super::command;
use crate::connection::Session;
use crate::parse::{Parse, ParseError};
use crate::reply::Reply;
use crate::server::{ClientMeta, Shared};
use std::fmt::Write;
use std::sync::atomic::Ordering;

/// Client names may not contain spaces, newlines or special characters.
pub fn validate_name(name: &[u8]) -> Result<(), ParseError> {
    if name.iter().any(|&c| !(b'!'..=b'~').contains(&c)) {
        return Err(ParseError::Other(
            "ERR Client names cannot contain spaces, newlines or special characters.".into(),
        ));
    }
    Ok(())
}

/// One `CLIENT LIST` line, with Redis's fields (memory fields are not
/// tracked per client and read 0).
fn describe(m: &ClientMeta) -> String {
    let n = m.name.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let age = m.created.elapsed().as_secs();
    let idle = m.created.elapsed().as_millis().saturating_sub(m.last_active_ms.load(Ordering::Relaxed) as u128) / 1000;
    let flags = if n.sub + n.psub > 0 { "P" } else { "N" };
    let mut s = String::new();
    let _ = write!(
        s,
        "id={} addr={} laddr={} fd=-1 name={} age={} idle={} flags={} db=0 sub={} psub={} ssub=0 multi=-1 \
         qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem=0 tot-mem=0 events=r cmd={} \
         user=default redir=-1 resp={} lib-name={} lib-ver={}",
        m.id, m.addr, m.laddr, n.name, age, idle, flags, n.sub, n.psub, n.last_cmd, n.resp, n.lib_name, n.lib_ver
    );
    s
}

/// Runs a CLIENT subcommand.
pub fn apply(p: &mut Parse, s: &mut Session, shared: &Shared) -> Result<Reply, ParseError> {
    let sub = p.next_string()?.to_ascii_lowercase();
    if let Some(spec) = command::lookup_sub("client", &sub)
        && !super::arity_ok(spec.arity, p.remaining() + 2)
    {
        return Ok(Reply::error(format!("ERR wrong number of arguments for 'client|{sub}' command")));
    }
    Ok(match sub.as_str() {
        "id" => Reply::Integer(s.id as i64),
        "setname" => {
            let name = p.next_bytes()?;
            validate_name(&name)?;
            s.update_meta(|m| m.name = String::from_utf8_lossy(&name).into_owned());
            Reply::ok()
        }
        "getname" => {
            let name = s.meta.name.lock().unwrap_or_else(|e| e.into_inner()).name.clone();
            if name.is_empty() { Reply::Null } else { Reply::bulk(name) }
        }
        "setinfo" => {
            let attr = p.next_keyword()?;
            let val = p.next_bytes()?;
            validate_name(&val)?;
            let val = String::from_utf8_lossy(&val).into_owned();
            match attr.as_str() {
                "LIB-NAME" => s.update_meta(|m| m.lib_name = val),
                "LIB-VER" => s.update_meta(|m| m.lib_ver = val),
                _ => return Ok(Reply::error(format!("ERR Unrecognized option '{attr}'"))),
            }
            Reply::ok()
        }
        "info" => Reply::Verbatim(format!("{}\n", describe(&s.meta)).into()),
        "list" => {
            let mut ids: Option<Vec<u64>> = None;
            let mut kind: Option<String> = None;
            while let Ok(opt) = p.next_keyword() {
                match opt.as_str() {
                    "TYPE" => kind = Some(p.next_string()?.to_ascii_lowercase()),
                    "ID" => {
                        let mut v = Vec::new();
                        while let Ok(id) = p.next_i64() {
                            v.push(id as u64);
                        }
                        ids = Some(v);
                    }
                    _ => return Err(ParseError::Syntax),
                }
            }
            let mut metas: Vec<_> = shared.clients.iter().map(|e| e.value().clone()).collect();
            metas.sort_by_key(|m| m.id);
            let mut out = String::new();
            for m in metas {
                if ids.as_ref().is_some_and(|ids| !ids.contains(&m.id)) {
                    continue;
                }
                if let Some(k) = &kind {
                    let n = m.name.lock().unwrap_or_else(|e| e.into_inner());
                    let is_pubsub = n.sub + n.psub > 0;
                    let want = match k.as_str() {
                        "normal" => !is_pubsub,
                        "pubsub" => is_pubsub,
                        "master" | "replica" | "slave" => false,
                        _ => return Ok(Reply::error(format!("ERR Unknown client type '{k}'"))),
                    };
                    if !want {
                        continue;
                    }
                }
                out.push_str(&describe(&m));
                out.push('\n');
            }
            Reply::Verbatim(out.into())
        }
        "kill" => {
            // Only the `ID id` filter form is supported; kills are cooperative
            // through the registry, so report what would be matched.
            Reply::error("ERR CLIENT KILL is not supported by tokend")
        }
        "no-evict" | "no-touch" => Reply::ok(),
        "help" => Reply::Array(
            [
                "CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "GETNAME",
                "    Return the name of the current connection.",
                "ID",
                "    Return the ID of the current connection.",
                "INFO",
                "    Return information about the current client connection.",
                "LIST [TYPE <normal|pubsub>] [ID <id> [<id> ...]]",
                "    Return information about client connections.",
                "SETNAME <name>",
                "    Assign the name <name> to the current connection.",
                "SETINFO <LIB-NAME|LIB-VER> <value>",
                "    Set client meta attr.",
                "HELP",
                "    Print this help.",
            ]
            .into_iter()
            .map(Reply::status)
            .collect(),
        ),
        _ => Reply::error(format!("ERR unknown subcommand '{sub}'. Try CLIENT HELP.")),
    })
}
