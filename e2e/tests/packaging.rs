//! `scripts/package` against a real registry (Debian's docker-registry on loopback): both image
//! variants are pushed, pulled back with skopeo, carry the media types Istio's image fetcher and
//! Envoy Gateway look for, hold the built module byte for byte, and have the digest the script
//! printed for `sha256`.

use keygate_e2e::{repo_root, wasm_path, Value};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Registry {
    child: Child,
    addr: String,
    dir: PathBuf,
}

impl Registry {
    fn start() -> Registry {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let addr = format!("127.0.0.1:{port}");
        let dir = std::env::temp_dir().join(format!("keygate-registry-{port}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
            dir.join("data").display()
        );
        std::fs::write(dir.join("config.yml"), config).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.join("config.yml"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry (Debian package docker-registry; scripts/setup installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "docker-registry did not listen on {addr}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Registry { child, addr, dir }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().expect("command runs");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// `scripts/package` output: the digest it printed after `sha256:`.
fn package(variant: &str, reference: &str) -> String {
    let out = run(Command::new(repo_root().join("scripts/package")).args([
        "--variant",
        variant,
        &format!("oci://{reference}"),
    ]));
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains(&format!("image:  oci://{reference}")),
        "{text}"
    );
    text.lines()
        .find_map(|l| l.strip_prefix("sha256: "))
        .unwrap_or_else(|| panic!("no sha256 line in {text}"))
        .to_owned()
}

fn sha256_hex(path: &Path) -> String {
    let out = run(Command::new("sha256sum").arg(path));
    String::from_utf8(out).unwrap()[..64].to_owned()
}

/// Pulls `reference` into an OCI layout with skopeo; returns the layout dir and its manifest.
fn pull(reference: &str, into: &Path) -> Value {
    let _ = std::fs::remove_dir_all(into);
    run(Command::new("skopeo").args([
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        &format!("docker://{reference}"),
        &format!("oci:{}:pulled", into.display()),
    ]));
    let index: Value =
        serde_json::from_slice(&std::fs::read(into.join("index.json")).unwrap()).unwrap();
    let digest = index["manifests"][0]["digest"].as_str().unwrap().to_owned();
    serde_json::from_slice(&std::fs::read(blob(into, &digest)).unwrap()).unwrap()
}

fn blob(layout: &Path, digest: &str) -> PathBuf {
    layout
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
}

#[test]
fn both_image_variants_round_trip_through_a_registry() {
    let registry = Registry::start();
    let module = std::fs::read(wasm_path()).expect("scripts/build ran");
    let work = registry.dir.join("work");

    // compat: one tar+gzip layer holding plugin.wasm.
    let compat = format!("{}/keygate/keygate:compat", registry.addr);
    let digest = package("compat", &compat);
    let raw = run(Command::new("skopeo").args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{compat}"),
    ]));
    std::fs::create_dir_all(&work).unwrap();
    std::fs::write(work.join("manifest.json"), &raw).unwrap();
    assert_eq!(
        sha256_hex(&work.join("manifest.json")),
        digest,
        "the printed sha256 is the manifest digest the registry serves"
    );
    let layout = work.join("compat");
    let manifest = pull(&compat, &layout);
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(
        manifest["annotations"]["module.wasm.image/variant"],
        "compat"
    );
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1, "{manifest}");
    assert_eq!(
        layers[0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    let unpacked = work.join("compat-unpacked");
    std::fs::create_dir_all(&unpacked).unwrap();
    let layer = blob(&layout, layers[0]["digest"].as_str().unwrap());
    run(Command::new("tar")
        .arg("-xzf")
        .arg(&layer)
        .arg("-C")
        .arg(&unpacked));
    let listing = String::from_utf8(run(Command::new("tar").arg("-tzf").arg(&layer))).unwrap();
    assert_eq!(
        listing.trim(),
        "plugin.wasm",
        "the layer holds plugin.wasm alone"
    );
    assert!(
        std::fs::read(unpacked.join("plugin.wasm")).unwrap() == module,
        "plugin.wasm differs from the built module"
    );

    // oci: the wasm artifact variant, the raw module as a content layer beside its config.
    let oci = format!("{}/keygate/keygate:oci", registry.addr);
    let oci_digest = package("oci", &oci);
    assert_ne!(oci_digest, digest);
    let layout = work.join("oci");
    let manifest = pull(&oci, &layout);
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.module.wasm.config.v1+json"
    );
    let types: Vec<&str> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["mediaType"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "application/vnd.module.wasm.config.v1+json",
            "application/vnd.module.wasm.content.layer.v1+wasm"
        ]
    );
    let content = blob(&layout, manifest["layers"][1]["digest"].as_str().unwrap());
    assert!(
        std::fs::read(content).unwrap() == module,
        "the content layer is not the module"
    );

    // Reproducible: the same module, the same digest.
    assert_eq!(package("compat", &compat), digest);
}
