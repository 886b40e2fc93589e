"""Adapters: where the log lives (`store`: a URL -> eventsourcing's recorders), the log's
integrity chain, a damaged record met while reading, and API tokens in the store's
database. They know no application and no door.
"""
