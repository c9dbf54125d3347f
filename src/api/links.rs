//! OpenAPI `links` (3.0 §4.7.17): how the `session_id` one operation answers feeds the
//! next. poem-openapi has no way to declare links, so they are added to the generated
//! document here, the one place that edits it; `/openapi.json` and `/docs` both serve
//! the result. Tools that follow links (schemathesis's stateful phase, client
//! generators, Swagger UI's "Links" column) learn from them that a submitted sum is read
//! back with `get_task_result`.

use serde_json::{json, Value};

/// The operations a `session_id` leads to, as (link name, JSON pointer into the
/// document, what the link does). There are no operation ids to name them by; `/` in a
/// path is escaped as `~1` (RFC 6901).
const TARGETS: [(&str, &str, &str); 4] = [
    (
        "GetTaskResult",
        "#/paths/~1async~1get_task_result/get",
        "reads the task's state and result with `GET /async/get_task_result`",
    ),
    (
        "GetTask",
        "#/paths/~1async~1tasks~1{session_id}/get",
        "reads the task's state and result at `GET /async/tasks/{session_id}`",
    ),
    (
        "CancelTask",
        "#/paths/~1async~1tasks~1{session_id}/delete",
        "cancels the task with `DELETE /async/tasks/{session_id}`",
    ),
    (
        "Events",
        "#/paths/~1async~1events/get",
        "streams the task's result with `GET /async/events`",
    ),
];

/// The responses that hand out a `session_id` in their body, as (path, method, status).
const SESSION_RESPONSES: [(&str, &str, &str); 2] = [
    ("/async/post_task", "post", "200"),
    ("/sync/sum", "post", "202"),
];

/// Adds to each response that answers a `session_id` a link to each operation that
/// takes one.
///
/// # Panics
/// When the document lacks one of those responses or operations: the routes changed
/// and the links must follow them (the unit tests below catch it first).
pub fn add(document: &mut Value) {
    for (_, target, _) in TARGETS {
        let found = document.pointer(target.trim_start_matches('#')).is_some();
        assert!(found, "the OpenAPI document has no {target}");
    }
    let links: serde_json::Map<String, Value> = TARGETS
        .iter()
        .map(|(name, target, does)| {
            let link = json!({
                "operationRef": target,
                "parameters": { "session_id": "$response.body#/session_id" },
                "description": format!("The `session_id` in the body {does}."),
            });
            ((*name).to_owned(), link)
        })
        .collect();
    for (path, method, status) in SESSION_RESPONSES {
        let response = document["paths"][path][method]["responses"]
            .get_mut(status)
            .and_then(Value::as_object_mut)
            .unwrap_or_else(|| panic!("the OpenAPI document has no {status} for {method} {path}"));
        response.insert("links".to_owned(), Value::Object(links.clone()));
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::{SESSION_RESPONSES, TARGETS};

    fn document() -> Value {
        crate::api::document(&crate::api::openapi())
    }

    #[test]
    fn responses_with_a_session_id_link_to_every_operation_that_takes_one() {
        let doc = document();
        for (path, method, status) in SESSION_RESPONSES {
            let response = &doc["paths"][path][method]["responses"][status];
            for (name, target, _) in TARGETS {
                let link = &response["links"][name];
                assert_eq!(link["operationRef"], target, "{method} {path}");
                assert_eq!(
                    link["parameters"]["session_id"], "$response.body#/session_id",
                    "{method} {path}"
                );
            }
            // The expression points at a field the response schema declares.
            let schema = &response["content"]["application/json"]["schema"]["$ref"];
            let name = schema.as_str().unwrap().rsplit('/').next().unwrap();
            let field = &doc["components"]["schemas"][name]["properties"]["session_id"];
            assert!(field.is_object(), "{name} has no session_id");
        }
    }

    #[test]
    fn swagger_ui_shows_the_served_document() {
        let api = crate::api::openapi();
        let document = serde_json::to_string_pretty(&crate::api::document(&api)).unwrap();
        let html = crate::api::swagger_ui_html(&api, &document);
        assert!(html.contains(&document));
        assert!(html.contains("$response.body#/session_id"));
    }

    #[test]
    fn every_link_target_exists_and_takes_session_id() {
        let doc = document();
        for (_, target, _) in TARGETS {
            let target = doc.pointer(target.trim_start_matches('#')).unwrap();
            let params = target["parameters"].as_array().unwrap();
            assert!(params.iter().any(|p| p["name"] == "session_id"), "{target}");
        }
    }

    #[test]
    fn the_document_keeps_the_order_poem_openapi_wrote() {
        // Swagger UI lists operations and schema fields in document order.
        let api = crate::api::openapi();
        let written = api.spec();
        let doc = document();
        let at = |path: &str| written.find(&format!("\"{path}\": {{")).unwrap();
        let paths: Vec<usize> = doc["paths"]
            .as_object()
            .unwrap()
            .keys()
            .map(|p| at(p))
            .collect();
        assert!(
            paths.len() > 1 && paths.windows(2).all(|w| w[0] < w[1]),
            "{paths:?}"
        );
    }
}
