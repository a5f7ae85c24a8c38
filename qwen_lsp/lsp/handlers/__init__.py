"""The LSP handlers, one module per area: each handler parses its params, calls one feature and
returns the result in LSP types. `server.create_server` registers them."""
