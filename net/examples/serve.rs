//! Runs a tickdb server until killed: `serve ADDR DATA_DIR [--echo]`. It prints the
//! address it listens on (port 0 picks a free one) as its first line. `--echo` serves
//! the WebSocket echo endpoint that `net/conformance.sh` runs the Autobahn suite on.
//! (The `tickdb` CLI's `start` is the command for users.)

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(addr), Some(dir)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: serve ADDR DATA_DIR [--echo]");
        std::process::exit(2);
    };
    let config = tickdb_net::ServerConfig {
        echo_endpoint: args.iter().any(|a| a == "--echo"),
        // Autobahn's biggest cases send 16 MiB messages.
        message_bytes_max: 64 << 20,
        send_buffer_bytes_max: 128 << 20,
        messages_per_second_max: 1_000_000,
        messages_burst_max: 1_000_000,
        ..tickdb_net::ServerConfig::default()
    };
    let addr = addr.parse().unwrap_or_else(|e| panic!("address `{addr}`: {e}"));
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{dir}: {e}"));
    let data = tickdb_engine::store::DataDir::new(dir);
    let server = tickdb_net::start(config, data, addr).unwrap_or_else(|e| panic!("{e}"));
    println!("{}", server.addr());
    server.wait();
}
