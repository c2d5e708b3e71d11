"""PIXL's built-in destinations, registered from `pixl_hooks.plugins.DEFAULT_PLUGINS`."""
