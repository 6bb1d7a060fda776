//! The control-plane resources in host-config: `istio-wasmplugin.yaml` (WasmPlugin) and
//! `envoy-gateway.yaml` (EnvoyExtensionPolicy) satisfy their CRD schemas (copies under
//! testdata/crds), and each, translated into the wasm filter its control plane generates (no
//! `allow_on_headers_stop_iteration`, the plugin JSON from `pluginConfig` / `config`, the VM's
//! host environment keys from `vmConfig.env` / `env.hostKeys`), runs in a real Envoy: an
//! activated order is licensed once and acked.

use keygate_e2e::exactly_once::assert_one_key_per_line;
use keygate_e2e::soap_reply::assert_ack_from;
use keygate_e2e::{json, repo_root, testdata, Gateway, GatewayOptions, HeadersMode, Value};
use keygate_standins::DEMO_ITEM_ID;
use serde::Deserialize;

fn yaml_documents(relative: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(repo_root().join(relative)).unwrap();
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| {
            let v = serde_norway::Value::deserialize(doc).unwrap();
            serde_json::to_value(v).unwrap()
        })
        .filter(|v| !v.is_null())
        .collect()
}

/// The `openAPIV3Schema` of the CRD's first served version.
fn crd_schema(file: &str) -> Value {
    let crd = yaml_documents(&format!("testdata/crds/{file}"))
        .into_iter()
        .next()
        .unwrap();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

/// Structural validation as `kubectl apply --validate=strict` would do it: types, known fields,
/// required fields, enums, patterns, lengths. CEL rules (`x-kubernetes-validations`) are not
/// evaluated. Returns every violation with its path.
fn validate(schema: &Value, v: &Value, path: &str, errors: &mut Vec<String>) {
    if schema.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true))
        && schema.get("properties").is_none()
    {
        return;
    }
    let int_or_string = schema.get("x-kubernetes-int-or-string") == Some(&json!(true));
    let ty = schema.get("type").and_then(Value::as_str).unwrap_or("");
    let ok = match ty {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string() || (int_or_string && v.is_i64()),
        "integer" => v.is_i64() || v.is_u64() || (int_or_string && v.is_string()),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        _ => true,
    };
    if !ok {
        errors.push(format!("{path}: expected {ty}, got {v}"));
        return;
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array) {
        if !options.contains(v) {
            errors.push(format!("{path}: {v} not one of {options:?}"));
        }
    }
    if let (Some(p), Some(s)) = (schema.get("pattern").and_then(Value::as_str), v.as_str()) {
        match regex::Regex::new(p) {
            Ok(re) if !re.is_match(s) => errors.push(format!("{path}: {s:?} does not match {p}")),
            _ => {}
        }
    }
    if let Some(s) = v.as_str() {
        let n = s.chars().count() as u64;
        if schema
            .get("maxLength")
            .and_then(Value::as_u64)
            .is_some_and(|m| n > m)
            || schema
                .get("minLength")
                .and_then(Value::as_u64)
                .is_some_and(|m| n < m)
        {
            errors.push(format!("{path}: length {n} out of bounds"));
        }
    }
    if let Some(items) = v.as_array() {
        if let Some(item_schema) = schema.get("items") {
            for (i, item) in items.iter().enumerate() {
                validate(item_schema, item, &format!("{path}[{i}]"), errors);
            }
        }
    }
    if let Some(map) = v.as_object() {
        let props = schema.get("properties").and_then(Value::as_object);
        for required in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if !map.contains_key(required) {
                errors.push(format!("{path}: missing required field {required}"));
            }
        }
        for (key, value) in map {
            let child = format!("{path}.{key}");
            match (
                props.and_then(|p| p.get(key)),
                schema.get("additionalProperties"),
            ) {
                (Some(s), _) => validate(s, value, &child, errors),
                (None, Some(Value::Object(s))) => {
                    validate(&Value::Object(s.clone()), value, &child, errors)
                }
                (None, Some(Value::Bool(true))) => {}
                (None, _) if props.is_some() => errors.push(format!("{child}: unknown field")),
                (None, _) => {}
            }
        }
    }
}

fn assert_valid(doc: &Value, crd: &str) {
    let schema = crd_schema(crd);
    // The API server handles apiVersion, kind and metadata itself; some schemas leave them out.
    let mut doc = doc.clone();
    if let Some(map) = doc.as_object_mut() {
        for key in ["apiVersion", "kind", "metadata"] {
            if schema["properties"].get(key).is_none() {
                map.remove(key);
            }
        }
    }
    let mut errors = Vec::new();
    validate(&schema, &doc, "", &mut errors);
    assert!(
        errors.is_empty(),
        "{} against {crd}: {errors:#?}",
        doc["kind"]
    );
}

