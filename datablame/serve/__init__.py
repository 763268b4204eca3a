"""`datablame serve`: the HTTP API and web page over one trained run (see `server.run_server`).

A top layer beside the CLI: it calls `datablame.api` (`prepare_serving`, `attribute_query`,
`describe_methods`) for everything it asks of the run.
"""
