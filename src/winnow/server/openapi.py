"""The configured limits published in the app's OpenAPI schema (they are only known at start-up)."""

from __future__ import annotations

from fastapi import FastAPI

from winnow.server.config import ServerConfig


def install_openapi_limits(app: FastAPI, config: ServerConfig) -> None:
    """Publish the configured limits in the OpenAPI schema (maxItems, maxLength, maximum).

    The limits are only known at start-up, so the app enforces them (422 naming field and limit)
    and the schema it serves states them, so generated clients and schema-driven tests know them.
    """
    from fastapi.openapi.utils import get_openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            models = schema.get("components", {}).get("schemas", {})
            text_limit = {"maxLength": config.max_document_chars}
            for name, docs_field in (
                ("RerankRequest", "documents"),
                ("RerankV2Request", "documents"),
                ("TEIRerankRequest", "texts"),
            ):
                props = models.get(name, {}).get("properties", {})
                if not props:
                    continue
                props["query"]["maxLength"] = config.max_query_chars
                props[docs_field]["maxItems"] = config.max_documents
                items = props[docs_field].get("items", {})
                for option in items.get("anyOf", [items]):
                    if option.get("type") == "string":
                        option.update(text_limit)
                chunks = props.get("max_chunks_per_doc", {})
                for option in chunks.get("anyOf", [chunks]) if chunks else []:
                    if option.get("type") == "integer":
                        option["maximum"] = config.max_chunks_per_doc
            doc_object = models.get("DocumentObject", {}).get("properties", {})
            if "text" in doc_object:
                doc_object["text"].update(text_limit)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi
