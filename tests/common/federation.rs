//! Two federating servers for the s2s tests: `a.test` on 127.0.0.2 and `b.test` on
//! 127.0.0.3 (loopback aliases, no DNS), each with its own self-signed certificate and a
//! static route (`[s2s.routes]`) to the other's ephemeral federation port.

use super::*;

pub const A: &str = "a.test";
pub const B: &str = "b.test";

/// `[s2s]` on an ephemeral port of `ip`, plus `extra` (more `[s2s]` keys).
fn s2s_table(ip: &str, extra: &str) -> String {
    format!("[s2s]\nenabled = true\nlisten = [\"{ip}:0\"]\nqueue_timeout_secs = 5\n{extra}\n")
}

/// Starts both servers with `extra_a`/`extra_b` appended to their configs (tables; their
/// `[s2s]` keys go in `s2s_a`/`s2s_b`), then routes each to the other. A learns B's port
/// through a reload (SIGHUP), as an admin adding a route would.
pub fn pair(s2s_a: &str, s2s_b: &str) -> (TestServer, TestServer) {
    let a = TestServer::start_domain(A, "127.0.0.2", &s2s_table("127.0.0.2", s2s_a));
    let a_port = a.s2s.expect("a listens for s2s");
    let b = TestServer::start_domain(
        B,
        "127.0.0.3",
        &format!(
            "{}[s2s.routes]\n\"{A}\" = \"{a_port}\"\n",
            s2s_table("127.0.0.3", s2s_b)
        ),
    );
    route(&a, B, b.s2s.expect("b listens for s2s"));
    (a, b)
}

/// Adds `[s2s.routes] domain = addr` to `server`'s config and reloads it.
pub fn route(server: &TestServer, domain: &str, addr: SocketAddr) {
    let mut text = std::fs::read_to_string(&server.config).unwrap();
    text.push_str(&format!("\n[s2s.routes]\n\"{domain}\" = \"{addr}\"\n"));
    std::fs::write(&server.config, text).unwrap();
    Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .unwrap();
    server.wait_for_log("s2s.routes");
}
