"""Parse documents with unstructured, chunk them in model tokens, embed and store them."""
