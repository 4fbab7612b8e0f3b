"""HTTP routes, one module per resource; each route validates, calls one service, returns."""
