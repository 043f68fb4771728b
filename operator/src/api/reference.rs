//! `docs/api.md`: the API reference, generated from the CRDs' schemas so it cannot drift
//! from what the server validates (`make crds` writes it; a test compares).

use super::crd;
use serde_json::Value;

/// The whole reference as Markdown.
pub fn markdown() -> String {
    let mut out = String::from(
        "# API reference (`mx-operator.io/v1alpha1`)\n\n\
         Generated from the CRD schemas by `make crds`; do not edit by hand. \
         `kubectl explain <kind>.spec` shows the same text.\n",
    );
    for definition in crd::all() {
        let names = &definition.spec.names;
        let Some(version) = definition.spec.versions.first() else {
            continue;
        };
        let schema = version
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .and_then(|s| serde_json::to_value(s).ok())
            .unwrap_or_default();
        out.push_str(&format!("\n## {}\n\n", names.kind));
        if let Some(description) = schema["description"].as_str() {
            out.push_str(&format!("{description}\n\n"));
        }
        let short = names.short_names.clone().unwrap_or_default().join(", ");
        out.push_str(&format!(
            "Plural `{}`, short names `{short}`, {}.\n",
            names.plural,
            if definition.spec.scope == "Namespaced" {
                "namespaced"
            } else {
                "cluster-wide"
            }
        ));
        for part in ["spec", "status", "data"] {
            let mut rows = vec![];
            walk(&schema["properties"][part], part, &mut rows);
            if rows.is_empty() {
                continue;
            }
            out.push_str(&format!(
                "\n### `{part}`\n\n| Field | Type | Description |\n| --- | --- | --- |\n"
            ));
            for (path, kind, description) in rows {
                out.push_str(&format!("| `{path}` | {kind} | {description} |\n"));
            }
        }
    }
    out
}

fn type_of(schema: &Value) -> String {
    match schema["type"].as_str() {
        Some("array") => format!("[]{}", type_of(&schema["items"])),
        Some("object") if schema["additionalProperties"].is_object() => {
            format!("map[string]{}", type_of(&schema["additionalProperties"]))
        }
        Some(kind) => match schema["enum"].as_array() {
            Some(values) => values
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(" \\| "),
            None => kind.to_string(),
        },
        None if schema["x-kubernetes-int-or-string"] == true => "int or string".into(),
        None => "any".into(),
    }
}

fn walk(schema: &Value, path: &str, rows: &mut Vec<(String, String, String)>) {
    let Some(properties) = schema["properties"].as_object() else {
        return;
    };
    let required: Vec<&str> = schema["required"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for (name, field) in properties {
        let field_path = format!("{path}.{name}");
        let mut description = field["description"]
            .as_str()
            .unwrap_or_default()
            .replace('\n', " ")
            .replace('|', "\\|");
        if required.contains(&name.as_str()) {
            description = format!("**Required.** {description}");
        }
        rows.push((field_path.clone(), type_of(field), description));
        // Kubernetes' own types (resources, selectors) are documented upstream.
        if !field_path.ends_with(".resources") && !field_path.ends_with(".selector") {
            let inner = if field["type"] == "array" {
                &field["items"]
            } else {
                field
            };
            let child = if field["type"] == "array" {
                format!("{field_path}[]")
            } else {
                field_path
            };
            walk(inner, &child, rows);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_kind_and_documented_field_is_listed() {
        let text = super::markdown();
        for heading in ["## MailGateway", "## MailDomain", "## DNSProvider"] {
            assert!(text.contains(heading), "{heading}");
        }
        assert!(text.contains("| `spec.recipients.catchAll` | boolean |"));
        assert!(text.contains("| `spec.departure.action` | Remove \\| Suspend \\| Report |"));
        assert!(text.contains("| `spec.domain` | string | **Required.**"));
        assert!(text.contains("| `status.conditions[].reason` |"));
    }
}
