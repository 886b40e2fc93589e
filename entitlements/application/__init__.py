"""The application: the engine (`engine.open_engine`) as a facade over parts with one job
each, and the questions asked of the log (audit, report).

It uses the domain, the adapters (store, tokens, integrity) and the projections; no door
(CLI, HTTP) is imported from here.
"""
