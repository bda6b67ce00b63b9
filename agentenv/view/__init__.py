"""The trajectory viewer (``agentenv view``): runs in the browser, served on 127.0.0.1 or
written as one HTML file.

Modules, each importing only those above it: :mod:`~agentenv.view.runs` (loading and indexing
runs), :mod:`~agentenv.view.credit` (advantages under every estimator, anchors, for display),
:mod:`~agentenv.view.payload` (the JSON documents the page is sent), :mod:`~agentenv.view.page`
(the one HTML page: ``static/`` inlined), :mod:`~agentenv.view.app` (the FastAPI app) and
:mod:`~agentenv.view.export` (the self-contained HTML file). See ``docs/viewer.md``.
"""
