//! `GET /api/openapi.json`: the OpenAPI 3.1 document of `/api/*`, generated from the handlers'
//! annotations and types (utoipa), never written by hand. A test checks that every `/api` route
//! of the router is in it; the end-to-end suite validates it with a spec validator.

use axum::Json;
use utoipa::OpenApi;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};

use crate::{audit, auth, channels, health, health_keys, keys, prices, proxies, reports, requests, routing, users};

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(title = "LLM Router admin API", description = "The admin side of LLM Router: sessions, users, tenants, API keys, the audit trail."),
    paths(
        health::health,
        auth::login,
        auth::logout,
        auth::me,
        users::list,
        users::create,
        users::update,
        users::disable,
        keys::list_tenants,
        keys::create_tenant,
        keys::update_tenant,
        keys::list_keys,
        keys::create_key,
        keys::revoke_key,
        audit::list,
        prices::list,
        prices::set,
        reports::usage,
        channels::list,
        channels::get_one,
        channels::create,
        channels::update,
        channels::remove,
        channels::add_key,
        channels::remove_key,
        channels::update_key,
        channels::enable_key,
        channels::disable_key,
        routing::list,
        routing::set,
        routing::remove,
        proxies::list,
        proxies::create,
        proxies::remove,
        reports::billing,
        requests::list,
        requests::stats,
        health_keys::list,
        health_keys::get_one,
        health_keys::history,
        health_keys::check,
        crate::health_proxies::list,
        crate::health_proxies::check,
        openapi_json,
    ),
    modifiers(&Security),
    security(("bearer" = []), ("cookie" = []))
)]
pub struct ApiDoc;

struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build()),
        );
        components.add_security_scheme(
            "cookie",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(auth::SESSION_COOKIE))),
        );
    }
}

/// This document.
#[utoipa::path(get, path = "/api/openapi.json", tag = "meta", responses((status = 200, description = "OpenAPI 3.1")))]
pub async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `.route("/api/…", method(handler)…)` of `routes.rs`, as (method, path).
    fn routes() -> Vec<(String, String)> {
        let source = include_str!("routes.rs");
        let mut out = Vec::new();
        for line in source.lines() {
            let Some(at) = line.find(".route(\"/api/") else { continue };
            let Some((path, rest)) = line[at + ".route(\"".len()..].split_once('"') else { continue };
            if path.contains('*') {
                continue;
            }
            for method in ["get", "post", "put", "patch", "delete"] {
                if rest.contains(&format!("{method}(")) {
                    out.push((method.to_owned(), path.to_owned()));
                }
            }
        }
        out
    }

    #[test]
    fn every_api_route_is_in_the_document() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
        let routes = routes();
        assert!(routes.len() >= 15 && routes.contains(&("post".into(), "/api/auth/login".into())), "{routes:?}");
        for (method, path) in routes {
            assert!(doc["paths"][&path][&method].is_object(), "{method} {path} is missing from the OpenAPI document");
        }
        assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.1")), "{}", doc["openapi"]);
        let mut ids: Vec<&str> = doc["paths"]
            .as_object()
            .into_iter()
            .flat_map(|p| p.values())
            .filter_map(|ops| ops.as_object())
            .flat_map(|ops| ops.values())
            .filter_map(|op| op["operationId"].as_str())
            .collect();
        let n = ids.len();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), n, "operation ids must be unique: {ids:?}");
    }
}
