//! `lodestar healthcheck`: asks a running service on this machine for `/healthz` or `/readyz`
//! over plain HTTP/1.1, so a container image needs no curl for its `HEALTHCHECK`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::cli::HealthcheckArgs;

/// The status code `GET path` answers at `addr` within `timeout`, or why there is none.
pub(crate) fn get_status(addr: SocketAddr, path: &str, timeout: Duration) -> anyhow::Result<u16> {
    let mut s = TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("connecting to {addr}"))?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: lodestar-healthcheck\r\nConnection: close\r\n\r\n"
    )
    .with_context(|| format!("sending GET {path} to {addr}"))?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head)
        .with_context(|| format!("reading the answer to GET {path} from {addr}"))?;
    let status = std::str::from_utf8(&head)
        .ok()
        .filter(|h| h.starts_with("HTTP/1."))
        .and_then(|h| h[9..12].parse().ok());
    match status {
        Some(code) => Ok(code),
        None => bail!("{addr} did not answer GET {path} with HTTP/1.x"),
    }
}

/// The address to reach a server listening on `listen`: a wildcard address (`0.0.0.0`, `[::]`)
/// becomes the loopback address of its family.
pub(crate) fn local_address(listen: &str) -> anyhow::Result<SocketAddr> {
    let mut addr = listen
        .to_socket_addrs()
        .with_context(|| format!("{listen:?} is not an address (host:port)"))?
        .next()
        .with_context(|| format!("{listen:?} resolves to no address"))?;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    Ok(addr)
}

/// `lodestar healthcheck`: exit status 0 when the service answers 2xx.
pub(crate) fn run(args: &HealthcheckArgs) -> anyhow::Result<()> {
    if !args.path.starts_with('/') {
        bail!("--path {:?} must start with /", args.path);
    }
    let addr = local_address(&args.listen)?;
    let timeout = Duration::from_millis(args.timeout_ms.max(1));
    let code = get_status(addr, &args.path, timeout)?;
    if (200..300).contains(&code) {
        println!("{addr}{}: {code}", args.path);
        Ok(())
    } else {
        bail!("{addr}{} answered {code}", args.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_listen_addresses_are_reached_on_loopback() {
        assert_eq!(
            local_address("0.0.0.0:8080").unwrap().to_string(),
            "127.0.0.1:8080"
        );
        assert_eq!(local_address("[::]:9").unwrap().to_string(), "[::1]:9");
        assert_eq!(
            local_address("10.1.2.3:80").unwrap().to_string(),
            "10.1.2.3:80"
        );
        assert!(local_address("no-port").is_err());
    }

    #[test]
    fn a_status_line_is_read_and_anything_else_is_an_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            for answer in [
                "HTTP/1.1 503 Service Unavailable\r\n\r\n",
                "SSH-2.0-OpenSSH\r\n",
            ] {
                let (mut s, _) = listener.accept().unwrap();
                let mut buf = [0u8; 256];
                let _ = s.read(&mut buf).unwrap();
                s.write_all(answer.as_bytes()).unwrap();
            }
        });
        let t = Duration::from_secs(5);
        assert_eq!(get_status(addr, "/readyz", t).unwrap(), 503);
        assert!(get_status(addr, "/readyz", t).is_err());
        server.join().unwrap();
    }
}
