//! `CLIENT ID | SETNAME | GETNAME | LIST | INFO | SETINFO | KILL | HELP`, one
//! handler per subcommand (the table resolves the subcommand).

use super::{Call, ClientMeta, Outcome};
use crate::parse::{Parse, ParseError};
use crate::reply::Reply;
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

/// One `CLIENT LIST` line, with Redis's fields. `omem` is a subscriber's
/// queued messages (what `client-output-buffer-limit` limits); the other
/// memory fields are not tracked per client and read 0.
fn describe(m: &ClientMeta, omem: usize) -> String {
    let n = m.name.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let age = m.created.elapsed().as_secs();
    let idle = m.created.elapsed().as_millis().saturating_sub(m.last_active_ms.load(Ordering::Relaxed) as u128) / 1000;
    let flags = match (n.sub + n.psub > 0, n.multi.is_some()) {
        (true, _) => "P",
        (false, true) => "x",
        (false, false) => "N",
    };
    let mut s = String::new();
    let _ = write!(
        s,
        "id={} addr={} laddr={} fd=-1 name={} age={} idle={} flags={} db=0 sub={} psub={} ssub=0 multi={} \
         qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem={} tot-mem={} events=r cmd={} \
         user=default redir=-1 resp={} lib-name={} lib-ver={}",
        m.id,
        m.addr,
        m.laddr,
        n.name,
        age,
        idle,
        flags,
        n.sub,
        n.psub,
        n.multi.map_or(-1, |q| q as i64),
        omem,
        omem,
        n.last_cmd,
        n.resp,
        n.lib_name,
        n.lib_ver
    );
    s
}

/// `CLIENT ID`.
pub fn id(_: &mut Parse, c: &mut Call) -> Result<Outcome, ParseError> {
    Ok(Reply::Integer(c.session.id as i64).into())
}

/// `CLIENT SETNAME name`.
pub fn setname(p: &mut Parse, c: &mut Call) -> Result<Outcome, ParseError> {
    let name = p.next_bytes()?;
    validate_name(&name)?;
    c.session.update_meta(|m| m.name = String::from_utf8_lossy(&name).into_owned());
    Ok(Reply::ok().into())
}

/// `CLIENT GETNAME`.
pub fn getname(_: &mut Parse, c: &mut Call) -> Result<Outcome, ParseError> {
    let name = c.session.meta.name.lock().unwrap_or_else(|e| e.into_inner()).name.clone();
    Ok(if name.is_empty() { Reply::Null } else { Reply::bulk(name) }.into())
}

/// `CLIENT SETINFO LIB-NAME|LIB-VER value`.
pub fn setinfo(p: &mut Parse, c: &mut Call) -> Result<Outcome, ParseError> {
    let attr = p.next_keyword()?;
    let val = p.next_bytes()?;
    validate_name(&val)?;
    let val = String::from_utf8_lossy(&val).into_owned();
    match attr.as_str() {
        "LIB-NAME" => c.session.update_meta(|m| m.lib_name = val),
        "LIB-VER" => c.session.update_meta(|m| m.lib_ver = val),
        _ => return Ok(Reply::error(format!("ERR Unrecognized option '{attr}'")).into()),
    }
    Ok(Reply::ok().into())
}

/// `CLIENT INFO`.
pub fn info(_: &mut Parse, c: &mut Call) -> Result<Outcome, ParseError> {
    Ok(Reply::Verbatim(format!("{}\n", describe(&c.session.meta, c.ctx.pubsub.queued_bytes(c.session.id))).into())
        .into())
}

/// `CLIENT LIST [TYPE normal|pubsub|master|replica] [ID id ...]`.
pub fn list(p: &mut Parse, c: &mut Call) -> Result<Outcome, ParseError> {
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
    let mut out = String::new();
    for m in c.ctx.clients.snapshot() {
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
                _ => return Ok(Reply::error(format!("ERR Unknown client type '{k}'")).into()),
            };
            if !want {
                continue;
            }
        }
        out.push_str(&describe(&m, c.ctx.pubsub.queued_bytes(m.id)));
        out.push('\n');
    }
    Ok(Reply::Verbatim(out.into()).into())
}

/// `CLIENT KILL`: not supported (connections are not killed from outside).
pub fn kill(_: &mut Parse, _: &mut Call) -> Result<Outcome, ParseError> {
    Ok(Reply::error("ERR CLIENT KILL is not supported by tokend").into())
}

/// `CLIENT NO-EVICT ON|OFF`: clients are never evicted by tokend; accepted
/// as Redis accepts it.
pub fn no_evict(p: &mut Parse, _: &mut Call) -> Result<Outcome, ParseError> {
    match p.next_keyword()?.as_str() {
        "ON" | "OFF" => Ok(Reply::ok().into()),
        _ => Err(ParseError::Syntax),
    }
}

/// `CLIENT HELP`.
pub fn help(_: &mut Parse, _: &mut Call) -> Result<Outcome, ParseError> {
    Ok(Reply::help(&[
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
    ])
    .into())
}
