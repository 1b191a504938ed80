"""Maintenance over a store: ``admin`` (stats, ls, show, query, prune, vacuum) with
``entry_filter`` (which entries they apply to), ``check``, ``export``/``export_format``/
``importer``, ``audit_log``, ``tuning`` (on labeled pairs) and ``traffic`` (on a cache file's live
labels).

None of these modules imports instructor; only ``admin.nearest``, ``tuning`` and an import that
must re-embed load the embedding model, when called.
"""
