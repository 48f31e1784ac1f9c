"""Loading preference data: source formats, file readers and the ingest step."""
