#!/usr/bin/env python3
"""Writes an OCI image layout holding one wasm module, in a variant Istio's image fetcher and
Envoy Gateway load (facts: ../shared reference "lifecycle-fleet-packaging.md", section 4):

  compat  one tar+gzip layer holding plugin.wasm (media type application/vnd.oci.image.layer.v1.tar+gzip,
          manifest annotation module.wasm.image/variant=compat)
  oci     two layers: application/vnd.module.wasm.config.v1+json (the runtime config) and
          application/vnd.module.wasm.content.layer.v1+wasm (the raw module)

Usage: oci_layout.py VARIANT MODULE.wasm LAYOUT_DIR TAG
The layout is reproducible: the same module gives the same manifest digest (fixed tar and gzip
times, owners and modes), which is what goes into WasmPlugin/EnvoyExtensionPolicy `sha256`.
Prints the manifest digest (sha256:...)."""

import gzip
import hashlib
import io
import json
import os
import shutil
import sys
import tarfile

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
TAR_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
WASM_CONFIG = "application/vnd.module.wasm.config.v1+json"
WASM_LAYER = "application/vnd.module.wasm.content.layer.v1+wasm"


def put_blob(layout, data):
    digest = hashlib.sha256(data).hexdigest()
    path = os.path.join(layout, "blobs", "sha256", digest)
    with open(path, "wb") as f:
        f.write(data)
    return {"digest": "sha256:" + digest, "size": len(data)}


def canonical(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def plugin_tar(module):
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("plugin.wasm")
        info.size, info.mode, info.mtime = len(module), 0o644, 0
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        tar.addfile(info, io.BytesIO(module))
    return raw.getvalue()


def manifest_for(variant, layout, module):
    if variant == "compat":
        tar = plugin_tar(module)
        layer = put_blob(layout, gzip.compress(tar, mtime=0))
        config = {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(tar).hexdigest()]},
        }
        return {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, **put_blob(layout, canonical(config))},
            "layers": [{"mediaType": TAR_GZIP, **layer}],
            "annotations": {"module.wasm.image/variant": "compat"},
        }
    if variant == "oci":
        runtime = canonical({"type": "envoy_proxy", "abiVersions": ["v0.2.1"],
                             "config": {"rootIds": ["keygate"]}})
        config = put_blob(layout, runtime)
        return {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": WASM_CONFIG, **config},
            "layers": [
                {"mediaType": WASM_CONFIG, **config,
                 "annotations": {"org.opencontainers.image.title": "runtime-config.json"}},
                {"mediaType": WASM_LAYER, **put_blob(layout, module),
                 "annotations": {"org.opencontainers.image.title": "plugin.wasm"}},
            ],
        }
    sys.exit(f"oci_layout.py: unknown variant {variant!r} (compat or oci)")


def main():
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    variant, module_path, layout, tag = sys.argv[1:]
    with open(module_path, "rb") as f:
        module = f.read()
    shutil.rmtree(layout, ignore_errors=True)
    os.makedirs(os.path.join(layout, "blobs", "sha256"))
    manifest = put_blob(layout, canonical(manifest_for(variant, layout, module)))
    with open(os.path.join(layout, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    index = {
        "schemaVersion": 2,
        "manifests": [{"mediaType": OCI_MANIFEST, **manifest,
                       "annotations": {"org.opencontainers.image.ref.name": tag}}],
    }
    with open(os.path.join(layout, "index.json"), "w") as f:
        json.dump(index, f)
    print(manifest["digest"])


if __name__ == "__main__":
    main()
