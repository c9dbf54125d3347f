//! The `Allow` header of a 405 (RFC 9110 §15.5.6): which methods a route takes, read
//! from the OpenAPI document poem-openapi builds from the routes themselves, so it cannot
//! drift from them.

use std::collections::HashMap;

use poem::http::Method;

/// The methods each documented path answers, as `Allow` header values.
#[derive(Debug, Clone, Default)]
pub struct Allowed(HashMap<String, String>);

impl Allowed {
    /// Reads every path's methods from an OpenAPI document. poem answers `HEAD` wherever
    /// it answers `GET` (with the body left out), so `HEAD` is listed with `GET`.
    pub fn from_spec(spec: &serde_json::Value) -> Self {
        let order = [
            Method::GET,
            Method::HEAD,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
            Method::TRACE,
        ];
        let paths = spec["paths"].as_object().into_iter().flatten();
        let allowed = paths
            .filter_map(|(path, ops)| {
                let ops = ops.as_object()?;
                let takes = |m: &Method| {
                    ops.contains_key(&m.as_str().to_ascii_lowercase())
                        || (*m == Method::HEAD && ops.contains_key("get"))
                };
                let methods: Vec<&str> = order
                    .iter()
                    .filter(|m| takes(m))
                    .map(Method::as_str)
                    .collect();
                Some((path.clone(), methods.join(", ")))
            })
            .collect();
        Self(allowed)
    }

    /// Adds a route the document does not name (`/metrics`).
    pub fn with(mut self, path: &str, methods: &str) -> Self {
        self.0.insert(path.to_owned(), methods.to_owned());
        self
    }

    /// The `Allow` value for a request path; `None` for a path the document does not
    /// name.
    pub fn get(&self, path: &str) -> Option<&str> {
        if let Some(methods) = self.0.get(path) {
            return Some(methods);
        }
        self.0
            .iter()
            .find(|(template, _)| fits(template, path))
            .map(|(_, methods)| methods.as_str())
    }
}

/// Whether `path` is one of the paths of the route `template`: each `{name}` segment of
/// the template stands for any one segment that is not empty.
pub fn fits(template: &str, path: &str) -> bool {
    let (mut template, mut path) = (template.split('/'), path.split('/'));
    loop {
        match (template.next(), path.next()) {
            (None, None) => return true,
            (Some(t), Some(p)) if t == p => {}
            (Some(t), Some(p)) if t.starts_with('{') && t.ends_with('}') && !p.is_empty() => {}
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Allowed;

    #[test]
    fn each_route_allows_the_methods_it_documents() {
        let spec = serde_json::from_str(&crate::api::openapi().spec()).unwrap();
        let allowed = Allowed::from_spec(&spec);
        assert_eq!(allowed.get("/sync/sum"), Some("POST"));
        assert_eq!(allowed.get("/async/post_task"), Some("POST"));
        assert_eq!(allowed.get("/async/get_task_result"), Some("GET, HEAD"));
        assert_eq!(allowed.get("/healthz"), Some("GET, HEAD"));
        assert_eq!(allowed.get("/readyz"), Some("GET, HEAD"));
        assert_eq!(allowed.get("/async/tasks/12"), Some("GET, HEAD, DELETE"));
        assert_eq!(allowed.get("/nope"), None);
        assert_eq!(allowed.get("/async/tasks/"), None);
        assert_eq!(allowed.get("/async/tasks/1/2"), None);
    }
}
