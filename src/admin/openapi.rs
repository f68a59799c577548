//! `/v1/openapi.json`: the OpenAPI 3.1 document of the JSON API, generated
//! from the route handlers' and types' annotations (utoipa), so it cannot
//! drift from the code it describes.
//!
//! Owns the document's list of routes, its security scheme and the answers
//! every write may get for its idempotency key. It must not describe routes
//! by hand: each is the `#[utoipa::path]` on its handler.

use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::Response;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use super::{api, write, Body};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "heartline admin API",
        description = "Presence and feed for application backends. Every route needs the admin token \
            (`Authorization: Bearer …`) when one is set. Ids are decimal strings. Writes take an \
            optional `Idempotency-Key` header. Errors are `{\"code\", \"message\"}` with the codes \
            of SPEC.md §9.1 (docs/api.md)."
    ),
    paths(
        api::presence, api::query, api::graph,
        write::set_presence, write::clear_presence, write::disconnect,
        write::publish, write::delete, write::follow, write::block, write::timeline,
        write::mint,
    ),
    modifiers(&Bearer, &IdempotencyKeys),
    security(("bearer" = [])),
)]
struct Document;

/// The admin token, as a bearer scheme.
struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    }
}

/// What every write (`PUT`, `POST`, `DELETE` under `/v1/users/` and
/// `/v1/tokens`, the routes `super::writes` serves) may answer for its
/// `Idempotency-Key`, added to each: one place instead of each handler's
/// annotation.
struct IdempotencyKeys;

impl Modify for IdempotencyKeys {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let writes =
            openapi.paths.paths.iter_mut().filter(|(path, _)| path.starts_with("/v1/users/") || *path == "/v1/tokens");
        for (_, item) in writes {
            for operation in [&mut item.put, &mut item.post, &mut item.delete].into_iter().flatten() {
                answer(operation, "409", "IDEMPOTENCY_KEY_IN_FLIGHT: the first request with this key still runs");
                answer(operation, "422", "IDEMPOTENCY_KEY_REUSED: the key named another request");
            }
        }
    }
}

/// Adds an `ApiError` answer under `status`, or its description to the one there.
fn answer(operation: &mut Operation, status: &str, description: &str) {
    match operation.responses.responses.get_mut(status) {
        Some(RefOr::T(response)) => response.description = format!("{}; {description}", response.description),
        _ => {
            let error = ContentBuilder::new().schema(Some(Ref::from_schema_name("ApiError"))).build();
            let response = ResponseBuilder::new().description(description).content("application/json", error).build();
            operation.responses.responses.insert(status.to_owned(), RefOr::T(response));
        }
    }
}

/// The document, as JSON.
pub fn document() -> String {
    let mut doc = Document::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc.to_pretty_json().unwrap_or_default()
}

pub fn serve() -> Response<Body> {
    let mut response = Response::new(Body::from(document()));
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_document_names_every_route_and_schema() {
        let doc: serde_json::Value = serde_json::from_str(&super::document()).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
        let paths = doc["paths"].as_object().unwrap();
        for path in ["/v1/users/{user}/presence", "/v1/users/{user}/posts/{post}", "/v1/tokens", "/v1/presence/query"] {
            assert!(paths.contains_key(path), "{path}");
        }
        assert!(paths["/v1/users/{user}/following/{other}"]["delete"].is_object());
        // Every write may answer for its idempotency key; reads do not.
        let follow = &paths["/v1/users/{user}/following/{other}"]["put"]["responses"];
        assert!(follow["409"]["description"].as_str().unwrap().starts_with("IDEMPOTENCY_KEY_IN_FLIGHT"));
        assert_eq!(
            follow["422"]["description"],
            "LIMIT_EXCEEDED: following too many; IDEMPOTENCY_KEY_REUSED: the key named another request"
        );
        assert!(paths["/v1/tokens"]["post"]["responses"]["422"].is_object());
        assert!(paths["/v1/users/{user}/timeline"]["get"]["responses"]["409"].is_null());
        assert!(paths["/v1/presence/query"]["post"]["responses"]["409"].is_null());
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        for schema in ["ApiError", "ServerSession", "PresenceEntry", "TimelinePage", "Id"] {
            assert!(schemas.contains_key(schema), "{schema}");
        }
    }
}