fn document(file: &str, kind: &str) -> Value {
    yaml_documents(file)
        .into_iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in {file}"))
}

/// Every `*_env` the plugin JSON names (the secrets the VM must be given).
fn env_names(config: &Value, out: &mut Vec<String>) {
    match config {
        Value::Object(map) => {
            for (k, v) in map {
                match v.as_str() {
                    Some(name) if k.ends_with("_env") => out.push(name.to_owned()),
                    _ => env_names(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| env_names(v, out)),
        _ => {}
    }
}

/// Runs `plugin_json` as its control plane loads it: the filter without
/// `allow_on_headers_stop_iteration`, the configuration as JSON, with the clusters and
/// authorities of the local stand-ins (the mesh's cluster names exist only in the mesh).
fn run_as_generated(plugin_json: &Value, host_keys: &[String], what: &str) {
    let mut needed = Vec::new();
    env_names(plugin_json, &mut needed);
    let missing: Vec<&String> = needed.iter().filter(|n| !host_keys.contains(n)).collect();
    assert!(
        missing.is_empty(),
        "{what}: variables the plugin reads but the VM is not given: {missing:?}"
    );

    let template =
        std::fs::read_to_string(repo_root().join("host-config/envoy.local.yaml")).unwrap();
    let local = keygate_e2e::envoy::plugin_config(&template);
    let (sf, lic) = (&local["salesforce"], &local["license_server"]);
    let mut config = plugin_json.clone();
    config["salesforce"]["cluster"] = sf["cluster"].clone();
    config["salesforce"]["authority"] = sf["authority"].clone();
    config["license_server"]["cluster"] = lic["cluster"].clone();
    config["license_server"]["authority"] = lic["authority"].clone();
    let gw = Gateway::start(GatewayOptions {
        headers: HeadersMode::Forward,
        plugin_config: Some(config),
        ..GatewayOptions::default()
    });
    assert_ack_from(
        &gw.post_webhook(testdata("soap/valid/activated_one.xml")),
        &gw,
    );
    assert_one_key_per_line(&gw.standins, &[DEMO_ITEM_ID.to_owned()]);
}

#[test]
fn the_istio_wasmplugin_is_valid_and_runs_as_istio_generates_it() {
    let plugin = document("host-config/istio-wasmplugin.yaml", "WasmPlugin");
    assert_valid(&plugin, "istio-wasmplugin.crd.yaml");
    let spec = &plugin["spec"];
    assert_eq!(spec["failStrategy"], "FAIL_RELOAD");
    assert!(spec["url"].as_str().unwrap().starts_with("oci://"));
    let sha = spec["sha256"].as_str().unwrap_or_default();
    assert!(
        sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit()),
        "sha256 {sha:?}"
    );
    assert!(spec["pluginConfig"]
        .get("hold_request_headers")
        .is_none_or(|h| h == false));
    let host_keys: Vec<String> = spec["vmConfig"]["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["valueFrom"] == "HOST")
        .map(|e| e["name"].as_str().unwrap().to_owned())
        .collect();
    run_as_generated(&spec["pluginConfig"], &host_keys, "WasmPlugin");
}

#[test]
fn the_envoy_gateway_policy_is_valid_and_runs_as_envoy_gateway_generates_it() {
    let policy = document("host-config/envoy-gateway.yaml", "EnvoyExtensionPolicy");
    assert_valid(&policy, "envoy-gateway-envoyextensionpolicy.crd.yaml");
    let wasm = &policy["spec"]["wasm"][0];
    assert_eq!(wasm["failOpen"], false);
    assert_eq!(wasm["code"]["type"], "Image");
    assert_eq!(policy["spec"]["targetRefs"][0]["kind"], "HTTPRoute");
    assert!(wasm["config"]
        .get("hold_request_headers")
        .is_none_or(|h| h == false));
    let host_keys: Vec<String> = wasm["env"]["hostKeys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_owned())
        .collect();
    run_as_generated(&wasm["config"], &host_keys, "EnvoyExtensionPolicy");
}

#[test]
fn the_validator_refuses_what_the_api_server_would() {
    let mut plugin = document("host-config/istio-wasmplugin.yaml", "WasmPlugin");
    plugin["spec"]["failStrategy"] = json!("FAIL_SOMETIMES");
    plugin["spec"]["phaze"] = json!("AUTHN");
    let mut errors = Vec::new();
    validate(
        &crd_schema("istio-wasmplugin.crd.yaml"),
        &plugin,
        "",
        &mut errors,
    );
    assert!(
        errors.iter().any(|e| e.contains(".spec.failStrategy")),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.contains(".spec.phaze: unknown field")),
        "{errors:?}"
    );
}
