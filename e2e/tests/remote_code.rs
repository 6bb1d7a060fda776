//! Envoy fetching the module over HTTP (`vm_config.code.remote`: `http_uri` + `sha256`) from a
//! loopback server: the right digest loads it and the webhook answers; a wrong one is refused,
//! and the plugin fails closed (nothing reaches the route's upstream).

use keygate_e2e::soap_reply::assert_ack;
use keygate_e2e::{testdata, wasm_path, Gateway, GatewayOptions};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Serves `body` for every GET on an ephemeral loopback port; counts the requests.
fn serve(body: Vec<u8>) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&hits);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(&stream);
            let mut line = String::new();
            // The request head, up to the empty line.
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            counter.fetch_add(1, Ordering::SeqCst);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/wasm\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let mut out = &stream;
            let _ = out
                .write_all(head.as_bytes())
                .and_then(|_| out.write_all(&body));
        }
    });
    (port, hits)
}

fn sha256_hex(bytes: &[u8]) -> String {
    // Tests run in parallel: one file per module.
    let path = std::env::temp_dir().join(format!(
        "keygate-module-{}-{}.wasm",
        std::process::id(),
        bytes.len()
    ));
    std::fs::write(&path, bytes).unwrap();
    let out = std::process::Command::new("sha256sum")
        .arg(&path)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    String::from_utf8(out.stdout).unwrap()[..64].to_owned()
}

#[test]
fn the_module_loads_over_http_with_its_sha256() {
    let module = std::fs::read(wasm_path()).expect("scripts/build ran");
    let (port, hits) = serve(module.clone());
    let options = GatewayOptions {
        remote_code: Some((port, sha256_hex(&module))),
        ..GatewayOptions::default()
    };
    let gw = Gateway::start(options);
    assert_ack(&gw.post_webhook(testdata("soap/valid/not_activated_one.xml")));
    assert!(
        hits.load(Ordering::SeqCst) >= 1,
        "Envoy did not fetch the module"
    );
    assert!(
        gw.envoy_log().contains("keygate 0.1.0 configured"),
        "{}",
        gw.log_tail(20)
    );
}

#[test]
fn a_module_whose_sha256_does_not_match_is_refused_and_fails_closed() {
    let module = std::fs::read(wasm_path()).expect("scripts/build ran");
    let (port, hits) = serve(module.clone());
    let mut tampered = module.clone();
    tampered.push(0);
    let options = GatewayOptions {
        remote_code: Some((port, sha256_hex(&tampered))),
        ..GatewayOptions::default()
    };
    let gw = Gateway::start(options);
    // Envoy retries the fetch, then gives up on the plugin.
    let deadline = Instant::now() + Duration::from_secs(15);
    while !gw.envoy_log().contains("Plugin keygate failed to load") {
        assert!(
            Instant::now() < deadline,
            "no load failure logged:\n{}",
            gw.log_tail(20)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(hits.load(Ordering::SeqCst) >= 1);
    let r = gw.post_webhook(testdata("soap/valid/not_activated_one.xml"));
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(!gw.envoy_log().contains("keygate 0.1.0 configured"));
    assert!(
        gw.upstream_received().is_empty(),
        "{:?}",
        gw.upstream_received()
    );
}
