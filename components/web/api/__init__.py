"""The REST API: ``app.create_app`` assembles it from the route modules beside it (``routes_*``), the
shared request handling (``dependencies``: state and role checks; ``inputs``: uploads, forms, limits),
the JSON answers (``schemas``) and errors (``error_handlers``); ``server`` runs it for `facegate serve`."""
