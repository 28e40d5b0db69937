//! Connection commands: PING, ECHO, HELLO, AUTH, SELECT, QUIT, RESET. They
//! only touch the session, and must behave exactly as Redis's do because
//! client libraries send them on connect.

use super::{Call, Ctx, Outcome};
use crate::parse::{Parse, ParseError};
use crate::reply::{Protocol, Reply};

/// `PING [message]`. In RESP2 pub/sub mode Redis answers `["pong", msg]`.
pub fn ping(p: &mut Parse, c: &mut Call) -> Result<Outcome, ParseError> {
    let msg = p.next_bytes().ok();
    p.finish().map_err(|_| ParseError::Other("ERR wrong number of arguments for 'ping' command".into()))?;
    if c.session.proto == Protocol::Resp2 && c.session.subscriptions() > 0 {
        return Ok(Reply::Array(vec![
            Reply::bulk_static("pong"),
            msg.map_or_else(|| Reply::bulk_static(""), Reply::Bulk),
        ])
        .into());
    }
    Ok(msg.map_or_else(|| Reply::status("PONG"), Reply::Bulk).into())
}

/// `ECHO message`.
pub fn echo(p: &mut Parse, _: &mut Call) -> Result<Outcome, ParseError> {
    Ok(Reply::Bulk(p.next_bytes()?).into())
}

/// Compares secrets in time that does not depend on where they differ
/// (`subtle`; unequal lengths are unequal, whatever the bytes).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}

/// Checks a username/password pair against `--requirepass`.
fn check_password(ctx: &Ctx, user: &[u8], pass: &[u8]) -> Result<(), Reply> {
    let wrong = || Reply::error("WRONGPASS invalid username-password pair or user is disabled.");
    match &ctx.settings.requirepass {
        _ if user != b"default" => Err(wrong()),
        // The default user has no password: any password is accepted.
        None => Ok(()),
        Some(want) if constant_time_eq(want.as_bytes(), pass) => Ok(()),
        Some(_) => Err(wrong()),
    }
}

/// `AUTH [username] password`.
pub fn auth(p: &mut Parse, c: &mut Call) -> Result<Outcome, ParseError> {
    let first = p.next_bytes()?;
    let (user, pass) = match p.next_bytes() {
        Ok(pass) => (first, pass),
        Err(_) => {
            if c.ctx.settings.requirepass.is_none() {
                return Ok(Reply::error(
                    "ERR AUTH <password> called without any password configured for the default user. \
                     Are you sure your configuration is correct?",
                )
                .into());
            }
            (bytes::Bytes::from_static(b"default"), first)
        }
    };
    p.finish()?;
    Ok(match check_password(c.ctx, &user, &pass) {
        Ok(()) => {
            c.session.authenticated = true;
            Reply::ok()
        }
        Err(r) => r,
    }
    .into())
}

/// `HELLO [protover [AUTH username password] [SETNAME clientname]]`.
pub fn hello(p: &mut Parse, c: &mut Call) -> Result<Outcome, ParseError> {
    hello_reply(p, c).map(Outcome::from)
}

fn hello_reply(p: &mut Parse, c: &mut Call) -> Result<Reply, ParseError> {
    let (ctx, s) = (c.ctx, &mut *c.session);
    let mut proto = None;
    if let Ok(v) = p.next_bytes() {
        let v = crate::parse::parse_i64(&v)
            .ok_or_else(|| ParseError::Other("ERR Protocol version is not an integer or out of range".into()))?;
        proto = match v {
            2 => Some(Protocol::Resp2),
            3 => Some(Protocol::Resp3),
            _ => return Ok(Reply::error("NOPROTO unsupported protocol version")),
        };
    }
    let mut creds = None;
    let mut setname = None;
    loop {
        match p.next_keyword() {
            Ok(k) if k == "AUTH" => creds = Some((p.next_bytes()?, p.next_bytes()?)),
            Ok(k) if k == "SETNAME" => setname = Some(p.next_bytes()?),
            Ok(k) => return Err(ParseError::Other(format!("ERR Syntax error in HELLO option '{k}'"))),
            Err(_) => break,
        }
    }
    // Everything is checked before anything changes.
    if let Some((user, pass)) = &creds {
        if let Err(r) = check_password(ctx, user, pass) {
            return Ok(r);
        }
    } else if !s.authenticated {
        return Ok(Reply::error(
            "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH \
             <user> <pass> option can be used to authenticate the client and select the RESP protocol version at \
             the same time",
        ));
    }
    if let Some(name) = &setname {
        super::client::validate_name(name)?;
    }
    if creds.is_some() {
        s.authenticated = true;
    }
    if let Some(name) = setname {
        s.update_meta(|m| m.name = String::from_utf8_lossy(&name).into_owned());
    }
    if let Some(proto) = proto {
        s.proto = proto;
        if s.pubsub_rx.is_some() {
            c.ctx.pubsub.set_proto(s.id, proto);
        }
        s.update_meta(|m| m.resp = if proto == Protocol::Resp3 { 3 } else { 2 });
    }
    let kv = |k: &'static str, v: Reply| (Reply::bulk_static(k), v);
    Ok(Reply::Map(vec![
        kv("server", Reply::bulk_static("tokend")),
        kv("version", Reply::bulk_static(super::server_info::REDIS_COMPAT_VERSION)),
        kv("proto", Reply::Integer(if s.proto == Protocol::Resp3 { 3 } else { 2 })),
        kv("id", Reply::Integer(s.id as i64)),
        kv("mode", Reply::bulk_static("standalone")),
        kv("role", Reply::bulk_static("master")),
        kv("modules", Reply::Array(vec![])),
    ]))
}

/// `SELECT index`: there is one database, 0.
pub fn select(p: &mut Parse, _: &mut Call) -> Result<Outcome, ParseError> {
    let db = p.next_i64()?;
    Ok(if db == 0 { Reply::ok() } else { Reply::error("ERR DB index is out of range") }.into())
}

/// `QUIT`: OK, then the connection closes.
pub fn quit(_: &mut Parse, _: &mut Call) -> Result<Outcome, ParseError> {
    Ok(Outcome::Close(Reply::ok()))
}

/// `RESET`: back to a fresh connection's state.
pub fn reset(_: &mut Parse, c: &mut Call) -> Result<Outcome, ParseError> {
    let (ctx, s) = (c.ctx, &mut *c.session);
    if s.pubsub_rx.take().is_some() {
        ctx.pubsub.detach(s.id);
    }
    s.multi = None;
    s.unwatch_all(ctx);
    if s.monitor_rx.take().is_some() {
        ctx.monitors.detach(s.id);
    }
    s.channels.clear();
    s.patterns.clear();
    s.proto = Protocol::Resp2;
    s.authenticated = ctx.settings.requirepass.is_none();
    s.update_meta(|m| {
        m.name.clear();
        m.resp = 2;
        m.sub = 0;
        m.psub = 0;
        m.multi = None;
    });
    Ok(Reply::status("RESET").into())
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn secret_comparison() {
        assert!(constant_time_eq(b"s3cret", b"s3cret"));
        assert!(!constant_time_eq(b"s3cret", b"s3cre"));
        assert!(!constant_time_eq(b"s3cret", b"s3creT"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
        // The right secret followed by 65,536 NULs (a length difference
        // whose low 16 bits are zero) is a different secret.
        let mut long = b"s3cret".to_vec();
        long.resize(6 + 65_536, 0);
        assert!(!constant_time_eq(b"s3cret", &long));
        assert!(!constant_time_eq(&long, b"s3cret"));
    }
}
