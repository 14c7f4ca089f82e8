"""The bundled conformance checks; the plugin collects them when a target is given."""
