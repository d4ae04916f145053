"""Storage and secrets: fsspec run stores (s3://, gs://, file://), retries, credentials and redaction."""
