"""``vlmforge serve``: an OpenAI-compatible HTTP server and a small browser page over the batched
engine (runtime/serving/). A thin shell, as vLLM's ``entrypoints/openai`` is one:

- ``protocol.py``: the request checked at the door, the response and chunk shapes;
- ``errors.py``: errors in the OpenAI shape, with their HTTP status;
- ``media.py``: ``image_url`` → a picture (data URLs, files in one allowed folder; nothing remote);
- ``body.py``: the request body read within its byte limit;
- ``serving_chat.py``: one chat completion on the engine (the thread-to-asyncio bridge);
- ``app.py``: the routes (``create_app``); ``page.html``: the page at ``/``.

Only ``app.py`` imports FastAPI, so the runtime installs and imports without the ``serve`` extra.
"""
