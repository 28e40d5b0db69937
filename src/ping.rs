//! `tokend --ping`: a liveness check that needs no redis-cli (container
//! HEALTHCHECKs). Connects to the configured address, authenticates if a
//! password is set, and expects `+PONG`; a server still loading answers
//! `-LOADING` to PING, which counts as not ready.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Where `--ping` connects for a server bound to `bind`: the wildcard
/// addresses mean "this machine", reached through loopback.
pub fn target(bind: &str, port: u16) -> String {
    let host = match bind {
        "0.0.0.0" | "" => "127.0.0.1",
        "::" | "[::]" => "::1",
        h => h,
    };
    if host.contains(':') && !host.starts_with('[') { format!("[{host}]:{port}") } else { format!("{host}:{port}") }
}

/// PINGs the server at `addr` (with `AUTH password` first when given).
pub fn check(addr: &str, password: Option<&str>, timeout: Duration) -> Result<(), String> {
    let sock: SocketAddr = addr
        .to_socket_addrs()
        .map_err(|e| format!("{addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("{addr}: no address"))?;
    let stream = TcpStream::connect_timeout(&sock, timeout).map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    stream.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    stream.set_write_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    let mut w = stream.try_clone().map_err(|e| e.to_string())?;
    let mut r = BufReader::new(stream);
    let mut call = |args: &[&[u8]]| -> Result<String, String> {
        let mut req = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            req.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            req.extend_from_slice(a);
            req.extend_from_slice(b"\r\n");
        }
        w.write_all(&req).map_err(|e| format!("{addr}: {e}"))?;
        let mut line = String::new();
        r.read_line(&mut line).map_err(|e| format!("{addr}: {e}"))?;
        Ok(line.trim_end().to_string())
    };
    if let Some(p) = password {
        let reply = call(&[b"AUTH", p.as_bytes()])?;
        if reply != "+OK" {
            return Err(format!("AUTH: {reply}"));
        }
    }
    match call(&[b"PING"])?.as_str() {
        "+PONG" => Ok(()),
        other => Err(format!("PING: {}", if other.is_empty() { "no reply" } else { other })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_are_reached_through_loopback() {
        assert_eq!(target("0.0.0.0", 6380), "127.0.0.1:6380");
        assert_eq!(target("::", 1), "[::1]:1");
        assert_eq!(target("10.1.2.3", 7), "10.1.2.3:7");
        assert_eq!(target("fe80::1", 7), "[fe80::1]:7");
    }
}
