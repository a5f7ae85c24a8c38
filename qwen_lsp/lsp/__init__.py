"""The protocol layer: pygls registration, handlers that translate LSP types and call one feature each, the transport."""
