"""The web console (``binwatch console serve``, docs/console.md).

    ingest (MQTT thread) --on_event--> events.EventHub --SSE /events--> each open page (static/console.js)
           \\--> ConsoleStore <-- pages (feed, alert, fleet) <-- auth.Guard (login, CSRF) <-- browser

``app.make_app`` builds the Starlette app around the store, the ingest and the hub; ``server.run``
binds the port, starts the ingest and serves it with uvicorn.
"""
