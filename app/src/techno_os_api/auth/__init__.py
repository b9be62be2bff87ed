"""Client keys: who may call the API, as which user, within which limits and budget. Nothing in
this package imports the web framework."""
